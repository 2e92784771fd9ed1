"""The MCP server on real containers, through the official MCP client: over stdio as the local user, and over
streamable HTTP where each caller is identified by its token and acts as itself."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import pytest
from kubernetes import client
from localcluster.handle import Cluster
from localcluster.ports import free_port
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from sandbox_operator.api import names as c
from sandbox_operator.mcp_server.rbac import SERVER_RULES
from tests.integration.tenant_helpers import install_tenant_policy, tenant
from tests.node.conftest import placed_operator
from tests.waiting import wait_for

pytestmark = pytest.mark.node

IDLE_SECONDS = 30


def tool(result: Any) -> Any:
    """A tool call's structured result, or the error text."""
    if result.is_error:
        return " ".join(getattr(part, "text", "") for part in result.content)
    content = result.structured_content
    return content["result"] if isinstance(content, dict) and set(content) == {"result"} else content


# --- stdio: the caller's kubeconfig ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdio_params(
    cluster: Cluster, sdk_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> StdioServerParameters:
    kubeconfig = tmp_path_factory.mktemp("mcp-stdio") / "kubeconfig"
    kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
    cluster.kubectl("config", "set-context", "--current", f"--namespace={sdk_namespace}", f"--kubeconfig={kubeconfig}")
    return StdioServerParameters(
        command=sys.executable, args=["-m", "sandbox_operator.mcp_server"],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "SANDBOX_MCP_MAX_OUTPUT_BYTES": "4096",
             "SANDBOX_MCP_CPU": "200m", "SANDBOX_MCP_MEMORY": "256Mi"},
    )


def test_over_stdio_a_session_runs_python_moves_files_and_is_bounded(stdio_params: StdioServerParameters) -> None:
    async def go() -> None:
        async with Client(stdio_params) as session:
            ran = tool(await session.call_tool("run_command", {"command": ["python3", "-c", "print(sum(range(10)))"]}))
            assert ran["exit_code"] == 0 and ran["stdout"] == "45\n", ran
            data = bytes(range(256)) * 64
            wrote = tool(await session.call_tool("write_file", {
                "path": "/tmp/mcp/blob.bin", "content": base64.b64encode(data).decode(), "encoding": "base64"}))
            assert wrote["size"] == len(data) and wrote["sandbox"] == ran["sandbox"], "one sandbox per session"
            read = tool(await session.call_tool("read_file", {"path": "/tmp/mcp/blob.bin", "encoding": "base64"}))
            assert base64.b64decode(read["content"]) == data
            listed = tool(await session.call_tool("list_files", {"path": "/tmp/mcp"}))
            assert [(e["name"], e["size"]) for e in listed] == [("blob.bin", len(data))]

            runaway = {"shell": "sleep 311 & sleep 312", "timeout_seconds": 2}
            slow = tool(await session.call_tool("run_command", runaway))
            assert slow["timed_out"] and slow["exit_code"] == 137, slow
            left = tool(await session.call_tool("run_command", {"command": ["ps", "-o", "args"]}))
            assert "sleep 31" not in left["stdout"], left

            loud = tool(await session.call_tool("run_command", {"command": ["head", "-c", "100000", "/dev/zero"]}))
            assert loud["truncated"] and len(loud["stdout"]) == 4096, "max_output_bytes=4096 from the settings"

    asyncio.run(go())


