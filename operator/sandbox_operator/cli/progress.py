"""Waiting until a Sandbox is Ready, with a spinner, the seconds waited and its phase on a terminal's stderr."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from typing import Final, TextIO

from sandbox_operator.sdk import Sandbox, SandboxClient

UNICODE_FRAMES: Final = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ASCII_FRAMES: Final = "|/-\\"
FRAME_INTERVAL: Final = 0.1
FRAMES_PER_POLL: Final = 5  # the Sandbox is read again every half second
CLEAR_LINE: Final = "\r\x1b[K"


def progress_line(frame: str, sandbox: Sandbox, elapsed: float, width: int) -> str:
    """``⠹ waiting for NAME: 12s, Pending (ImagePulling: pulling image ...)``, cut to the terminal's width."""
    reason, message = sandbox.reason, sandbox.message
    state = sandbox.phase or "Pending"
    if reason or message:
        state += f" ({': '.join(str(part) for part in (reason, message) if part)})"
    line = f"{frame} waiting for {sandbox.name}: {elapsed:.0f}s, {state}"
    return line if len(line) < width else line[: max(width - 2, 1)] + "…"


async def wait_ready(client: SandboxClient, sandbox: Sandbox, timeout: float, stream: TextIO = sys.stderr) -> Sandbox:
    """``sandbox.wait_ready(timeout)``; while it runs, a terminal ``stream`` shows how the wait goes (nothing is
    printed when it is not a terminal: scripts and logs get no control characters)."""
    if not stream.isatty():
        return await sandbox.wait_ready(timeout)
    indicator = asyncio.create_task(_indicate(client, sandbox, stream))
    try:
        return await sandbox.wait_ready(timeout)
    finally:
        indicator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await indicator
        stream.write(CLEAR_LINE)
        stream.flush()


async def _indicate(client: SandboxClient, sandbox: Sandbox, stream: TextIO) -> None:
    """Redraw the line every FRAME_INTERVAL; read the Sandbox again (as a copy: ``wait_ready`` owns ``sandbox``)
    every FRAMES_PER_POLL frames. A failed read keeps the last state shown: the wait itself reports errors."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    frames = UNICODE_FRAMES if encoding.startswith("utf") else ASCII_FRAMES
    started, latest, tick = time.monotonic(), sandbox, 0
    poll: asyncio.Task[Sandbox] | None = None
    try:
        while True:
            if poll is not None and poll.done():
                if not poll.cancelled() and poll.exception() is None:
                    latest = poll.result()
                poll = None
            if poll is None and tick % FRAMES_PER_POLL == 0:
                poll = asyncio.create_task(client.get(sandbox.name, namespace=sandbox.namespace))
            width = shutil.get_terminal_size().columns
            line = progress_line(frames[tick % len(frames)], latest, time.monotonic() - started, width)
            stream.write(CLEAR_LINE + line)
            stream.flush()
            tick += 1
            await asyncio.sleep(FRAME_INTERVAL)
    finally:
        if poll is not None:
            poll.cancel()
