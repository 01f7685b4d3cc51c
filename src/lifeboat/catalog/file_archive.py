"""The archive of a backup's captured files: one PAX tar, and the record of each file in it.

The member names are the host paths without the leading ``/``, so ``tar -xpf archive -C /``
puts everything back. It keeps mode, numeric owner and names, and mtime to the nanosecond.
Directories are not archived. For a symlink the record's ``size`` and ``sha256`` are those of
its target path. Which files a backup captures is Kubernetes knowledge
(:mod:`lifeboat.kube.control_plane_files`); this module only reads, archives, checks and
extracts them. A file that changes or vanishes while it is read fails the archive.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal

from lifeboat.errors import IntegrityError, OperationFailed

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CapturedFile:
    """One captured file or symlink, as it was on the host.

    For a symlink, ``size`` and ``sha256`` are those of its target path (UTF-8), and
    ``link_target`` is the target as stored in the link.
    """

    path: str
    kind: Literal["file", "symlink"]
    mode: int
    uid: int
    gid: int
    owner: str
    group: str
    mtime_ns: int
    size: int
    sha256: str
    link_target: str | None = None


def read_files(root: Path, paths: Sequence[str]) -> list[CapturedFile]:
    """Stat and hash the files at host ``paths`` (read under ``root``) without archiving them."""
    names = _OwnerNames(root)
    return [_read_member(root, path, names, _drain) for path in paths]


def archive_files(root: Path, paths: Sequence[str], out: BinaryIO) -> list[CapturedFile]:
    """Archive the files at host ``paths`` (read under ``root``) to ``out``, reading each once."""
    return _write(root, [(path, None) for path in paths], out)


def write_archive(files: Sequence[CapturedFile], root: Path, out: BinaryIO) -> list[CapturedFile]:
    """Archive ``files`` (from :func:`read_files`) to ``out``; return the entries as archived.

    A file that differs from its collected entry, or changes or vanishes while being read,
    raises ``OperationFailed``; ``out`` then holds a partial archive the caller must discard.
    """
    return _write(root, [(entry.path, entry) for entry in files], out)


def _write(root: Path, plan: Sequence[tuple[str, CapturedFile | None]], out: BinaryIO) -> list[CapturedFile]:
    names = _OwnerNames(root)
    archived: list[CapturedFile] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, expected in plan:
            entry = _read_member(root, path, names, tar.addfile)
            if expected is not None and entry != expected:
                raise _changed(path, "since it was collected")
            archived.append(entry)
    return archived


def _local(root: Path, path: str) -> Path:
    """Where the clean absolute host ``path`` is read under ``root``."""
    return root / path.lstrip("/")


class _HashingReader:
    """Reads exactly ``size`` bytes of an open file, hashing them; a short file is an error."""

    def __init__(self, fd: int, size: int, path: str) -> None:
        self._fd, self._left, self._path = fd, size, path
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        parts: list[bytes] = []
        while want > 0:
            try:
                chunk = os.read(self._fd, min(want, _CHUNK))
            except OSError as exc:
                raise _read_failure(self._path, exc) from exc
            if not chunk:
                raise _changed(self._path, "while being read (it got shorter)")
            parts.append(chunk)
            want -= len(chunk)
            self._left -= len(chunk)
        data = b"".join(parts)
        self.digest.update(data)
        return data

    def finish(self) -> None:
        if self._left:
            self.read()
        try:
            grew = os.read(self._fd, 1)
        except OSError as exc:
            raise _read_failure(self._path, exc) from exc
        if grew:
            raise _changed(self._path, "while being read (it grew)")


def _drain(info: tarfile.TarInfo, content: _HashingReader | None) -> None:
    while content is not None and content.read(_CHUNK):
        pass


def _read_member(
    root: Path, path: str, names: _OwnerNames, consume: Callable[[tarfile.TarInfo, _HashingReader | None], None]
) -> CapturedFile:
    """Read one file or symlink, hand it to ``consume`` as a tar member, return its entry."""
    local = _local(root, path)
    try:
        before = os.lstat(local)
        if stat.S_ISLNK(before.st_mode):
            return _read_link(local, path, before, names, consume)
        if not stat.S_ISREG(before.st_mode):
            raise _changed(path, "(it is no longer a regular file)")
        # O_NONBLOCK: a path swapped for a FIFO since the lstat would otherwise block the open
        # until a writer comes (the check below then finds it replaced); a regular file ignores it.
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise _vanished(path) from exc
    except OSError as exc:
        raise _read_failure(path, exc) from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise _changed(path, "(it was replaced)")
        reader = _HashingReader(fd, opened.st_size, path)
        # Errors writing to the archive's stream belong to the caller and pass through as they are.
        consume(_tar_info(path, opened, names), reader)
        reader.finish()
        _check_unchanged(local, path, opened, os.fstat(fd))
    finally:
        os.close(fd)
    return _entry(path, "file", opened, names, reader.digest.hexdigest(), opened.st_size)


def _read_link(
    local: Path, path: str, before: os.stat_result, names: _OwnerNames,
    consume: Callable[[tarfile.TarInfo, _HashingReader | None], None],
) -> CapturedFile:
    target = os.readlink(local)
    info = _tar_info(path, before, names)
    info.type, info.linkname, info.size = tarfile.SYMTYPE, target, 0
    consume(info, None)
    _check_unchanged(local, path, before, before)
    raw = os.fsencode(target)
    entry = _entry(path, "symlink", before, names, hashlib.sha256(raw).hexdigest(), len(raw))
    return dataclasses.replace(entry, link_target=target)


def _check_unchanged(local: Path, path: str, first: os.stat_result, last: os.stat_result) -> None:
    # ctime moves on any write, chmod or chown, so it catches changes that keep size and mtime.
    try:
        now = os.lstat(local)
    except FileNotFoundError as exc:
        raise _vanished(path) from exc
    for seen in (last, now):
        if (seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns) != (
            first.st_dev, first.st_ino, first.st_size, first.st_mtime_ns, first.st_ctime_ns
        ):
            raise _changed(path, "while being read")


def _tar_info(path: str, st: os.stat_result, names: _OwnerNames) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = names.user(st.st_uid), names.group(st.st_gid)
    info.size = st.st_size
    info.mtime = max(st.st_mtime_ns // 1_000_000_000, 0)
    # A PAX "mtime" record keeps the nanoseconds a ustar header cannot (POSIX pax, "mtime").
    info.pax_headers = {"mtime": format_pax_time(st.st_mtime_ns)}
    return info


def format_pax_time(ns: int) -> str:
    """Nanoseconds since the epoch as an exact PAX decimal time."""
    seconds, fraction = divmod(abs(ns), 1_000_000_000)
    return f"{'-' if ns < 0 else ''}{seconds}.{fraction:09d}"


def parse_pax_time(text: str) -> int:
    """A PAX decimal time as nanoseconds since the epoch, without float rounding."""
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    ns = int(whole or "0") * 1_000_000_000 + int((fraction + "000000000")[:9])
    return -ns if negative else ns


def _entry(
    path: str, kind: Literal["file", "symlink"], st: os.stat_result, names: _OwnerNames, sha256: str, size: int
) -> CapturedFile:
    return CapturedFile(
        path=path, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
        owner=names.user(st.st_uid), group=names.group(st.st_gid),
        mtime_ns=st.st_mtime_ns, size=size, sha256=sha256,
    )


class _OwnerNames:
    """User and group names for ids, from the ``root`` being captured (its own /etc files)."""

    def __init__(self, root: Path) -> None:
        self._on_this_system = root.resolve() == Path("/")
        self._users = {} if self._on_this_system else _id_names(root / "etc/passwd")
        self._groups = {} if self._on_this_system else _id_names(root / "etc/group")

    def user(self, uid: int) -> str:
        return _system_name(pwd.getpwuid, uid) if self._on_this_system else self._users.get(uid, "")

    def group(self, gid: int) -> str:
        return _system_name(grp.getgrgid, gid) if self._on_this_system else self._groups.get(gid, "")


def _system_name(lookup: Callable[[int], pwd.struct_passwd | grp.struct_group], number: int) -> str:
    """The name this system's passwd or group database gives ``number`` ("" if none)."""
    try:
        return str(lookup(number)[0])
    except KeyError:
        return ""


