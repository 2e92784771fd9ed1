"""The SDK for code without an event loop: the same calls, blocking.

``with connect() as client: sandbox = client.get_or_create({"user": "alice"}, image="python:3.11-slim")``.
Each client runs the async SDK on an event loop in a thread of its own; every call waits for its result there.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sandbox_operator.sdk import client as async_client
from sandbox_operator.sdk.commands import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT, CommandResult, OutputCallback
from sandbox_operator.sdk.files import DEFAULT_MAX_FILE_BYTES, FileInfo, Files

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread; ``call`` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox-sdk", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncFiles:
    """Blocking ``Files``: write, read, list, remove, upload, download."""

    def __init__(self, loop: _Loop, files: Files) -> None:
        self._loop, self._files = loop, files

    def write(
        self, path: str, data: bytes | str, *, make_dirs: bool = True, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        """See ``Files.write``."""
        self._loop.call(self._files.write(path, data, make_dirs=make_dirs, max_bytes=max_bytes))

    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        """See ``Files.read``."""
        return self._loop.call(self._files.read(path, max_bytes=max_bytes))

    def read_text(self, path: str, *, encoding: str = "utf-8", max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
        """See ``Files.read_text``."""
        return self.read(path, max_bytes=max_bytes).decode(encoding)

    def list(self, path: str = ".") -> list[FileInfo]:
        """See ``Files.list``."""
        return self._loop.call(self._files.list(path))

    def exists(self, path: str) -> bool:
        """See ``Files.exists``."""
        return self._loop.call(self._files.exists(path))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """See ``Files.remove``."""
        self._loop.call(self._files.remove(path, recursive=recursive))

    def upload(
        self, local: str | os.PathLike[str], remote_dir: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        """See ``Files.upload``."""
        self._loop.call(self._files.upload(local, remote_dir, max_bytes=max_bytes))

    def download(
        self, remote: str, local_dir: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> Path:
        """See ``Files.download``."""
        return self._loop.call(self._files.download(remote, local_dir, max_bytes=max_bytes))


class SyncSandbox:
    """Blocking ``Sandbox``."""

    def __init__(self, loop: _Loop, sandbox: async_client.Sandbox) -> None:
        self._loop, self.aio = loop, sandbox
        self.files = SyncFiles(loop, sandbox.files)

    name = property(lambda self: self.aio.name, doc="The Sandbox's name.")
    namespace = property(lambda self: self.aio.namespace, doc="The Sandbox's namespace.")
    phase = property(lambda self: self.aio.phase, doc="Its phase.")
    ready = property(lambda self: self.aio.ready, doc="Whether it is Ready.")
    key = property(lambda self: self.aio.key, doc="The key it was made for, if any.")
    body = property(lambda self: self.aio.body, doc="The Sandbox as last read.")

    def __repr__(self) -> str:
        return repr(self.aio)

    def run(
        self,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult:
        """See ``Sandbox.run`` (callbacks run on the SDK's thread)."""
        return self._loop.call(
            self.aio.run(
                command,
                shell=shell,
                timeout=timeout,
                cwd=cwd,
                env=env,
                stdin=stdin,
                max_output_bytes=max_output_bytes,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
            )
        )

    def refresh(self) -> SyncSandbox:
        """See ``Sandbox.refresh``."""
        self._loop.call(self.aio.refresh())
        return self

    def wait_ready(self, timeout: float = async_client.DEFAULT_READY_TIMEOUT) -> SyncSandbox:
        """See ``Sandbox.wait_ready``."""
        self._loop.call(self.aio.wait_ready(timeout))
        return self

    def suspend(self) -> SyncSandbox:
        """See ``Sandbox.suspend``."""
        self._loop.call(self.aio.suspend())
        return self

    def resume(self, *, wait: bool = True, timeout: float = async_client.DEFAULT_READY_TIMEOUT) -> SyncSandbox:
        """See ``Sandbox.resume``."""
        self._loop.call(self.aio.resume(wait=wait, timeout=timeout))
        return self

    def delete(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """See ``Sandbox.delete``."""
        self._loop.call(self.aio.delete(wait=wait, timeout=timeout))

    def touch(self) -> None:
        """See ``Sandbox.touch``."""
        self._loop.call(self.aio.touch())


class SyncSandboxClient:
    """Blocking ``SandboxClient``; close it (or use ``with``) to stop its thread."""

    def __init__(self, loop: _Loop, client: async_client.SandboxClient) -> None:
        self._loop, self.aio = loop, client

    @property
    def namespace(self) -> str:
        """The default namespace."""
        return self.aio.namespace

    def create(self, name: str | None = None, **options: Any) -> SyncSandbox:
        """See ``SandboxClient.create``."""
        return SyncSandbox(self._loop, self._loop.call(self.aio.create(name, **options)))

    def get_or_create(self, key: Mapping[str, str], **options: Any) -> SyncSandbox:
        """See ``SandboxClient.get_or_create``."""
        return SyncSandbox(self._loop, self._loop.call(self.aio.get_or_create(key, **options)))

    def get(self, name: str, *, namespace: str | None = None) -> SyncSandbox:
        """See ``SandboxClient.get``."""
        return SyncSandbox(self._loop, self._loop.call(self.aio.get(name, namespace=namespace)))

    def find(self, key: Mapping[str, str], **options: Any) -> SyncSandbox | None:
        """See ``SandboxClient.find``."""
        found = self._loop.call(self.aio.find(key, **options))
        return SyncSandbox(self._loop, found) if found is not None else None

    def list(self, key: Mapping[str, str] | None = None, **options: Any) -> list[SyncSandbox]:
        """See ``SandboxClient.list``."""
        return [SyncSandbox(self._loop, s) for s in self._loop.call(self.aio.list(key, **options))]

    def delete(self, name: str, **options: Any) -> None:
        """See ``SandboxClient.delete``."""
        self._loop.call(self.aio.delete(name, **options))

    def close(self) -> None:
        """Close the connections and stop the SDK's thread."""
        try:
            self._loop.call(self.aio.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> SyncSandboxClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def connect(
    *, namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None
) -> SyncSandboxClient:
    """A blocking client with the caller's credentials; see ``SandboxClient.connect``."""
    loop = _Loop()
    try:
        client = loop.call(
            async_client.SandboxClient.connect(namespace=namespace, kubeconfig=kubeconfig, context=context)
        )
    except BaseException:
        loop.stop()
        raise
    return SyncSandboxClient(loop, client)
