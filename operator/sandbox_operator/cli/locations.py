"""Where ``cp`` copies from and to: kubectl cp's syntax, ``NAME:PATH`` in a sandbox, anything else here."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Final

STDIO: Final = "-"


@dataclass(frozen=True)
class LocalPath:
    """A path on this machine; ``-`` is stdin (as a source) or stdout (as a destination)."""

    path: str

    @property
    def stdio(self) -> bool:
        """Whether this is stdin or stdout rather than a file."""
        return self.path == STDIO

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class SandboxPath:
    """A path inside the sandbox ``name``."""

    name: str
    path: str

    def __str__(self) -> str:
        return f"{self.name}:{self.path}"


Location = LocalPath | SandboxPath


def parse_location(text: str) -> Location:
    """``NAME:PATH`` is in the sandbox NAME when NAME is not empty and holds no '/'; anything else is local, so a
    local path with a ':' is written with a '/' before it (``./a:b``, ``/tmp/a:b``)."""
    if not text:
        raise ValueError("a path cannot be empty")
    name, colon, path = text.partition(":")
    if not colon or not name or "/" in name:
        return LocalPath(text)
    if not path:
        raise ValueError(f"{text!r} names no path in sandbox {name} (e.g. {name}:/workspace)")
    return SandboxPath(name, path)


def parse_copy(source: str, destination: str) -> tuple[Location, Location]:
    """SRC and DST of ``cp``: exactly one of them in a sandbox."""
    parsed = parse_location(source), parse_location(destination)
    remote = [location for location in parsed if isinstance(location, SandboxPath)]
    if not remote:
        raise ValueError(
            "one of SRC and DST must be in a sandbox, as NAME:PATH (write a local path with ':' as ./a:b)"
        )
    if len(remote) == 2:
        raise ValueError("copying from one sandbox to another is not supported; copy through a local directory")
    return parsed


def remote_file_path(local_name: str, remote: str) -> str:
    """Where a local file lands in the sandbox: in ``remote`` when it ends with '/', else at ``remote``."""
    return f"{remote}{local_name}" if remote.endswith("/") else remote


def local_file_path(remote: str, local: str, local_is_directory: bool) -> str:
    """Where a sandbox file lands here: inside ``local`` when it is a directory (or ends with '/'), else at it."""
    if local_is_directory or local.endswith(os.sep):
        return os.path.join(local, posixpath.basename(remote.rstrip("/")))
    return local
