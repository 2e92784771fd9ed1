"""The exec subresource over WebSocket, with the v5 channel protocol (Kubernetes 1.30 and later).

kubernetes_asyncio's WsApiClient opens the WebSocket (authentication, TLS, the URL and its repeated ``command``
parameters); this module speaks the channel protocol on top, because the client's own reader decodes every frame as
UTF-8 (binary output breaks) and speaks v4, which cannot close stdin: a command reading stdin (``cat > file``) would
never see its end. Each binary frame is one channel byte, then data: 0 stdin, 1 stdout, 2 stderr, 3 the final Status
(exit code), 4 terminal resize; v5 adds frame ``255 0``, "stdin is closed".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import CoreV1Api
from kubernetes_asyncio.stream import WsApiClient

from sandbox_operator.sdk.errors import AccessDeniedError, ExecError, SandboxNotFoundError

PROTOCOL: Final = "v5.channel.k8s.io"
# Stdin frames: large enough to move 32 MiB quickly, small enough for the API server's WebSocket reader.
STDIN_CHUNK: Final = 256 * 1024
EXEC_HINT: Final = "a Tenant grants its subjects exec with spec.execAccess: true; elsewhere, RBAC on pods/exec"


class Channel(IntEnum):
    """Channels of the v5 exec protocol."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    STATUS = 3
    RESIZE = 4
    CLOSE = 255


@dataclass(frozen=True)
class ExitStatus:
    """How the process ended, from the Status on channel 3."""

    code: int
    message: str = ""


def exit_status(payload: bytes) -> ExitStatus:
    """Read the Status the API server sends last: Success is 0, NonZeroExitCode carries the code."""
    try:
        status = json.loads(payload)
    except ValueError as error:
        raise ExecError(f"unreadable exec status: {payload[:200]!r}") from error
    if status.get("status") == "Success":
        return ExitStatus(0)
    details = status.get("details") or {}
    for cause in details.get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return ExitStatus(int(cause.get("message", "")), str(status.get("message", "")))
            except ValueError:
                break
    raise ExecError(f"exec failed: {status.get('message') or status}")


class ExecSession:
    """One running exec: write stdin, close it, read (channel, data) frames until the process ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, context: Any) -> None:
        self._ws, self._context = ws, context
        self.status: ExitStatus | None = None

    async def write(self, data: bytes) -> None:
        """Send bytes to the process's stdin."""
        view = memoryview(data)
        for start in range(0, len(view), STDIN_CHUNK):
            await self._ws.send_bytes(b"\x00" + view[start : start + STDIN_CHUNK].tobytes())

    async def close_stdin(self) -> None:
        """Tell the process its stdin has ended (it reads end-of-file)."""
        await self._ws.send_bytes(bytes((Channel.CLOSE, Channel.STDIN)))

    async def resize(self, columns: int, rows: int) -> None:
        """Tell a TTY its new size."""
        await self._ws.send_bytes(b"\x04" + json.dumps({"Width": columns, "Height": rows}).encode())

    async def frames(self) -> AsyncGenerator[tuple[Channel, bytes]]:
        """Output frames (stdout, stderr) until the process ends; the exit status lands in ``self.status``."""
        async for message in self._ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == Channel.STATUS:
                    self.status = exit_status(payload)
                elif channel in (Channel.STDOUT, Channel.STDERR) and payload:
                    yield Channel(channel), payload
            elif message.type is aiohttp.WSMsgType.ERROR:
                raise ExecError(f"exec connection failed: {self._ws.exception()}")

    async def close(self) -> None:
        """Close the WebSocket (the process loses its streams; the SDK's watchdog still bounds it)."""
        await self._context.__aexit__(None, None, None)


def _negotiated(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The subprotocol the API server chose (the header was set by hand, so aiohttp did not record it)."""
    response = getattr(ws, "_response", None)
    headers = getattr(response, "headers", None)
    return headers.get("Sec-WebSocket-Protocol") if headers is not None else None


async def open_exec(
    ws_client: WsApiClient,
    namespace: str,
    pod: str,
    container: str,
    argv: Sequence[str],
    *,
    stdin: bool = False,
    tty: bool = False,
    retries: int = 3,
) -> ExecSession:
    """Start ``argv`` in the container and return its session. Connection errors and 5xx answers are retried (the
    command has not started then); 403 becomes AccessDeniedError naming pods/exec, 404 SandboxNotFoundError."""
    api: Any = CoreV1Api(ws_client)  # typed for the preloaded call; with _preload_content=False it returns the socket
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            context = await api.connect_get_namespaced_pod_exec(
                pod,
                namespace,
                command=list(argv),
                container=container,
                stdin=stdin,
                stdout=True,
                stderr=not tty,
                tty=tty,
                _preload_content=False,
                _headers={"sec-websocket-protocol": PROTOCOL},
            )
            ws = await context.__aenter__()
        except aiohttp.WSServerHandshakeError as error:
            if error.status == 403:
                raise AccessDeniedError("create", "pods/exec", namespace, EXEC_HINT) from None
            if error.status == 404:
                raise SandboxNotFoundError(f"pod {namespace}/{pod} not found") from None
            if error.status < 500 or attempt == retries:
                raise ExecError(f"exec into {namespace}/{pod} refused: HTTP {error.status} {error.message}") from None
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            if attempt == retries:
                raise ExecError(f"exec into {namespace}/{pod} failed: {error}") from error
        else:
            if _negotiated(ws) not in (PROTOCOL, None):
                await context.__aexit__(None, None, None)
                raise ExecError(f"the API server does not speak {PROTOCOL} (Kubernetes 1.30 or later is needed)")
            return ExecSession(ws, context)
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")
