"""The SDK on real containers: code runs, timeouts leave nothing behind, output and files stay within their limits,
many callers share one sandbox per key, activity is reported, and exec access follows the Tenant."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from localcluster.handle import Cluster

from sandbox_operator.api import names as c
from sandbox_operator.sdk import (
    AccessDeniedError,
    FileTooLargeError,
    Sandbox,
    SandboxClient,
    SandboxFailedError,
    SandboxFileError,
    SandboxFileNotFoundError,
)
from sandbox_operator.sdk.client import ACTIVITY_INTERVAL
from tests.integration.tenant_helpers import install_tenant_policy, tenant
from tests.node.conftest import placed_operator
from tests.waiting import wait_for

pytestmark = pytest.mark.node

PYTHON = "python:3.11-slim"  # the local node holds it under its public name
SMALL: dict[str, Any] = {"cpu": "200m", "memory": "128Mi"}
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def connect(cluster: Cluster, namespace: str, kubeconfig: Path | None = None) -> Awaitable[SandboxClient]:
    return SandboxClient.connect(namespace=namespace, kubeconfig=str(kubeconfig or cluster.kubeconfig))


def with_sandbox(
    cluster: Cluster, namespace: str, name: str, body: Callable[[Sandbox], Awaitable[T]]
) -> T:
    """Run ``body`` with a fresh client and the named sandbox (each test runs its own event loop)."""

    async def go() -> T:
        async with await connect(cluster, namespace) as sandboxes:
            return await body(await sandboxes.get(name))

    return run(go())


@pytest.fixture(scope="module")
def shared(cluster: Cluster, sdk_namespace: str) -> str:
    """One Ready python sandbox for the tests that only run things in it."""

    async def make() -> str:
        async with await connect(cluster, sdk_namespace) as sandboxes:
            sandbox = await sandboxes.get_or_create({"test": "shared"}, image=PYTHON, ttl=1800, **SMALL)
            return sandbox.name

    return run(make())


def processes(cluster: Cluster, namespace: str, name: str) -> str:
    """The sandbox's process list, from a second exec."""

    async def ps(sandbox: Sandbox) -> str:
        return (await sandbox.run(["ps", "-o", "pid,args"])).text

    return with_sandbox(cluster, namespace, name, ps)


def test_python_code_runs_and_its_output_and_exit_code_come_back(
    cluster: Cluster, sdk_namespace: str, shared: str
) -> None:
    async def body(sandbox: Sandbox) -> None:
        script = "import sys, platform; print(sum(range(10)), platform.python_version()); sys.exit(3)"
        result = await sandbox.run(["python3", "-c", script])
        assert result.exit_code == 3 and not result.timed_out
        assert result.text.split()[0] == "45" and result.text.split()[1].startswith("3.11")
        echoed = await sandbox.run(["python3", "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
                                   stdin=bytes(range(256)))
        assert echoed.stdout == bytes(range(256))
        shell = await sandbox.run('echo "$GREETING from $(pwd)"', shell=True, env={"GREETING": "hi; id"}, cwd="/tmp")
        assert shell.text == "hi; id from /tmp\n"

    with_sandbox(cluster, sdk_namespace, shared, body)


def test_a_timeout_kills_the_commands_whole_process_group(cluster: Cluster, sdk_namespace: str, shared: str) -> None:
    async def body(sandbox: Sandbox) -> None:
        started = time.monotonic()
        result = await sandbox.run(["sh", "-c", "sleep 301 & (sleep 302; echo late) & echo begun; sleep 303"],
                                   timeout=2)
        assert result.timed_out and result.exit_code == 137 and result.text == "begun\n"
        assert time.monotonic() - started < 15

    with_sandbox(cluster, sdk_namespace, shared, body)
    left = processes(cluster, sdk_namespace, shared)
    assert "sleep 30" not in left, f"a process of the command survived:\n{left}"


def test_a_background_command_can_be_read_and_killed(cluster: Cluster, sdk_namespace: str, shared: str) -> None:
    async def body(sandbox: Sandbox) -> None:
        process = await sandbox.start(["sh", "-c", "echo started; sleep 304 & sleep 305"])
        await asyncio.wait_for(_until(lambda: process.output()[0] == b"started\n"), 20)
        assert not process.done and process.pgid is not None
        await process.kill()
        result = await process.wait(timeout=20)
        assert result.exit_code == 137 and not result.timed_out

    with_sandbox(cluster, sdk_namespace, shared, body)
    assert "sleep 30" not in processes(cluster, sdk_namespace, shared)


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


def test_the_output_cap_bounds_client_memory_whatever_the_command_prints(
    cluster: Cluster, sdk_namespace: str, shared: str
) -> None:
    printed = 64 * 1024 * 1024
    cap = 1024 * 1024
    streamed = [0]

    async def body(sandbox: Sandbox) -> None:
        def count(chunk: bytes) -> None:
            streamed[0] += len(chunk)

        tracemalloc.start()
        try:
            result = await sandbox.run(["head", "-c", str(printed), "/dev/zero"], max_output_bytes=cap,
                                       on_stdout=count)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.exit_code == 0 and result.truncated and len(result.stdout) == cap
        assert streamed[0] == printed, "the callback saw every byte"
        assert peak < 16 * 1024 * 1024, f"{peak} bytes held for {printed} printed with a {cap} cap"

    with_sandbox(cluster, sdk_namespace, shared, body)


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 32 * 1024 * 1024], ids=["0B", "1B", "1MiB", "32MiB"])
def test_files_round_trip_byte_for_byte(cluster: Cluster, sdk_namespace: str, shared: str, size: int) -> None:
    data = os.urandom(size)

    async def body(sandbox: Sandbox) -> None:
        path = f"/tmp/roundtrip/{size}.bin"
        await sandbox.files.write(path, data)
        back = await sandbox.files.read(path)
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
        inside = await sandbox.run(["sha256sum", path])
        assert inside.text.split()[0] == hashlib.sha256(data).hexdigest()
        [entry] = [e for e in await sandbox.files.list("/tmp/roundtrip") if e.name == f"{size}.bin"]
        assert entry.type == "file" and entry.size == size

    with_sandbox(cluster, sdk_namespace, shared, body)


