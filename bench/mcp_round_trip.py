"""The MCP server over streamable HTTP on the real node: a tool-call round trip (`run_command` with `true`) next to
the SDK's own round trip (`sandbox.run(["true"])`) on the same sandbox, in one run.

    .venv/bin/python bench/mcp_round_trip.py --rounds 100

The server runs as a local process with a user bound to exactly its ClusterRole (token reviews, impersonation); the
caller is a service account with the tenant roles, authenticated by a token from the TokenRequest API, as in-cluster
agents are. Prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
from kubernetes import client
from localcluster.handle import Cluster
from localcluster.ports import free_port
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from realnode import operator_namespace, percentile

from sandbox_operator.api import names as c
from sandbox_operator.mcp_server.rbac import SERVER_RULES
from sandbox_operator.sdk import Impersonation, SandboxClient, load_configuration


def summary(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"{label:<44} p50 {percentile(ms, 0.5):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   (n={len(ms)})"


def grant(cluster: Cluster, namespace: str, server_user: str) -> str:
    """The caller (a service account with the tenant roles) and the server (a user with SERVER_RULES); the token."""
    api = cluster.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "agent"}})
    for role in (c.TENANT_CLUSTER_ROLE, c.TENANT_EXEC_CLUSTER_ROLE):
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}],
        })
    rbac.create_cluster_role({"metadata": {"name": server_user}, "rules": SERVER_RULES})
    rbac.create_cluster_role_binding({
        "metadata": {"name": server_user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": server_user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": server_user}],
    })
    return str(cluster.kubectl("create", "token", "agent", "-n", namespace, "--audience", "sandbox-mcp").stdout.strip())


async def measure(url: str, token: str, cluster: Cluster, namespace: str, rounds: int) -> dict[str, Any]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300)
    async with Client(streamable_http_client(url, http_client=http)) as session:
        first = await session.call_tool("run_command", {"command": ["true"]})  # creates the session's sandbox
        name = first.structured_content["sandbox"] if first.structured_content else None
        assert name, first.content
        for _ in range(5):
            await session.call_tool("run_command", {"command": ["true"], "sandbox": name})
        tool_times = []
        for _ in range(rounds):
            started = time.perf_counter()
            result = await session.call_tool("run_command", {"command": ["true"], "sandbox": name})
            tool_times.append(time.perf_counter() - started)
            assert not result.is_error, result.content
    # The SDK as the same caller (impersonated, as the server does), on the same sandbox.
    configuration, _ = await load_configuration(str(cluster.kubeconfig))
    caller = Impersonation(f"system:serviceaccount:{namespace}:agent",
                           ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))
    sdk_times = []
    async with SandboxClient.from_configuration(configuration, namespace, impersonate=caller) as sandboxes:
        sandbox = await sandboxes.get(name)
        for _ in range(5):
            await sandbox.run(["true"])
        for _ in range(rounds):
            started = time.perf_counter()
            await sandbox.run(["true"])
            sdk_times.append(time.perf_counter() - started)
    return {"tool": tool_times, "sdk": sdk_times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="round trips per method (default 100)")
    args = parser.parse_args()
    server_user = f"bench-mcp-{uuid.uuid4().hex[:6]}"
    with operator_namespace("bench-mcp") as (cluster, namespace), tempfile.TemporaryDirectory() as scratch:
        token = grant(cluster, namespace, server_user)
        port = free_port()
        kubeconfig = cluster.user_kubeconfig(Path(scratch) / "server.kubeconfig", server_user)
        env = {**os.environ, "SANDBOX_MCP_PORT": str(port), "SANDBOX_MCP_IMAGE": "busybox:1.35.0",
               "SANDBOX_MCP_CPU": "200m", "SANDBOX_MCP_MEMORY": "128Mi"}
        log = (Path(scratch) / "mcp.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "sandbox_operator.mcp_server", "--transport", "http",
                                   "--kubeconfig", str(kubeconfig)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            for _ in range(100):
                try:
                    if httpx2.post(url, json={}).status_code == 401:
                        break
                except httpx2.TransportError:
                    time.sleep(0.1)
            numbers = asyncio.run(measure(url, token, cluster, namespace, args.rounds))
        finally:
            server.terminate()
            server.wait(timeout=30)
            rbac = client.RbacAuthorizationV1Api(cluster.api_client())
            rbac.delete_cluster_role_binding(server_user)
            rbac.delete_cluster_role(server_user)
    print(summary("MCP run_command(['true']) over HTTP", numbers["tool"]))
    print(summary("SDK sandbox.run(['true']) (same caller)", numbers["sdk"]))
    ratio = percentile(numbers["tool"], 0.5) / percentile(numbers["sdk"], 0.5)
    print(f"MCP p50 / SDK p50: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
