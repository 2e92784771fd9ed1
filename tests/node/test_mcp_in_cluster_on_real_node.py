"""The chart's MCP server running in the cluster: `helm install --set mcpServer.enabled=true` puts it on the real
node, hardened, and an agent's service-account token gets a command run in a sandbox through it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx2
import pytest
from kubernetes import client
from localcluster import node as real_node_module
from localcluster import operator_image
from localcluster.handle import Cluster
from localcluster.helm import CHART, helm, set_args, uninstall
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from sandbox_operator.api import names as c
from tests.integration.tenant_helpers import install_tenant_policy
from tests.node.test_helm_install_on_real_node import _containerd_socket, _exec_python, _values
from tests.node.test_helm_install_on_real_node import namespaces as namespaces  # the fixture
from tests.node.test_mcp_on_real_node import tool
from tests.waiting import wait_for

pytestmark = pytest.mark.node

PROBE = "import os; print(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"


def test_the_charts_mcp_server_serves_an_agent_token_in_the_cluster(
    cluster: Cluster, api: client.ApiClient, crds: None, namespaces: tuple[str, str]
) -> None:
    if cluster.external:
        pytest.skip("the image is imported into the local real node's containerd")
    release_ns, work_ns = namespaces
    operator_image.build()
    operator_image.import_into_node(_containerd_socket(cluster))
    release = f"mcp-{uuid.uuid4().hex[:6]}"
    values: dict[str, Any] = {
        **_values(work_ns), "replicaCount": 1, "peering.name": f"{release}-peering",
        "mcpServer.enabled": True,
        "mcpServer.extraEnv": real_node_module.apiserver_env(),
        "mcpServer.settings": {"IMAGE": "busybox:1.35.0", "CPU": "100m", "MEMORY": "64Mi"},
    }
    installed = helm("install", release, str(CHART), "--namespace", release_ns, "--wait", "--timeout", "180s",
                     *set_args(values), kubeconfig=cluster.kubeconfig, check=False)
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    try:
        if installed.returncode != 0:
            described = cluster.kubectl("describe", "pods", "-n", release_ns, check=False).stdout
            logs = cluster.kubectl("logs", "-n", release_ns, "-l", f"app.kubernetes.io/instance={release}",
                                   "--tail=30", "--all-containers", "--prefix", check=False).stdout
            pytest.fail(f"helm install failed: {installed.stderr}\n{described[-4000:]}\n{logs}")
        (pod,) = core.list_namespaced_pod(release_ns, label_selector="app.kubernetes.io/component=mcp-server").items
        assert pod.spec.node_name == real_node_module.NODE_NAME
        uid, cap_eff = _exec_python(cluster, release_ns, pod.metadata.name, PROBE).split()
        assert (uid, cap_eff) == (str(operator_image.UID), "0000000000000000")
        url = f"http://{pod.status.pod_ip}:8090/mcp"
        assert httpx2.post(url, json={}, timeout=30).status_code == 401

        install_tenant_policy(cluster)  # the ClusterRoles bound below (this release sets tenants.enabled=false)
        core.create_namespaced_service_account(work_ns, {"metadata": {"name": "agent"}})
        for role in (c.TENANT_CLUSTER_ROLE, c.TENANT_EXEC_CLUSTER_ROLE):
            rbac.create_namespaced_role_binding(work_ns, {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": work_ns}],
            })
        token = cluster.kubectl("create", "token", "agent", "-n", work_ns, "--audience", "sandbox-mcp").stdout.strip()

        async def run() -> Any:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300)
            async with Client(streamable_http_client(url, http_client=http)) as session:
                return tool(await session.call_tool("run_command", {"shell": "echo in $(hostname)"}))

        answers: list[Any] = []  # what the tool said while the sandbox was not there yet, for the failure message

        def attempt() -> Any:
            answers.append(asyncio.run(run()))
            return answers[-1] if isinstance(answers[-1], dict) else None

        try:
            result = wait_for(attempt, timeout=120, what="a command through the MCP pod")
        except pytest.fail.Exception:
            pods = cluster.kubectl("get", "pods,sandboxes", "-A", "-o", "wide", check=False).stdout
            pytest.fail(f"no command ran through the MCP pod; its last answers: {answers[-3:]}\n{pods}")
        assert result["exit_code"] == 0 and result["stdout"].startswith("in sbx-"), result
    finally:
        uninstall(release, release_ns, cluster.kubeconfig)