def test_file_errors_say_what_went_wrong(cluster: Cluster, sdk_namespace: str, shared: str) -> None:
    async def body(sandbox: Sandbox) -> None:
        with pytest.raises(SandboxFileNotFoundError):
            await sandbox.files.read("/tmp/no-such-file")
        with pytest.raises(SandboxFileError) as read_only:
            await sandbox.files.write("/etc/probe", b"x")
        assert read_only.value.errno == 30, read_only.value  # EROFS: the root filesystem is read-only
        await sandbox.files.write("/tmp/big", b"x" * 2048)
        with pytest.raises(FileTooLargeError, match="max_bytes=1024"):
            await sandbox.files.read("/tmp/big", max_bytes=1024)
        with pytest.raises(FileTooLargeError):
            await sandbox.files.write("/tmp/big", b"x" * 2048, max_bytes=1024)
        with pytest.raises(SandboxFileNotFoundError):
            await sandbox.files.list("/tmp/no-such-dir")
        await sandbox.files.remove("/tmp/big")
        assert not await sandbox.files.exists("/tmp/big")

    with_sandbox(cluster, sdk_namespace, shared, body)


def test_directories_upload_and_download_as_trees(
    cluster: Cluster, sdk_namespace: str, shared: str, tmp_path: Path
) -> None:
    source = tmp_path / "project"
    (source / "pkg").mkdir(parents=True)
    (source / "main.py").write_text("from pkg import value\nprint(value)\n")
    (source / "pkg" / "__init__.py").write_text("value = 'from a package'\n")

    async def body(sandbox: Sandbox) -> None:
        await sandbox.files.upload(source, "/tmp/up")
        result = await sandbox.run(["python3", "main.py"], cwd="/tmp/up/project")
        assert result.text == "from a package\n", result
        await sandbox.run(["sh", "-c", "echo made > /tmp/up/project/pkg/out.txt"])
        local = await sandbox.files.download("/tmp/up/project", tmp_path / "back")
        assert (local / "pkg" / "out.txt").read_text() == "made\n"
        assert (local / "main.py").read_bytes() == (source / "main.py").read_bytes()
        await sandbox.files.remove("/tmp/up", recursive=True)

    with_sandbox(cluster, sdk_namespace, shared, body)


