"""This program's stdin, read without blocking the event loop, for ``run --stdin`` and ``shell``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from typing import Final

CHUNK: Final = 64 * 1024


async def stdin_chunks(fd: int = 0) -> AsyncGenerator[bytes, None]:
    """Chunks of ``fd`` as they arrive, until end of file. A terminal, pipe or socket is watched by the event loop and
    read in non-blocking mode (a readiness report may be stale by the time the read runs: a blocking read would then
    stall the loop until the next key); a regular file, which the loop cannot watch, is read in a thread."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    try:
        loop.add_reader(fd, readable.set)
    except (PermissionError, ValueError, NotImplementedError):  # epoll refuses regular files
        while chunk := await asyncio.to_thread(os.read, fd, CHUNK):
            yield chunk
        return
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)  # the terminal's mode is shared with the shell that started us: restored below
    try:
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                readable.clear()
                await readable.wait()
                continue
            if not chunk:
                return
            yield chunk
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, blocking)
