"""The MCP tools, on the SDK: sandboxes (create, list, delete), commands, files. Each call runs as its caller (the
kubeconfig's identity over stdio, the token's over HTTP) in one namespace, within the settings' limits."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from kubernetes_asyncio.client import Configuration
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from sandbox_operator.mcp_server.identity import Caller
from sandbox_operator.mcp_server.limits import McpSettings
from sandbox_operator.sdk import Sandbox, SandboxClient, SandboxError

SESSION_KEY_PART: Final = "mcp-session"
MAX_CLIENTS: Final = 256

SandboxName = Annotated[
    str | None,
    Field(description="A sandbox from sandbox_list or sandbox_create; omitted: this session's own sandbox."),
]
Namespace = Annotated[
    str | None,
    Field(description="Namespace of the sandboxes; omitted: the server's default for this caller.", max_length=63),
]
Path = Annotated[
    str, Field(description="A path in the sandbox; /tmp and the workspace are writable.", min_length=1, max_length=4096)
]


@dataclass(frozen=True)
class Call:
    """What one tool call acts with: a client as its caller, and the session it belongs to."""

    sandboxes: SandboxClient
    session: str
    namespace: str


class Clients:
    """SandboxClients per caller: one for the stdio user, or one per HTTP caller (impersonating it), reused. Past
    MAX_CLIENTS, the least recently used client that no call is using is closed."""

    def __init__(
        self, settings: McpSettings, configuration: Configuration, default_namespace: str, local: bool
    ) -> None:
        self._settings, self._configuration, self.local = settings, configuration, local
        self._default_namespace = default_namespace
        self._clients: OrderedDict[str, SandboxClient] = OrderedDict()  # by the caller's identity
        self._users: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def for_caller(self) -> AsyncIterator[SandboxClient]:
        """The client for the current call's caller, held for the call; over HTTP without a caller, an error."""
        caller = self._caller()
        identity = json.dumps(caller.claims(), sort_keys=True) if caller else ""
        client = self._clients.get(identity)
        if client is None:
            namespace = self._settings.namespace or (caller and caller.service_account_namespace)
            client = SandboxClient.from_configuration(
                self._configuration,
                namespace or self._default_namespace,
                impersonate=caller.impersonation if caller else None,
            )
            self._clients[identity] = client
        self._clients.move_to_end(identity)
        self._users[identity] = self._users.get(identity, 0) + 1
        try:
            yield client
        finally:
            self._users[identity] -= 1
            if not self._users[identity]:
                del self._users[identity]
            self._evict()

    def _evict(self) -> None:
        idle = [identity for identity in self._clients if identity not in self._users]
        for identity in idle[: max(0, len(self._clients) - MAX_CLIENTS)]:
            task = asyncio.get_running_loop().create_task(self._clients.pop(identity).close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _caller(self) -> Caller | None:
        """The HTTP caller of the current call (None over stdio: the kubeconfig's identity acts)."""
        if self.local:
            return None
        token = get_access_token()
        if token is None or not token.claims:
            raise ToolError("not authenticated")  # the HTTP layer answers 401 before a tool runs
        return Caller.from_claims(token.claims)

    def caller_name(self) -> str:
        """The current caller's user name ("local" over stdio)."""
        caller = self._caller()
        return caller.username if caller else "local"

    async def close(self) -> None:
        """Close every client."""
        await asyncio.gather(*self._closing, return_exceptions=True)
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class Sessions:
    """Per-session limits: at most ``max_concurrent_calls`` tool calls at once."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: OrderedDict[str, int] = OrderedDict()

    @contextlib.asynccontextmanager
    async def slot(self, session: str) -> AsyncIterator[None]:
        """Hold one of the session's call slots, or refuse the call naming the limit."""
        running = self._running.get(session, 0)
        if running >= self._limit:
            raise ToolError(f"max_concurrent_calls={self._limit}: this session already runs {running} calls")
        self._running[session] = running + 1
        self._running.move_to_end(session)
        try:
            yield
        finally:
            left = self._running[session] - 1
            if left:
                self._running[session] = left
            else:
                del self._running[session]


def build_server(settings: McpSettings, clients: Clients, **server_options: Any) -> MCPServer[Any]:
    """The MCP server with its tools; ``server_options`` go to MCPServer (auth settings, a token verifier)."""
    server: MCPServer[Any] = MCPServer(
        "sandbox-operator",
        instructions=(
            "Run commands and manage files in Kubernetes sandboxes (locked-down pods that expire by themselves). "
            "Without a sandbox name, tools use this session's own sandbox, created on first use."
        ),
        **server_options,
    )
    sessions = Sessions(settings.max_concurrent_calls)
    process_session = uuid.uuid4().hex  # stdio serves one client: the process is the session

    def session_of(ctx: Context) -> str:
        """What keys the session's own sandbox: the MCP session id over HTTP (a caller without one gets one sandbox
        of its own), the process over stdio. Hashed: it becomes a key value, whatever the client sent."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        header = headers.get("mcp-session-id") if headers is not None else None
        if header:
            return hashlib.sha256(f"http:{header}".encode()).hexdigest()[:32]
        if clients.local:
            return process_session
        return hashlib.sha256(f"caller:{clients.caller_name()}".encode()).hexdigest()[:32]

    async def act(ctx: Context, namespace: str | None, work: Callable[[Call], Awaitable[Any]]) -> Any:
        session = session_of(ctx)
        async with sessions.slot(session), clients.for_caller() as sandboxes:
            call = Call(sandboxes, session, namespace or sandboxes.namespace)
            try:
                return await work(call)
            except SandboxError as error:
                raise ToolError(str(error)) from None

    def recipe(image: str | None) -> dict[str, Any]:
        """What a new sandbox is made of: the image asked for, else the server's template, else its image."""
        if image is None and settings.template is not None:
            return {"template": settings.template}
        return {"image": image or settings.image, "cpu": settings.cpu, "memory": settings.memory}

    async def sandbox_of(call: Call, name: str | None) -> Sandbox:
        if name is not None:
            sandbox = await call.sandboxes.get(name, namespace=call.namespace)
            return await sandbox.wait_ready(settings.ready_timeout_seconds)
        return await call.sandboxes.get_or_create(
            {SESSION_KEY_PART: call.session},
            namespace=call.namespace,
            ttl=settings.ttl_seconds,
            idle_timeout=settings.idle_timeout_seconds,
            timeout=settings.ready_timeout_seconds,
            **recipe(None),
        )

    @server.tool(description="Create a sandbox and wait until it is ready; returns its name for the other tools.")
    async def sandbox_create(
        ctx: Context,
        image: Annotated[
            str | None,
            Field(description="Container image; default: the server's template or image.", max_length=512),
        ] = None,
        ttl_seconds: Annotated[
            int | None, Field(description="Deleted this long after creation.", ge=60, le=7 * 86400)
        ] = None,
        idle_timeout_seconds: Annotated[
            int | None, Field(description="Deleted this long after last use.", ge=10, le=86400)
        ] = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        async def work(call: Call) -> dict[str, Any]:
            sandbox = await call.sandboxes.create(
                ttl=ttl_seconds or settings.ttl_seconds,
                idle_timeout=idle_timeout_seconds or settings.idle_timeout_seconds,
                timeout=settings.ready_timeout_seconds,
                namespace=call.namespace,
                **recipe(image),
            )
            return sandbox.summary()

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(description="List the sandboxes the caller can see in its namespace.")
    async def sandbox_list(ctx: Context, namespace: Namespace = None) -> list[dict[str, Any]]:
        async def work(call: Call) -> list[dict[str, Any]]:
            return [sandbox.summary() for sandbox in await call.sandboxes.list(namespace=call.namespace)]

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(description="Delete a sandbox (with everything in it).")
    async def sandbox_delete(
        ctx: Context,
        name: Annotated[str, Field(description="The sandbox to delete.", max_length=63)],
        namespace: Namespace = None,
    ) -> str:
        async def work(call: Call) -> str:
            await call.sandboxes.get(name, namespace=call.namespace)  # SandboxNotFoundError when it is not there
            await call.sandboxes.delete(name, namespace=call.namespace)
            return f"deleted {name}"

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(
        description=(
            "Run a command in a sandbox and return its exit code and output. Give `command` as an argv list, or "
            "`shell` as one string for sh -c. At the timeout the command and everything it started are killed."
        )
    )
    async def run_command(
        ctx: Context,
        command: Annotated[
            list[str] | None, Field(description="Program and arguments, no shell.", min_length=1, max_length=256)
        ] = None,
        shell: Annotated[str | None, Field(description="A shell command line, run by sh -c.", max_length=65536)] = None,
        timeout_seconds: Annotated[float | None, Field(description="Kill it after this long.", gt=0)] = None,
        cwd: Annotated[str | None, Field(description="Working directory.", max_length=4096)] = None,
        sandbox: SandboxName = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        if (command is None) == (shell is None):
            raise ToolError("give exactly one of `command` (an argv list) or `shell` (a string)")
        timeout = timeout_seconds or settings.default_command_seconds
        if timeout > settings.max_command_seconds:
            raise ToolError(
                f"timeout_seconds={timeout_seconds} is above max_command_seconds={settings.max_command_seconds:g}"
            )

        async def work(call: Call) -> dict[str, Any]:
            target = await sandbox_of(call, sandbox)
            result = await target.run(
                shell if shell is not None else command or [],
                shell=shell is not None,
                timeout=timeout,
                cwd=cwd,
                max_output_bytes=settings.max_output_bytes,
            )
            return {**result.to_dict(), "sandbox": target.name}

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(description="Read a file from a sandbox: UTF-8 text, or base64 for binary content.")
    async def read_file(
        ctx: Context,
        path: Path,
        encoding: Annotated[Literal["utf-8", "base64"], Field(description="How to return the content.")] = "utf-8",
        sandbox: SandboxName = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        async def work(call: Call) -> dict[str, Any]:
            target = await sandbox_of(call, sandbox)
            data = await target.files.read(path, max_bytes=settings.max_file_bytes)
            if encoding == "base64":
                return {
                    "path": path,
                    "size": len(data),
                    "encoding": "base64",
                    "content": base64.b64encode(data).decode(),
                }
            try:
                return {"path": path, "size": len(data), "encoding": "utf-8", "content": data.decode("utf-8")}
            except UnicodeDecodeError:
                raise ToolError(f"{path} is not UTF-8 text; read it with encoding='base64'") from None

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(description="Write a file in a sandbox (parent directories are created).")
    async def write_file(
        ctx: Context,
        path: Path,
        content: Annotated[str, Field(description="The content: text, or base64 with encoding='base64'.")],
        encoding: Annotated[Literal["utf-8", "base64"], Field(description="How `content` is given.")] = "utf-8",
        sandbox: SandboxName = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode("utf-8")
        except (binascii.Error, ValueError):
            raise ToolError("content is not valid base64") from None
        if len(data) > settings.max_file_bytes:
            raise ToolError(f"{len(data)} bytes is above max_file_bytes={settings.max_file_bytes}")

        async def work(call: Call) -> dict[str, Any]:
            target = await sandbox_of(call, sandbox)
            await target.files.write(path, data, max_bytes=settings.max_file_bytes)
            return {"path": path, "size": len(data), "sandbox": target.name}

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    @server.tool(description="List a directory in a sandbox.")
    async def list_files(
        ctx: Context,
        path: Annotated[str, Field(description="The directory.", min_length=1, max_length=4096)] = ".",
        sandbox: SandboxName = None,
        namespace: Namespace = None,
    ) -> list[dict[str, Any]]:
        async def work(call: Call) -> list[dict[str, Any]]:
            target = await sandbox_of(call, sandbox)
            return [info.to_dict() for info in await target.files.list(path)]

        return await act(ctx, namespace, work)  # type: ignore[no-any-return]

    return server
