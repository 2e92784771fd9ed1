"""Sandboxes through the Kubernetes API, with the caller's own credentials: create, get-or-create by key, list, wait,
suspend, resume, delete; and a handle per Sandbox to run commands and move files over the exec subresource."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient
from pydantic import ValidationError

from sandbox_operator.api import keys
from sandbox_operator.api import names as c
from sandbox_operator.api.connection import resolve_environment_once
from sandbox_operator.api.sandbox import SandboxSpec
from sandbox_operator.api.schema import describe_validation_error, format_time
from sandbox_operator.sdk import shell
from sandbox_operator.sdk.commands import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_TIMEOUT,
    CommandResult,
    OutputCallback,
    Process,
    command_argv,
    wrapped_argv,
)
from sandbox_operator.sdk.errors import (
    AccessDeniedError,
    ExecError,
    KeyConflictError,
    SandboxError,
    SandboxExistsError,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxNotReadyError,
    WaitTimeoutError,
)
from sandbox_operator.sdk.files import ExecOutput, Files
from sandbox_operator.sdk.wire import Channel, ExecSession, open_exec

log = logging.getLogger("sandbox_operator.sdk")

DEFAULT_READY_TIMEOUT: Final = 180.0
DEFAULT_DELETE_TIMEOUT: Final = 60.0
# Activity is reported at most this often per sandbox: enough for idle timeouts of a minute or more.
ACTIVITY_INTERVAL: Final = 5.0
# Keeps the container alive for exec when no command is given, and ends at once on SIGTERM (no 30 s grace wait).
KEEPALIVE_COMMAND: Final = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done")
TRANSIENT_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
SERVICE_ACCOUNT_NAMESPACE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
STDIN_READ_CHUNK: Final = 1024 * 1024
# Longest a file operation may take (256 MiB at a few MB/s); a stuck one fails instead of waiting forever.
FILE_OPERATION_TIMEOUT: Final = 600.0
WS_HEARTBEAT_SECONDS: Final = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class Impersonation:
    """An identity to act as (Kubernetes user impersonation): RBAC and audit logs then see this user."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str | None = None
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, str]]:
        """The Impersonate-* headers (one per group and per extra value, as the API server reads them)."""
        pairs = [("Impersonate-User", self.user), *(("Impersonate-Group", group) for group in self.groups)]
        if self.uid:
            pairs.append(("Impersonate-Uid", self.uid))
        for key, values in self.extra.items():
            pairs.extend((f"Impersonate-Extra-{quote(key, safe='')}", value) for value in values)
        return pairs


class InvalidSpecError(SandboxError, ValueError):
    """The arguments would make a Sandbox the API server refuses; the message names each field."""