def _id_names(database: Path) -> dict[int, str]:
    """Parse /etc/passwd or /etc/group lines (``name:x:id:...``) into id -> first name."""
    names: dict[int, str] = {}
    try:
        lines = database.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            names.setdefault(int(fields[2]), fields[0])
    return names


def _vanished(path: str) -> OperationFailed:
    return OperationFailed(f"control-plane file {path} vanished while being captured; run the backup again")


def _changed(path: str, how: str) -> OperationFailed:
    return OperationFailed(f"control-plane file {path} changed {how}; run the backup again")


def _read_failure(path: str, exc: OSError) -> OperationFailed:
    reason = exc.strerror or type(exc).__name__
    return OperationFailed(f"cannot read control-plane file {path}: {reason}; run lifeboat as root or fix its permissions")


def verify_archive(archive: BinaryIO, expected: Sequence[CapturedFile]) -> None:
    """Re-hash every member of an archive and compare it with the manifest's entries.

    A missing, extra, duplicated or differing member raises ``IntegrityError``.
    """
    wanted = {entry.path: entry for entry in expected}
    seen: set[str] = set()
    for member, content in _members(archive):
        path = "/" + _safe_name(member.name)
        if path in seen or path not in wanted:
            what = "twice" if path in seen else "but is not in the manifest"
            raise IntegrityError(f"control-plane archive holds {path} {what}; do not restore from it")
        seen.add(path)
        found = _entry_of_member(path, member, content)
        if found != wanted[path]:
            raise IntegrityError(
                f"control-plane archive member {path} differs from the manifest"
                f" ({_first_difference(found, wanted[path])}); do not restore from it"
            )
    missing = sorted(set(wanted) - seen)
    if missing:
        raise IntegrityError(
            f"control-plane archive lacks {len(missing)} file(s) of the manifest, first {missing[0]};"
            " do not restore from it"
        )


