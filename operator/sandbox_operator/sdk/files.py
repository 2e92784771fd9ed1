"""Files in a sandbox, moved over exec (cat, stat, tar): binary-safe, size-limited, with errors that are OSErrors."""

from __future__ import annotations

import asyncio
import errno as errnos
import io
import os
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Literal

from sandbox_operator.sdk import shell
from sandbox_operator.sdk.errors import FileTooLargeError, SandboxFileError, errno_from_text, file_error

DEFAULT_MAX_FILE_BYTES: Final = 256 * 1024 * 1024
# Archives are spooled to memory up to this size, then to a temporary file: memory stays bounded for any tree.
SPOOL_BYTES: Final = 8 * 1024 * 1024

FileType = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True)
class ExecOutput:
    """What a helper script printed and how it exited; ``overflow`` when stdout passed the caller's cap."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    overflow: bool = False


# Runs argv with the given stdin (bytes, or a file read to its end; None: no stdin) and returns its output; reading
# stops once stdout passes max_stdout.
Exec = Callable[[Sequence[str], bytes | IO[bytes] | None, int], Awaitable[ExecOutput]]


@dataclass(frozen=True)
class FileInfo:
    """One entry of a directory listing."""

    name: str
    path: str
    type: FileType
    size: int
    modified: datetime

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        return {"name": self.name, "path": self.path, "type": self.type, "size": self.size,
                "modified": self.modified.isoformat()}


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ValueError(f"path must be a non-empty string without NUL characters, not {path!r}")
    return path


def _check_limit(max_bytes: int) -> int:
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
    return max_bytes


def _failure(output: ExecOutput, path: str, max_bytes: int = 0) -> Exception:
    """The error a failed helper script reports: its refusal marker, else the strerror text in its stderr."""
    text = output.stderr.decode("utf-8", "replace")
    if output.stderr.startswith(shell.ERROR_MARKER):
        name, _, detail = text[len(shell.ERROR_MARKER) :].strip().partition(" ")
        if name == "EFBIG":
            return FileTooLargeError(f"{path} is {detail} bytes, more than max_bytes={max_bytes}")
        code = getattr(errnos, name, errnos.EIO)
        return file_error(code, path, detail)
    code = errno_from_text(text)
    return file_error(code if code is not None else errnos.EIO, path, text.strip()[-300:])


def _file_type(text: str) -> FileType:
    if text.startswith("regular"):
        return "file"
    if text == "directory":
        return "directory"
    if text == "symbolic link":
        return "symlink"
    return "other"


def parse_listing(directory: str, data: bytes) -> list[FileInfo]:
    """Read shell.LIST's output: NUL-terminated names, a NUL, then one "SIZE MTIME TYPE" line per name."""
    if not data:
        return []
    end = data.find(b"\x00\x00")
    if end < 0:
        raise SandboxFileError(errnos.EIO, f"unreadable listing of {directory}", directory)
    names = [name.decode("utf-8", "surrogateescape") for name in data[:end].split(b"\x00")]
    lines = data[end + 2 :].decode("utf-8", "replace").splitlines()
    if len(lines) != len(names):
        raise SandboxFileError(errnos.EAGAIN, f"{directory} changed while it was listed; try again", directory)
    entries = []
    for name, line in zip(names, lines, strict=True):
        size, mtime, kind = line.split(" ", 2)
        entries.append(
            FileInfo(
                name=name,
                path=f"{directory.rstrip('/')}/{name}",
                type=_file_type(kind),
                size=int(size),
                modified=datetime.fromtimestamp(int(mtime), UTC),
            )
        )
    return entries