GET_OR_CREATE = """
import asyncio, sys
from sandbox_operator.sdk import SandboxClient
async def main():
    async with await SandboxClient.connect(namespace=sys.argv[1], kubeconfig=sys.argv[2]) as sandboxes:
        sandbox = await sandboxes.get_or_create({"user": "same", "project": sys.argv[3]}, image="busybox:1.35.0",
                                                cpu="50m", memory="32Mi", wait=False)
        print(sandbox.name)
asyncio.run(main())
"""


def test_twenty_processes_calling_get_or_create_with_one_key_make_one_sandbox(
    cluster: Cluster, sdk_namespace: str
) -> None:
    project = uuid.uuid4().hex[:8]
    callers = [
        subprocess.Popen([sys.executable, "-c", GET_OR_CREATE, sdk_namespace, str(cluster.kubeconfig), project],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(20)
    ]
    outputs = [caller.communicate(timeout=120) for caller in callers]
    assert all(caller.returncode == 0 for caller in callers), [err for _, err in outputs if err][:2]
    names = {out.strip() for out, _ in outputs}
    assert len(names) == 1

    async def listed() -> list[str]:
        async with await connect(cluster, sdk_namespace) as sandboxes:
            return [s.name for s in await sandboxes.list({"project": project})]

    assert run(listed()) == list(names)
    custom = client.CustomObjectsApi(cluster.api_client())
    every = custom.list_namespaced_custom_object(c.GROUP, c.VERSION, sdk_namespace, c.PLURAL)["items"]
    assert sum(1 for item in every if project in json.dumps(item["metadata"].get("annotations", {}))) == 1


def test_fifty_commands_at_once_over_ten_sandboxes(cluster: Cluster, sdk_namespace: str) -> None:
    async def go() -> None:
        async with await connect(cluster, sdk_namespace) as sandboxes:
            fleet = await asyncio.gather(*(
                sandboxes.get_or_create({"fleet": str(index)}, image="busybox:1.35.0", cpu="50m", memory="32Mi")
                for index in range(10)
            ))
            results = await asyncio.gather(*(
                fleet[index % 10].run(["sh", "-c", f"echo {index} $(hostname)"]) for index in range(50)
            ))
            for index, result in enumerate(results):
                number, host = result.text.split()
                assert result.exit_code == 0 and number == str(index)
                assert host == fleet[index % 10].pod_name

    run(go())


def test_commands_and_file_operations_report_activity(cluster: Cluster, sdk_namespace: str, shared: str) -> None:
    def annotation(sandbox: Sandbox) -> str | None:
        return (sandbox.body["metadata"].get("annotations") or {}).get(c.ANNOTATION_LAST_ACTIVITY)

    async def body(sandbox: Sandbox) -> None:
        await asyncio.sleep(ACTIVITY_INTERVAL + 1.1)  # past the throttle, and into the next second
        before = annotation(await sandbox.refresh())
        await sandbox.files.read("/etc/hostname")
        for _ in range(100):
            after = annotation(await sandbox.refresh())
            if after != before:
                break
            await asyncio.sleep(0.1)
        assert after is not None and (before is None or after > before)
        status = (await sandbox.refresh()).body.get("status") or {}
        assert "lastActivityAt" in status or status.get("phase") == "Ready"

    with_sandbox(cluster, sdk_namespace, shared, body)


def test_waiting_for_a_sandbox_that_cannot_start_reports_its_reason(cluster: Cluster, sdk_namespace: str) -> None:
    async def go() -> None:
        async with await connect(cluster, sdk_namespace) as sandboxes:
            with pytest.raises(SandboxFailedError) as failed:
                await sandboxes.create(image="localhost/no-such-image:1", spec={"imagePullPolicy": "Never"},
                                       timeout=90, **SMALL)
            assert failed.value.reason == c.Reason.IMAGE_UNAVAILABLE, failed.value

    run(go())


def test_suspend_and_resume_keep_the_workspace(cluster: Cluster, sdk_namespace: str) -> None:
    async def go() -> None:
        async with await connect(cluster, sdk_namespace) as sandboxes:
            sandbox = await sandboxes.create(
                image="busybox:1.35.0", spec={"workspace": {"persistent": False}}, **SMALL
            )
            await sandbox.suspend()
            await _until_phase(sandbox, c.SandboxPhase.SUSPENDED)
            await sandbox.resume(timeout=90)
            assert (await sandbox.run(["true"])).ok
            await sandbox.delete(wait=True)

    run(go())


async def _until_phase(sandbox: Sandbox, phase: str) -> None:
    for _ in range(300):
        if (await sandbox.refresh()).phase == phase:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sandbox} never reached {phase}")


