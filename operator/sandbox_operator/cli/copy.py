"""``cp``: files and directory trees between here and a sandbox, kubectl cp's way round.

A single file goes to the destination path (into it when it is a directory or ends with '/'); a directory tree goes
into the destination directory, which is created if missing. ``-`` is stdin or stdout, for one file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import posixpath
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from sandbox_operator.cli import lifecycle, output
from sandbox_operator.cli.errors import CliError
from sandbox_operator.cli.locations import LocalPath, SandboxPath, local_file_path, remote_file_path
from sandbox_operator.sdk import (
    FileTooLargeError,
    Sandbox,
    SandboxClient,
    SandboxFileError,
    SandboxIsADirectoryError,
)
from sandbox_operator.sdk.files import DEFAULT_MAX_FILE_BYTES


async def cp(client: SandboxClient, args: argparse.Namespace) -> int:
    """Copy SRC to DST (parsed by the parser: exactly one of them is a SandboxPath)."""
    source, destination = args.source, args.destination
    if isinstance(source, SandboxPath):
        sandbox = await lifecycle.usable_sandbox(client, source.name)
        written = await download(sandbox, source, destination)
    else:
        sandbox = await lifecycle.usable_sandbox(client, destination.name)
        written = await upload(sandbox, source, destination)
    if written != "-":  # stdout carries the file itself
        output.emit(args.output, {"source": str(source), "destination": written}, "")
    return 0


@contextlib.contextmanager
def _in_sandbox(name: str) -> Iterator[None]:
    """A file error from the sandbox names its path as NAME:PATH, so it does not read like a local one."""
    try:
        yield
    except SandboxFileError as error:
        raise CliError(f"{name}:{error.filename}: {error.strerror}") from error


async def upload(sandbox: Sandbox, source: LocalPath, target: SandboxPath) -> str:
    """A local file, stdin or directory tree into the sandbox; returns where it landed, as NAME:PATH."""
    with _in_sandbox(target.name):
        if source.stdio:
            if target.path.endswith("/"):
                raise CliError(f"stdin has no file name: name the file, e.g. {target.name}:{target.path}input")
            data = await asyncio.to_thread(sys.stdin.buffer.read, DEFAULT_MAX_FILE_BYTES + 1)
            _check_size(len(data), "stdin")
            await sandbox.files.write(target.path, data)
            return str(target)
        local, status = await asyncio.to_thread(_local_source, source.path)
        if stat.S_ISDIR(status.st_mode):
            await sandbox.files.upload(local, target.path)
            return str(SandboxPath(target.name, posixpath.join(target.path, local.name)))
        _check_size(status.st_size, source.path)
        data = await asyncio.to_thread(local.read_bytes)
        path = remote_file_path(local.name, target.path)
        try:
            await sandbox.files.write(path, data)
        except SandboxIsADirectoryError:  # an existing directory: into it, as cp does
            path = posixpath.join(path, local.name)
            await sandbox.files.write(path, data)
        return str(SandboxPath(target.name, path))


async def download(sandbox: Sandbox, source: SandboxPath, target: LocalPath) -> str:
    """A file or directory tree from the sandbox to a local path or stdout; returns where it landed."""
    with _in_sandbox(source.name):
        try:
            data = await sandbox.files.read(source.path)
        except SandboxIsADirectoryError:
            if target.stdio:
                raise CliError(f"{source} is a directory: copy it to a local directory, not to stdout") from None
            return str(await sandbox.files.download(source.path, target.path))
    if target.stdio:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return target.path
    path = local_file_path(source.path, target.path, await asyncio.to_thread(os.path.isdir, target.path))
    await asyncio.to_thread(Path(path).write_bytes, data)
    return path


def _local_source(path: str) -> tuple[Path, os.stat_result]:
    """The absolute path ("." and "dir/" need a name in the sandbox) and what it is; FileNotFoundError if nothing."""
    status = os.stat(path)  # before abspath: an error names the path as it was given
    return Path(os.path.abspath(path)), status


def _check_size(size: int, what: str) -> None:
    if size > DEFAULT_MAX_FILE_BYTES:
        raise FileTooLargeError(f"{what} is more than {DEFAULT_MAX_FILE_BYTES} bytes, the largest file cp moves")