class Files:
    """The files of one sandbox: ``await sandbox.files.write("/tmp/x", b"...")``."""

    def __init__(self, run: Exec) -> None:
        self._exec = run

    async def write(
        self, path: str, data: bytes | str, *, make_dirs: bool = True, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename): an existing file is
        replaced, with default permissions (its mode bits are not kept). Parent directories are created unless
        ``make_dirs`` is False."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(payload) > _check_limit(max_bytes):
            raise FileTooLargeError(f"{len(payload)} bytes for {path}, more than max_bytes={max_bytes}")
        argv = shell.argv(shell.WRITE, "sandbox-write", _check_path(path), "1" if make_dirs else "0")
        output = await self._exec(argv, payload, 0)
        if output.exit_code != 0:
            raise _failure(output, path)

    async def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        """The file's bytes; FileTooLargeError (before any is moved) if it is larger than ``max_bytes``."""
        argv = shell.argv(shell.READ, "sandbox-read", _check_path(path), str(_check_limit(max_bytes)))
        output = await self._exec(argv, None, max_bytes)
        if output.overflow:
            raise FileTooLargeError(f"{path} grew past max_bytes={max_bytes} while it was read")
        if output.exit_code != 0:
            raise _failure(output, path, max_bytes)
        return output.stdout

    async def read_text(self, path: str, *, encoding: str = "utf-8", max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
        """The file decoded as text."""
        return (await self.read(path, max_bytes=max_bytes)).decode(encoding)

    async def list(self, path: str = ".") -> list[FileInfo]:
        """The entries of a directory: visible ones sorted by name as the shell globs them, then hidden ones."""
        output = await self._exec(shell.argv(shell.LIST, "sandbox-list", _check_path(path)), None, 64 * 1024 * 1024)
        if output.exit_code != 0:
            raise _failure(output, path)
        return parse_listing(path, output.stdout)

    async def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        output = await self._exec(["test", "-e", _check_path(path)], None, 0)
        return output.exit_code == 0

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file or an empty directory; a whole tree with ``recursive=True``."""
        argv = shell.argv(shell.REMOVE, "sandbox-remove", _check_path(path), "1" if recursive else "0")
        output = await self._exec(argv, None, 0)
        if output.exit_code != 0:
            raise _failure(output, path)

    async def upload(
        self, local: str | os.PathLike[str], remote_dir: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        """Copy a local file or directory tree into ``remote_dir`` (created if missing), as one tar stream."""
        argv = shell.argv(shell.UNTAR, "sandbox-untar", _check_path(remote_dir))
        spool = await asyncio.to_thread(_pack, Path(local), _check_limit(max_bytes))
        try:
            output = await self._exec(argv, spool, 0)
        finally:
            spool.close()
        if output.exit_code != 0:
            raise _failure(output, remote_dir)

    async def download(
        self, remote: str, local_dir: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> Path:
        """Copy a file or directory tree from the sandbox into ``local_dir``; returns the local path. Only regular
        files and directories come out (an archive holding links or devices is refused): nothing lands outside
        ``local_dir``."""
        output = await self._exec(shell.argv(shell.TAR, "sandbox-tar", _check_path(remote)), None, max_bytes)
        if output.overflow:
            raise FileTooLargeError(f"{remote} is more than max_bytes={max_bytes} as an archive")
        if output.exit_code != 0:
            raise _failure(output, remote, max_bytes)
        return await asyncio.to_thread(_unpack, output.stdout, Path(local_dir))


def _pack(source: Path, max_bytes: int) -> IO[bytes]:
    """``source`` as a tar archive in a spooled temporary file, rewound; FileTooLargeError past ``max_bytes``."""
    if not source.exists():
        raise FileNotFoundError(errnos.ENOENT, "no such local file or directory", str(source))
    spool = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 (handed to the caller, who closes it)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(str(source), arcname=source.resolve().name or "root", filter=_owned_by_nobody)
    size = spool.tell()
    if size > max_bytes:
        spool.close()
        raise FileTooLargeError(f"{source} is {size} bytes as an archive, more than max_bytes={max_bytes}")
    spool.seek(0)
    return spool


def _unpack(data: bytes, target: Path) -> Path:
    """Unpack a tar archive from a sandbox into ``target``; the path of its first member. Only regular files and
    directories with relative paths inside ``target`` are accepted: the archive comes from untrusted code, and
    tarfile's own "data" filter could be escaped with links before Python 3.11.13 (CVE-2025-4517)."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = archive.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise SandboxFileError(
                    errnos.EPERM,
                    f"refusing {member.name!r}: only files and directories are "
                    "copied out of a sandbox (no links or devices)",
                    member.name,
                )
            destination = (root / member.name).resolve()
            if destination != root and root not in destination.parents:
                raise SandboxFileError(errnos.EPERM, f"refusing {member.name!r}: outside the target", member.name)
        archive.extractall(root, members=members, filter="data")
    return root / members[0].name if members else root


def _owned_by_nobody(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Archive members carry no local user names or ids: the sandbox user owns what it unpacks."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