@pytest.fixture(scope="module")
def tenant_operator(
    cluster: Cluster, real_node: str, sdk_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An operator for one tenant namespace whose pods land on the real node; yields that namespace's tenant name."""
    install_tenant_policy(cluster)
    name = f"t-{uuid.uuid4().hex[:8]}"
    operator = placed_operator(cluster, tmp_path_factory.mktemp("tenant-operator") / "operator.log", f"{name}-ns")
    operator.start()
    try:
        yield name
    finally:
        operator.stop()


def test_exec_needs_the_tenants_exec_access_and_is_refused_with_the_missing_permission(
    cluster: Cluster, tenant_operator: str, tmp_path: Path
) -> None:
    api = cluster.api_client()
    subjects = [{"kind": "Group", "name": "team-exec"}]
    with tenant(api, subjects=subjects, name=tenant_operator,
                allowedImages=["busybox:*"]) as team:
        kubeconfig = cluster.user_kubeconfig(tmp_path / "member.kubeconfig", "member", ("team-exec",))

        async def attempt() -> Any:
            async with await connect(cluster, team.namespace, kubeconfig) as sandboxes:
                sandbox = await sandboxes.get_or_create(
                    {"user": "member"}, image="busybox:1.35.0", cpu="50m", memory="32Mi",
                    spec={"resources": {"ephemeralStorage": "100Mi"}, "workspace": {"size": "100Mi"}},
                    ttl=600,
                )
                try:
                    return await sandbox.run(["id", "-u"])
                except AccessDeniedError as error:
                    return error

        refused = run(attempt())
        assert isinstance(refused, AccessDeniedError), refused
        assert "create pods/exec" in str(refused) and "execAccess" in str(refused)

        team.patch({"execAccess": True})
        result = wait_for(lambda: _succeeded(run(attempt())), timeout=60, what="exec allowed after execAccess")
        assert result.text.strip() == str(c.SANDBOX_UID)


def _succeeded(outcome: Any) -> Any:
    return None if isinstance(outcome, Exception) else outcome


def test_the_ported_agent_manager_example_runs_code_for_a_user_and_project(
    cluster: Cluster, sdk_namespace: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
    cluster.kubectl("config", "set-context", "--current", f"--namespace={sdk_namespace}",
                    f"--kubeconfig={kubeconfig}")
    example = Path(__file__).resolve().parents[2] / "examples" / "agent_manager.py"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    answer = subprocess.run([sys.executable, str(example), "ada", "engine", "print(6 * 7)"],
                            env=env, capture_output=True, text=True, timeout=180)
    assert (answer.returncode, answer.stdout) == (0, "42\n"), answer.stderr
    runaway = subprocess.run(
        [sys.executable, str(example), "ada", "engine", "import time; time.sleep(600)"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert runaway.returncode == 124, "the example's 30 s timeout kills the code and reports it"


def test_input_a_command_or_a_refused_write_does_not_read_still_ends_it(
    cluster: Cluster, sdk_namespace: str, shared: str
) -> None:
    big = os.urandom(8 * 1024 * 1024)  # far more than a pipe holds

    async def body(sandbox: Sandbox) -> None:
        ignored = await sandbox.run(["sleep", "1"], stdin=big, timeout=30)
        assert ignored.exit_code == 0 and not ignored.timed_out and ignored.duration < 20
        await sandbox.run(["mkdir", "-p", "/tmp/a-directory"])
        with pytest.raises(SandboxFileError):
            await asyncio.wait_for(sandbox.files.write("/tmp/a-directory", big), 30)
        with pytest.raises(SandboxFileError):
            await asyncio.wait_for(sandbox.files.write("/etc/read-only", big), 30)
        talk = await sandbox.start(["sh", "-c", "read line; echo got $line"], stdin=True)
        await talk.write(b"hello\n")
        assert (await talk.wait(timeout=30)).text == "got hello\n"

    with_sandbox(cluster, sdk_namespace, shared, body)
