"""Control-plane archives as a repository writer could forge them (backups are not signed)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lifeboat.catalog.codec import decode, encode
from lifeboat.catalog.file_archive import CapturedFile, parse_pax_time
from lifeboat.catalog.layout import FILES_OBJECT
from lifeboat.catalog.manifest import Manifest


@dataclass(frozen=True)
class Member:
    """One forged tar member: a file (``data``), or a symlink, fifo, device, directory, hard link."""

    name: str
    data: bytes = b""
    mode: int = 0o644
    kind: bytes = tarfile.REGTYPE
    link: str = ""


def forged(archive: bytes, *extra: Member, change: Callable[[tarfile.TarInfo], None] = lambda info: None,
           content: dict[str, bytes] | None = None) -> bytes:
    """``archive`` (a lifeboat control-plane tar) with every member passed to ``change`` (and the
    members named in ``content`` holding those bytes), then ``extra``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as source, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in source.getmembers():
            data: IO[bytes] | None = source.extractfile(info) if info.isreg() else None
            if content is not None and info.name in content:
                data = io.BytesIO(content[info.name])
                info.size = len(content[info.name])
            change(info)
            tar.addfile(info, data)
        for member in extra:
            info = tarfile.TarInfo(member.name)
            info.type, info.mode, info.linkname = member.kind, member.mode, member.link
            if member.kind == tarfile.REGTYPE:
                info.size = len(member.data)
            tar.addfile(info, io.BytesIO(member.data) if member.kind == tarfile.REGTYPE else None)
    return out.getvalue()


def forge_stored_backup(repo_dir: Path, backup_id: str, *extra: Member,
                        change: Callable[[tarfile.TarInfo], None] = lambda info: None) -> None:
    """Rewrite an unencrypted backup's control-plane archive in a file:// repository, with a manifest
    whose checksums and file list match it, as a repository writer could."""
    backup = next(repo_dir.rglob(f"backups/{backup_id}"))
    manifest_file = next(repo_dir.rglob(f"manifests/{backup_id}.json"))
    manifest = Manifest.from_json(manifest_file.read_bytes(), "forged")
    stored = manifest.object_named(FILES_OBJECT)
    assert stored is not None and manifest.encryption is None
    raw = b"".join(decode([(backup / stored.name).read_bytes()], None))
    archive = forged(raw, *extra, change=change)
    data = b"".join(encode([archive], 1, []))
    (backup / stored.name).write_bytes(data)
    obj = stored.model_copy(update={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                    "raw_size": len(archive), "raw_sha256": hashlib.sha256(archive).hexdigest()})
    files: list[CapturedFile] = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for info in tar.getmembers():
            content = tar.extractfile(info) if info.isreg() else None
            body = content.read() if content is not None else os.fsencode(info.linkname)
            files.append(CapturedFile(
                path="/" + info.name, kind="symlink" if info.issym() else "file", mode=info.mode,
                uid=info.uid, gid=info.gid, owner=info.uname, group=info.gname,
                mtime_ns=parse_pax_time(info.pax_headers["mtime"]) if "mtime" in info.pax_headers
                else int(info.mtime) * 1_000_000_000,
                size=len(body), sha256=hashlib.sha256(body).hexdigest(),
                link_target=info.linkname if info.issym() else None))
    forged_manifest = manifest.model_copy(update={
        "objects": tuple(obj if o.name == stored.name else o for o in manifest.objects), "files": tuple(files)})
    manifest_file.write_bytes(forged_manifest.to_json())