# --- HTTP: callers by token, acting as themselves ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def teams(cluster: Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tenants A and B (their own `agent` service accounts may exec), an operator for both, and the MCP server over
    HTTP running as a user bound to exactly SERVER_RULES."""
    install_tenant_policy(cluster)
    api = cluster.api_client()
    names = {team: f"t-{uuid.uuid4().hex[:8]}" for team in ("a", "b")}
    rbac = client.RbacAuthorizationV1Api(api)
    role_name = f"mcp-server-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role({"metadata": {"name": role_name}, "rules": SERVER_RULES})
    rbac.create_cluster_role_binding({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": role_name}],
    })
    scratch = tmp_path_factory.mktemp("mcp-http")
    operator = placed_operator(cluster, scratch / "operator.log", ",".join(f"{n}-ns" for n in names.values()))
    operator.start()
    port = free_port()
    log = (scratch / "mcp.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "sandbox_operator.mcp_server", "--transport", "http",
         "--kubeconfig", str(cluster.user_kubeconfig(scratch / "server.kubeconfig", role_name))],
        env={**os.environ, "SANDBOX_MCP_PORT": str(port), "SANDBOX_MCP_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
             "SANDBOX_MCP_CPU": "100m", "SANDBOX_MCP_MEMORY": "128Mi", "SANDBOX_MCP_IMAGE": "busybox:1.35.0"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        with tenant(api, name=names["a"], subjects=[{"kind": "ServiceAccount", "name": "agent",
                                                     "namespace": f"{names['a']}-ns"}],
                    execAccess=True, allowedImages=["busybox:*"]) as team_a, \
             tenant(api, name=names["b"], subjects=[{"kind": "ServiceAccount", "name": "agent",
                                                     "namespace": f"{names['b']}-ns"}],
                    execAccess=True, allowedImages=["busybox:*"]) as team_b:
            core = client.CoreV1Api(api)
            tokens = {}
            for team, handle in (("a", team_a), ("b", team_b)):
                core.create_namespaced_service_account(handle.namespace, {"metadata": {"name": "agent"}})
                tokens[team] = cluster.kubectl("create", "token", "agent", "-n", handle.namespace, "--audience",
                                               "sandbox-mcp").stdout.strip()
            # The same account's token for the API server itself: valid there, not here.
            tokens["a-for-the-api-server"] = cluster.kubectl(
                "create", "token", "agent", "-n", team_a.namespace).stdout.strip()
            wait_for(lambda: _answers(port), timeout=30, what="the MCP server listening")
            yield {"url": f"http://127.0.0.1:{port}/mcp", "tokens": tokens, "a": team_a, "b": team_b}
    finally:
        server.terminate()
        server.wait(timeout=30)
        operator.stop()
        rbac.delete_cluster_role_binding(role_name)
        rbac.delete_cluster_role(role_name)


def _answers(port: int) -> bool:
    try:
        return httpx2.post(f"http://127.0.0.1:{port}/mcp", json={}).status_code == 401
    except httpx2.TransportError:
        return False


def http_session(url: str, token: str) -> AbstractAsyncContextManager[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300)
    return Client(streamable_http_client(url, http_client=http))


def test_without_a_valid_token_the_answer_is_401_and_nothing_else(teams: dict[str, Any]) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "t", "version": "1"}}}
    tokens = teams["tokens"]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {tokens['a']}"},
                    {"Authorization": f"Bearer {tokens['a-for-the-api-server']}"}):
        answer = httpx2.post(teams["url"], json=initialize, headers={**headers, "Accept": "application/json"})
        assert answer.status_code == 401, (headers.keys(), answer.status_code)
        assert "result" not in answer.text


def test_a_tenant_member_sees_and_touches_only_its_own_namespace(teams: dict[str, Any]) -> None:
    a, b = teams["a"], teams["b"]

    async def go() -> None:
        async with http_session(teams["url"], teams["tokens"]["b"]) as as_b:
            theirs = tool(await as_b.call_tool("run_command", {"command": ["echo", "b was here"]}))
            assert theirs["stdout"] == "b was here\n", theirs
        async with http_session(teams["url"], teams["tokens"]["a"]) as as_a:
            mine = tool(await as_a.call_tool("run_command", {"command": ["id", "-u"]}))
            assert mine["stdout"].strip() == str(c.SANDBOX_UID), mine
            listed = tool(await as_a.call_tool("sandbox_list", {}))
            assert [s["namespace"] for s in listed] == [a.namespace], listed
            assert mine["sandbox"] in [s["name"] for s in listed]
            refused = tool(await as_a.call_tool("sandbox_list", {"namespace": b.namespace}))
            assert f"may not list sandboxes in namespace '{b.namespace}'" in refused, refused
            into_b = tool(await as_a.call_tool("run_command", {
                "command": ["true"], "sandbox": theirs["sandbox"], "namespace": b.namespace}))
            assert "forbidden" in into_b, into_b

    asyncio.run(go())


def test_an_idle_sessions_sandbox_expires_by_itself(teams: dict[str, Any]) -> None:
    a = teams["a"]

    async def go() -> str:
        async with http_session(teams["url"], teams["tokens"]["a"]) as session:
            return str(tool(await session.call_tool("run_command", {"command": ["true"]}))["sandbox"])

    name = asyncio.run(go())
    started = time.monotonic()
    wait_for(lambda: a.get_sandbox(name) is None, timeout=IDLE_SECONDS + 90, what=f"{name} expired and deleted")
    assert time.monotonic() - started >= IDLE_SECONDS - 10




def test_a_request_above_the_size_limit_is_refused(teams: dict[str, Any]) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    answer = httpx2.post(teams["url"], content=body, timeout=60, headers={
        "Authorization": f"Bearer {teams['tokens']['a']}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    assert answer.status_code == 413, answer.status_code
