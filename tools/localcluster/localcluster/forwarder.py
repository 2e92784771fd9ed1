"""A plain TCP forwarder: ``python forwarder.py LISTEN_HOST:PORT TARGET_HOST:PORT``.

The real node runs one (``node.APISERVER_PORT_FOR_PODS``) so pods reach the API server, which listens on
127.0.0.1 only: the stand-in for kube-proxy's ``kubernetes`` Service. Bytes are copied unchanged (TLS stays
end to end between the pod and the API server). Standalone on purpose: node.py starts it with the interpreter
and its path, records the PID, and stops it by that PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    server = await asyncio.start_server(forward, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"forwarding {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(_serve(_address(sys.argv[1]), _address(sys.argv[2])))