def _seconds(value: float | timedelta | None, name: str) -> int | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds <= 0:
        raise InvalidSpecError(f"{name} must be positive, not {value!r}")
    return int(-(-seconds // 1))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def build_spec(
    *,
    image: str | None = None,
    template: str | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    ttl: float | timedelta | None = None,
    idle_timeout: float | timedelta | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Sandbox spec from the SDK's arguments, checked against the API's model: InvalidSpecError names each bad
    field before anything is sent. ``spec`` adds any other field in its YAML form (e.g. {"network": {...}}).
    ``template`` names a SandboxTemplate instead of an image: the pod comes from it (warm, when a SandboxPool of it
    has a Ready pod), and only the lifetime may be given here."""
    if (image is None) == (template is None):
        raise InvalidSpecError("pass exactly one of image and template")
    if template is not None:
        from_template = {"command": command, "args": args, "env": env, "cpu": cpu, "memory": memory}
        given = sorted(name for name, value in from_template.items() if value is not None)
        if given:
            raise InvalidSpecError(f"{', '.join(given)}: a sandbox made from a template takes these from it")
        body: dict[str, Any] = {"templateRef": {"name": template}}
    else:
        body = {"image": image, "command": list(command) if command is not None else list(KEEPALIVE_COMMAND)}
    if args is not None:
        body["args"] = list(args)
    if env:
        body["env"] = [{"name": name, "value": value} for name, value in env.items()]
    lifetime = {"ttlSeconds": _seconds(ttl, "ttl"), "idleTimeoutSeconds": _seconds(idle_timeout, "idle_timeout")}
    if any(value is not None for value in lifetime.values()):
        body["lifetime"] = {k: v for k, v in lifetime.items() if v is not None}
    resources = {"cpu": cpu, "memory": memory}
    if any(value is not None for value in resources.values()):
        body["resources"] = {k: v for k, v in resources.items() if v is not None}
    _merge(body, spec or {})
    try:
        SandboxSpec.model_validate(body)
    except ValidationError as error:
        raise InvalidSpecError(describe_validation_error(error, "spec")) from None
    return body


def _condition(body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


class Sandbox:
    """One Sandbox: its last known state, and what can be done in it."""

    def __init__(self, client: SandboxClient, body: Mapping[str, Any]) -> None:
        self._client = client
        self.body: Mapping[str, Any] = body
        self.files = Files(self._exec_output)

    @property
    def name(self) -> str:
        """The Sandbox's name."""
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        """The Sandbox's namespace."""
        return str(self.body["metadata"]["namespace"])

    @property
    def key(self) -> dict[str, str] | None:
        """The key it was made for by get_or_create, if any."""
        return keys.key_of(self.body)

    @property
    def phase(self) -> str | None:
        """Pending, Ready, Suspended, Expired, Failed or Terminating."""
        return (self.body.get("status") or {}).get("phase")

    @property
    def ready(self) -> bool:
        """Whether the pod runs and is ready, for the current spec."""
        condition = _condition(self.body, c.ConditionType.READY)
        return condition.get("status") == c.ConditionStatus.TRUE and self._observed()

    @property
    def reason(self) -> str | None:
        """The Ready condition's reason (PodReady, PodPending, ImageUnavailable, QuotaExceeded, ...)."""
        return _condition(self.body, c.ConditionType.READY).get("reason")

    @property
    def message(self) -> str | None:
        """The Ready condition's message, for humans."""
        return _condition(self.body, c.ConditionType.READY).get("message")

    @property
    def pod_name(self) -> str:
        """The sandbox pod's name."""
        return str((self.body.get("status") or {}).get("podName") or f"{c.CHILD_PREFIX}{self.name}")

    @property
    def expires_at(self) -> datetime | None:
        """When the sandbox expires, as the operator last computed it."""
        text = (self.body.get("status") or {}).get("expiresAt")
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None

    def summary(self) -> dict[str, Any]:
        """Its state in a few JSON-ready fields (the whole object is ``body``)."""
        expires_at = self.expires_at
        return {
            "name": self.name,
            "namespace": self.namespace,
            "phase": self.phase,
            "ready": self.ready,
            "reason": self.reason,
            "message": self.message,
            "key": self.key,
            "expires_at": expires_at.isoformat() if expires_at is not None else None,
            "pod": self.pod_name,
            "image": (self.body.get("spec") or {}).get("image"),
        }

    def _observed(self) -> bool:
        generation = self.body["metadata"].get("generation")
        observed = (self.body.get("status") or {}).get("observedGeneration")
        return generation is None or (isinstance(observed, int) and observed >= generation)

    def __repr__(self) -> str:
        return f"Sandbox({self.namespace}/{self.name}, phase={self.phase})"

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def refresh(self) -> Sandbox:
        """Read the Sandbox again."""
        self.body = await self._client._get_body(self.name, self.namespace)
        return self

    async def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> Sandbox:
        """Return once Ready. SandboxFailedError at once if it cannot become Ready (Failed, Expired, suspended),
        WaitTimeoutError after ``timeout`` seconds; both carry the Ready condition's reason and message. A Sandbox
        read as Ready a moment ago is returned as it is, without a watch."""
        if not self.ready:
            self.body = await self._client._wait(self.name, self.namespace, timeout)
        return self

    async def suspend(self) -> Sandbox:
        """Delete the pod, keep the workspace; ``resume`` brings it back."""
        self.body = await self._client._patch(self.name, self.namespace, {"spec": {"suspended": True}})
        return self

    async def resume(self, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT) -> Sandbox:
        """Start the pod again; by default wait until it is Ready."""
        self.body = await self._client._patch(self.name, self.namespace, {"spec": {"suspended": False}})
        return await self.wait_ready(timeout) if wait else self

    async def delete(self, *, wait: bool = False, timeout: float = DEFAULT_DELETE_TIMEOUT) -> None:
        """Delete the Sandbox (its pod and children go with it); with ``wait``, until it is gone."""
        await self._client.delete(self.name, wait=wait, timeout=timeout, namespace=self.namespace)

    async def touch(self) -> None:
        """Report activity now (pushes back the idle timeout); commands and file operations do it themselves."""
        await self._client._activity(self.namespace, self.name, force=True)

    # --- commands -----------------------------------------------------------------------------------------------

    async def run(
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
        """Run a command to its end. ``command`` is an argv list; a string needs ``shell=True`` (then ``sh -c``).
        At ``timeout`` seconds its whole process group is killed inside the sandbox and ``timed_out`` is set.
        Each stream keeps at most ``max_output_bytes``; the callbacks get every chunk as it arrives."""
        process = await self.start(
            command,
            shell=shell,
            timeout=timeout,
            cwd=cwd,
            env=env,
            stdin=stdin is not None,
            max_output_bytes=max_output_bytes,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
        if stdin is not None:
            # A command may end without reading all of its input; its result says what happened.
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await process.write(stdin)
                await process.close_stdin()
        try:
            return await process.wait()
        except (ExecError, SandboxNotFoundError) as error:
            raise await self._explained(error) from error

    async def start(
        self,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> Process:
        """Start a command and return at once with a handle to wait for it, read its output, write to its stdin
        (``stdin=True``) and kill it. ``timeout`` (None: none) still kills it inside the sandbox."""
        if max_output_bytes < 0:
            raise ValueError(f"max_output_bytes must be 0 or more, not {max_output_bytes}")
        argv = wrapped_argv(command_argv(command, shell_command=shell), timeout, cwd, env)
        session = await self._open(argv, stdin=stdin)
        return Process(session, self._signal, timeout, max_output_bytes, on_stdout, on_stderr, cwd or "", stdin)

    async def _signal(self, signal: str, pgid: int) -> None:
        session = await self._open(shell.argv(shell.SIGNAL, "sandbox-signal", signal, str(pgid)), stdin=False)
        try:
            async for _ in session.frames():
                pass
        finally:
            await session.close()

    async def _open(self, argv: Sequence[str], *, stdin: bool, tty: bool = False) -> ExecSession:
        self._client._report_activity(self.namespace, self.name)
        try:
            return await open_exec(
                self._client.ws_api, self.namespace, self.pod_name, c.CONTAINER_NAME, argv, stdin=stdin, tty=tty
            )
        except (ExecError, SandboxNotFoundError) as error:
            raise await self._explained(error) from error

    async def _explained(self, error: SandboxError) -> SandboxError:
        """An exec failure explained by the Sandbox's state when it is not Ready (expired, suspended, deleted...)."""
        try:
            await self.refresh()
        except SandboxNotFoundError:
            return SandboxNotFoundError(f"sandbox {self.namespace}/{self.name} no longer exists")
        except SandboxError:
            return error
        if self.ready:
            return error
        condition = _condition(self.body, c.ConditionType.READY)
        return SandboxNotReadyError(
            self.name, self.phase, condition.get("reason"), condition.get("message"), "is not ready for commands"
        )

    async def open_terminal(self, command: Sequence[str] = ("sh",)) -> ExecSession:
        """An interactive session with a TTY (stdin and stdout only), for shells: the CLI's ``shell``."""
        return await self._open(command_argv(command, shell_command=False), stdin=True, tty=True)

    async def _explaining(self, frames: AsyncGenerator[tuple[Channel, bytes]]) -> AsyncGenerator[tuple[Channel, bytes]]:
        """The frames, with an exec failure explained by the Sandbox's state."""
        try:
            async for frame in frames:
                yield frame
        except ExecError as error:
            raise await self._explained(error) from error

    async def _exec_output(self, argv: Sequence[str], stdin: bytes | IO[bytes] | None, max_stdout: int) -> ExecOutput:
        """Run a helper script within FILE_OPERATION_TIMEOUT; stdout beyond ``max_stdout`` ends the read."""
        try:
            async with asyncio.timeout(FILE_OPERATION_TIMEOUT):
                return await self._exec_output_unbounded(argv, stdin, max_stdout)
        except TimeoutError:
            raise ExecError(f"a file operation in {self.name} took longer than {FILE_OPERATION_TIMEOUT:.0f}s") from None

    async def _exec_output_unbounded(
        self, argv: Sequence[str], stdin: bytes | IO[bytes] | None, max_stdout: int
    ) -> ExecOutput:
        session = await self._open(argv, stdin=stdin is not None)
        stdout, stderr, overflow = bytearray(), bytearray(), False

        async def feed() -> None:
            # A script that refuses (a directory in the way, a read-only file system) stops reading: its exit
            # status and stderr say why, not the broken pipe.
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                if isinstance(stdin, bytes):
                    await session.write(stdin)
                elif stdin is not None:
                    while chunk := stdin.read(STDIN_READ_CHUNK):
                        await session.write(chunk)
                await session.close_stdin()

        writer = asyncio.create_task(feed()) if stdin is not None else None
        try:
            async for channel, data in self._explaining(session.frames()):
                if channel is Channel.STDOUT:
                    stdout += data
                    if len(stdout) > max_stdout:
                        overflow = True
                        break
                elif len(stderr) < 64 * 1024:
                    stderr += data
            if writer is not None:
                await writer
        finally:
            if writer is not None and not writer.done():
                writer.cancel()
            await session.close()
        if overflow:
            return ExecOutput(-1, bytes(stdout), bytes(stderr), overflow=True)
        if session.status is None:
            raise ExecError("the exec connection ended without an exit status")
        return ExecOutput(session.status.code, bytes(stdout), bytes(stderr))


class SandboxClient:
    """Sandboxes in one namespace, through the Kubernetes API with the caller's credentials.

    ``async with await SandboxClient.connect() as client: sandbox = await client.get_or_create({"user": "alice"},
    image="python:3.11-slim")``.
    """

    def __init__(self, api_client: ApiClient, ws_api: WsApiClient, namespace: str) -> None:
        self.api_client, self.ws_api, self.namespace = api_client, ws_api, namespace
        self._objects = CustomObjectsApi(api_client)
        self._untyped_objects: Any = self._objects  # the stubs omit _content_type, which a merge patch needs
        self._last_activity: dict[tuple[str, str], float] = {}
        self._activity_tasks: set[asyncio.Task[None]] = set()
        self._activity_warned = False

    @classmethod
    async def connect(
        cls,
        *,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        impersonate: Impersonation | None = None,
    ) -> SandboxClient:
        """A client with the caller's credentials: the kubeconfig (KUBECONFIG, ~/.kube/config) or, inside a pod,
        its service account. The namespace defaults to the kubeconfig context's, or the pod's."""
        configuration, default_namespace = await load_configuration(kubeconfig, context)
        return cls.from_configuration(configuration, namespace or default_namespace, impersonate=impersonate)

    @classmethod
    def from_configuration(
        cls, configuration: Configuration, namespace: str, *, impersonate: Impersonation | None = None
    ) -> SandboxClient:
        """A client from loaded credentials (see ``load_configuration``); with ``impersonate``, every request acts as
        that identity (a server acting for its callers: its own credentials need ``impersonate`` on them)."""
        # WebSocket pings find a connection that died silently (a read would otherwise wait forever).
        api_client, ws_api = ApiClient(configuration), WsApiClient(configuration, heartbeat=WS_HEARTBEAT_SECONDS)
        # Not the exec client's: kubernetes_asyncio opens its WebSockets without the proxy setting, so there the
        # session's own reading of the environment is what reaches an API server behind a proxy.
        resolve_environment_once(api_client)
        if impersonate is not None:
            for client in (api_client, ws_api):
                for name, value in impersonate.headers():
                    client.rest_client.pool_manager.headers.add(name, value)
        return cls(api_client, ws_api, namespace)

    async def close(self) -> None:
        """Finish pending activity reports and close the connections."""
        if self._activity_tasks:
            await asyncio.gather(*self._activity_tasks, return_exceptions=True)
        await self.api_client.close()
        await self.ws_api.close()

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- sandboxes ----------------------------------------------------------------------------------------------

    async def create(
        self,
        name: str | None = None,
        *,
        image: str | None = None,
        template: str | None = None,
        command: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        ttl: float | timedelta | None = None,
        idle_timeout: float | timedelta | None = None,
        cpu: str | None = None,
        memory: str | None = None,
        spec: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        namespace: str | None = None,
        wait: bool = True,
        timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> Sandbox:
        """Create a Sandbox (named ``name``, or ``sandbox-<random>``) and, by default, wait until it is Ready.
        Without ``command`` the container idles (a shell loop), ready for commands. ``template`` (instead of
        ``image``) names a SandboxTemplate: the sandbox starts from a warm pod when one of its pools has one."""
        body = self._manifest(
            name,
            namespace,
            labels,
            annotations,
            build_spec(
                image=image,
                template=template,
                command=command,
                args=args,
                env=env,
                ttl=ttl,
                idle_timeout=idle_timeout,
                cpu=cpu,
                memory=memory,
                spec=spec,
            ),
        )
        created = await self._call(
            "create",
            namespace or self.namespace,
            lambda: self._objects.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace or self.namespace, c.PLURAL, body
            ),
        )
        sandbox = Sandbox(self, created)
        return await sandbox.wait_ready(timeout) if wait else sandbox

    async def get_or_create(
        self,
        key: Mapping[str, str],
        *,
        image: str | None = None,
        template: str | None = None,
        name_prefix: str = keys.DEFAULT_NAME_PREFIX,
        namespace: str | None = None,
        wait: bool = True,
        timeout: float = DEFAULT_READY_TIMEOUT,
        **options: Any,
    ) -> Sandbox:
        """The Sandbox for ``key`` (e.g. {"user": ..., "project": ...}): the existing one, or a new one made with
        ``image`` (or ``template``) and ``options`` (those of ``create``). Safe from any number of processes at once:
        the name comes from the key, and the API server creates it once. A Sandbox being deleted is waited for, then
        made again."""
        name = keys.sandbox_name(key, name_prefix)
        namespace = namespace or self.namespace
        deadline = time.monotonic() + timeout
        chosen = {k: options.pop(k) for k in list(options) if k in _SPEC_OPTIONS}
        spec = build_spec(image=image, template=template, **chosen)
        if options:
            raise TypeError(f"get_or_create() got unexpected arguments: {', '.join(sorted(options))}")
        metadata = keys.key_metadata(key)
        body = self._manifest(name, namespace, metadata["labels"], metadata["annotations"], spec)
        wanted = keys.validate_key(key)
        while True:  # read first: the usual case is a Sandbox that exists, one request
            try:
                found = await self._get_body(name, namespace)
            except SandboxNotFoundError:
                try:
                    found = await self._call(
                        "create",
                        namespace,
                        lambda: self._objects.create_namespaced_custom_object(
                            c.GROUP, c.VERSION, namespace, c.PLURAL, body
                        ),
                    )
                except SandboxExistsError:
                    continue  # another caller created it between our read and our create: read it
            else:
                if keys.key_of(found) != wanted:
                    raise KeyConflictError(
                        f"sandbox {namespace}/{name} exists and was not made for this key; "
                        "pass another name_prefix or remove it"
                    )
                if found["metadata"].get("deletionTimestamp"):
                    await self._wait_gone(name, namespace, deadline - time.monotonic())
                    continue
            sandbox = Sandbox(self, found)
            return await sandbox.wait_ready(max(deadline - time.monotonic(), 1.0)) if wait else sandbox

    async def get(self, name: str, *, namespace: str | None = None) -> Sandbox:
        """An existing Sandbox by name (reconnect after a restart); SandboxNotFoundError if there is none."""
        return Sandbox(self, await self._get_body(name, namespace or self.namespace))

    async def find(
        self, key: Mapping[str, str], *, name_prefix: str = keys.DEFAULT_NAME_PREFIX, namespace: str | None = None
    ) -> Sandbox | None:
        """The Sandbox for ``key`` if there is one."""
        try:
            sandbox = await self.get(keys.sandbox_name(key, name_prefix), namespace=namespace)
        except SandboxNotFoundError:
            return None
        return sandbox if sandbox.key == keys.validate_key(key) else None

    async def list(
        self, key: Mapping[str, str] | None = None, *, label_selector: str | None = None, namespace: str | None = None
    ) -> list[Sandbox]:
        """Sandboxes in the namespace; with ``key``, those whose key has these parts (e.g. {"user": "alice"})."""
        selectors = [keys.key_selector(key)] if key is not None else []
        if label_selector:
            selectors.append(label_selector)
        namespace = namespace or self.namespace
        query: dict[str, Any] = {"label_selector": ",".join(selectors)} if selectors else {}
        listed = await self._call(
            "list",
            namespace,
            lambda: self._objects.list_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.PLURAL,
                **query,
            ),
        )
        wanted = keys.validate_key(key, partial=True) if key is not None else {}
        found = [Sandbox(self, item) for item in listed.get("items") or []]
        # Labels hold hashes of the values: compare the values themselves too.
        return [s for s in found if all((s.key or {}).get(part) == value for part, value in wanted.items())]

    async def delete(
        self, name: str, *, wait: bool = False, timeout: float = DEFAULT_DELETE_TIMEOUT, namespace: str | None = None
    ) -> None:
        """Delete a Sandbox by name (nothing if it is already gone); with ``wait``, until it is gone."""
        namespace = namespace or self.namespace
        try:
            await self._call(
                "delete",
                namespace,
                lambda: self._objects.delete_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, name),
            )
        except SandboxNotFoundError:
            return
        if wait:
            await self._wait_gone(name, namespace, timeout)

    # --- plumbing -----------------------------------------------------------------------------------------------

    def _manifest(
        self,
        name: str | None,
        namespace: str | None,
        labels: Mapping[str, str] | None,
        annotations: Mapping[str, str] | None,
        spec: dict[str, Any],
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"namespace": namespace or self.namespace}
        if name is None:
            metadata["generateName"] = f"{keys.DEFAULT_NAME_PREFIX}-"
        else:
            metadata["name"] = name
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": metadata, "spec": spec}

    async def _call(self, verb: str, namespace: str, request: Callable[[], Awaitable[T]], retries: int = 4) -> T:
        """One API request, retried on throttling, server errors and lost connections; a create only on throttling
        (after a lost connection or a server error it may have happened: a retry would make a second object).
        Errors become SDK errors naming what was refused."""
        retriable = {429} if verb == "create" else TRANSIENT_STATUSES
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                return await request()
            except ApiException as error:
                if error.status == 403:
                    message = _api_message(error)
                    hint = message if "impersonate" in message else ""  # the acting server lacks a permission
                    raise AccessDeniedError(verb, c.PLURAL, namespace, hint) from None
                if error.status == 404:
                    raise SandboxNotFoundError(_api_message(error) or f"not found in {namespace}") from None
                if error.status == 409 and verb == "create":
                    raise SandboxExistsError(f"sandbox {_api_name(error)} already exists in {namespace}") from None
                if error.status == 422 or error.status == 400:
                    raise InvalidSpecError(_api_message(error)) from None
                if error.status not in retriable or attempt == retries:
                    raise SandboxError(
                        f"{verb} {c.PLURAL} in {namespace}: HTTP {error.status} {_api_message(error)}"
                    ) from None
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                if attempt == retries or verb == "create":
                    raise SandboxError(f"{verb} {c.PLURAL} in {namespace}: {error}") from error
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def _get_body(self, name: str, namespace: str) -> dict[str, Any]:
        return await self._call(
            "get",
            namespace,
            lambda: self._objects.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, name),
        )

    async def _patch(self, name: str, namespace: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call(
            "patch",
            namespace,
            lambda: self._untyped_objects.patch_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.PLURAL, name, patch, _content_type="application/merge-patch+json"
            ),
        )

    async def _events(self, name: str, namespace: str, timeout: float) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """Watch events of one Sandbox (its current state first), until ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                async with watch.Watch() as watcher, asyncio.timeout(left + 5):
                    stream = watcher.stream(
                        self._objects.list_namespaced_custom_object,
                        c.GROUP,
                        c.VERSION,
                        namespace,
                        c.PLURAL,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=max(1, int(left)),
                    )
                    async for event in stream:
                        yield str(event["type"]), dict(event["object"])
            except ApiException as error:
                if error.status == 403:
                    raise AccessDeniedError("watch", c.PLURAL, namespace) from None
                if error.status not in TRANSIENT_STATUSES and error.status != 410:
                    message = f"watch {c.PLURAL} in {namespace}: HTTP {error.status} {_api_message(error)}"
                    raise SandboxError(message) from None
                await asyncio.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
            except aiohttp.ClientError:  # a dropped watch: watch again until the deadline
                await asyncio.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
            except TimeoutError:
                return

    async def _wait(self, name: str, namespace: str, timeout: float) -> dict[str, Any]:
        last: Mapping[str, Any] | None = None
        async with contextlib.aclosing(self._events(name, namespace, timeout)) as events:
            async for kind, body in events:
                if kind == "DELETED":
                    raise SandboxNotFoundError(f"sandbox {namespace}/{name} was deleted while waiting for it")
                if kind == "ERROR":
                    continue
                last = body
                if _verdict(Sandbox(self, body)):
                    return body
        why = f"was not ready within {timeout:.0f}s"
        if last is None:
            # Not even its current state came: the wait says so rather than blame the operator.
            why += f"; the watch of sandboxes in {namespace} brought no event of it"
        elif not (last.get("status") or {}).get("conditions"):
            why += f"; no status was written in that time: is an operator serving namespace {namespace}?"
        condition = _condition(last or {}, c.ConditionType.READY)
        phase = ((last or {}).get("status") or {}).get("phase")
        raise WaitTimeoutError(name, phase, condition.get("reason"), condition.get("message"), why)

    async def _wait_gone(self, name: str, namespace: str, timeout: float) -> None:
        async with contextlib.aclosing(self._events(name, namespace, max(timeout, 1.0))) as events:
            async for kind, _ in events:
                if kind == "DELETED":
                    return
        try:
            await self._get_body(name, namespace)
        except SandboxNotFoundError:
            return
        raise WaitTimeoutError(name, "Terminating", None, None, f"was not deleted within {timeout:.0f}s")

    def _report_activity(self, namespace: str, name: str) -> None:
        """Bump the last-activity annotation in the background, at most every ACTIVITY_INTERVAL per sandbox."""
        now = time.monotonic()
        if now - self._last_activity.get((namespace, name), -ACTIVITY_INTERVAL) < ACTIVITY_INTERVAL:
            return
        self._last_activity[(namespace, name)] = now
        task = asyncio.create_task(self._activity(namespace, name))
        self._activity_tasks.add(task)
        task.add_done_callback(self._activity_tasks.discard)

    async def _activity(self, namespace: str, name: str, force: bool = False) -> None:
        patch = {"metadata": {"annotations": {c.ANNOTATION_LAST_ACTIVITY: format_time(datetime.now(UTC))}}}
        if force:
            self._last_activity[(namespace, name)] = time.monotonic()
            await self._patch(name, namespace, patch)
            return
        try:
            await self._patch(name, namespace, patch)
        except SandboxError as error:
            if not self._activity_warned:  # idle expiry then counts from the last reported activity
                log.warning("cannot report activity on sandbox %s/%s: %s", namespace, name, error)
                self._activity_warned = True


_SPEC_OPTIONS: Final = frozenset({"command", "args", "env", "ttl", "idle_timeout", "cpu", "memory", "spec"})


# Phases a Sandbox does not leave by itself once the operator has seen its current spec.
_FINAL_PHASES: Final = frozenset(
    {c.SandboxPhase.FAILED, c.SandboxPhase.EXPIRED, c.SandboxPhase.SUSPENDED, c.SandboxPhase.TERMINATING}
)


def _verdict(sandbox: Sandbox) -> bool:
    """True when Ready; SandboxFailedError when it cannot become Ready; False to keep waiting."""
    if sandbox.ready:
        return True
    if sandbox._observed() and sandbox.phase in _FINAL_PHASES:
        condition = _condition(sandbox.body, c.ConditionType.READY)
        raise SandboxFailedError(
            sandbox.name, sandbox.phase, condition.get("reason"), condition.get("message"), "cannot become ready"
        )
    return False


def _api_name(error: ApiException) -> str:
    """The object name a refusal names."""
    try:
        return str((json.loads(error.body or "{}").get("details") or {}).get("name") or "of that name")
    except ValueError:
        return "of that name"


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason or "")
    except ValueError:
        return str(error.reason or "")


def _any_file(paths: str) -> bool:
    """Whether any of the kubeconfig paths (os.pathsep-separated, ~ expanded) exists: a local stat, not I/O to wait
    for."""
    return any(os.path.exists(os.path.expanduser(path)) for path in paths.split(os.pathsep))


def _read_text(path: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
        return handle.read().strip()
    return None


async def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> tuple[Configuration, str]:
    """Credentials from the kubeconfig (KUBECONFIG, ~/.kube/config) or, inside a pod, its service account; and the
    default namespace (the context's, or the pod's)."""
    configuration = Configuration()
    try:
        return configuration, await _load_credentials(configuration, kubeconfig, context)
    except kube_config.ConfigException as error:
        raise SandboxError(
            f"no usable Kubernetes credentials ({error}): set KUBECONFIG or pass kubeconfig=, or run in a pod"
        ) from None


async def _load_credentials(configuration: Configuration, kubeconfig: str | None, context: str | None) -> str:
    """Fill ``configuration`` from the kubeconfig, or the pod's service account; returns the default namespace."""
    in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")
    if in_cluster:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return _read_text(SERVICE_ACCOUNT_NAMESPACE) or "default"
    paths = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if not _any_file(paths):
        raise kube_config.ConfigException(f"no kubeconfig at {paths}")
    await kube_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    contexts, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)
    chosen = next((item for item in contexts if item["name"] == context), active) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