def _members(archive: BinaryIO) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """The members of a tar stream in order, with a reader for each regular file's content."""
    try:
        with tarfile.open(fileobj=archive, mode="r|", format=tarfile.PAX_FORMAT) as tar:
            for member in tar:
                # lifeboat archives no directories (nor devices, fifos, hard links): a restore
                # would move a host file aside for a directory it cannot install.
                if not (member.isreg() or member.issym()):
                    raise IntegrityError(
                        f"control-plane archive member {member.name!r} is neither a file nor a symlink;"
                        " lifeboat did not write this archive"
                    )
                yield member, tar.extractfile(member) if member.isreg() else None
    except tarfile.TarError as exc:
        raise IntegrityError(f"control-plane archive is not a readable tar ({exc}); do not restore from it") from exc


def _entry_of_member(path: str, member: tarfile.TarInfo, content: IO[bytes] | None) -> CapturedFile:
    digest, size = hashlib.sha256(), 0
    if content is not None:
        while chunk := content.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    elif member.issym():
        raw = os.fsencode(member.linkname)
        digest.update(raw)
        size = len(raw)
    kind: Literal["file", "symlink"] = "symlink" if member.issym() else "file"
    return CapturedFile(
        path=path, kind=kind, mode=member.mode, uid=member.uid, gid=member.gid,
        owner=member.uname, group=member.gname, mtime_ns=_member_mtime_ns(member),
        size=size, sha256=digest.hexdigest(), link_target=member.linkname if member.issym() else None,
    )


def _member_mtime_ns(member: tarfile.TarInfo) -> int:
    exact = member.pax_headers.get("mtime")
    return parse_pax_time(exact) if exact is not None else int(member.mtime) * 1_000_000_000


def _first_difference(found: CapturedFile, wanted: CapturedFile) -> str:
    for field in dataclasses.fields(CapturedFile):
        if getattr(found, field.name) != getattr(wanted, field.name):
            return f"{field.name} differs"
    return "no difference"


def extract_archive(archive: BinaryIO, dest: Path) -> list[str]:
    """Extract a control-plane archive under ``dest``; return the host paths written.

    Member names that are absolute or contain ``..``, members that would be written through a
    symlink, and members other than files and symlinks raise ``IntegrityError``. Modes (without
    set-id and sticky bits) and mtimes are restored, and numeric owners when running as root. Existing files are replaced. A failure leaves the members
    before it extracted.
    """
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[str] = []
    for member, content in _members(archive):
        relative = _safe_name(member.name)
        target = dest / relative
        try:
            _make_parents(dest, relative)
            _extract_member(target, member, content)
        except OSError as exc:
            raise OperationFailed(
                f"cannot extract {relative} under {dest}: {exc.strerror or exc}; check that directory"
            ) from exc
        written.append("/" + relative)
    return written


def _safe_name(name: str) -> str:
    """A member name as a clean relative path; absolute or ``..`` names are refused."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts or "\0" in name:
        raise IntegrityError(f"control-plane archive member {name!r} is not a safe relative path; refusing it")
    return "/".join(parts)


def _make_parents(dest: Path, relative: str) -> None:
    here = dest
    for part in relative.split("/")[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            os.mkdir(here, 0o755)
            continue
        if not stat.S_ISDIR(mode):
            raise IntegrityError(
                f"control-plane archive member {relative} would be written through {here},"
                " which is not a directory; refusing it"
            )


def _extract_member(target: Path, member: tarfile.TarInfo, content: IO[bytes] | None) -> None:
    # Write beside the target and rename over it: rename replaces a symlink itself, never its
    # target, and a reader never sees a half-written key.
    temporary = target.with_name(f".{target.name}.lifeboat-{os.getpid()}")
    try:
        if member.issym():
            os.symlink(member.linkname, temporary)
        else:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as file:
                while content is not None and (chunk := content.read(_CHUNK)):
                    file.write(chunk)
        # chown clears set-id bits, so the mode goes on after the owner.
        _set_owner(temporary, member)
        if not member.issym():  # never set-id or sticky: the archive may be forged
            os.chmod(temporary, member.mode & 0o777)
        os.utime(temporary, ns=(_member_mtime_ns(member),) * 2, follow_symlinks=False)
        os.replace(temporary, target)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _set_owner(path: Path, member: tarfile.TarInfo) -> None:
    if os.geteuid() == 0:
        os.lchown(path, member.uid, member.gid)
