"""Warm pods on real containers: a sandbox claimed from a SandboxPool runs the user's commands with the same
hardening as a cold one, and no packet gets past its policy at any moment (fenced while warm, then its own)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from localcluster import node as real_node_module
from localcluster.handle import Cluster

from sandbox_operator.api import names as c
from sandbox_operator.sdk import SandboxClient
from tests.integration.test_pools import Pools
from tests.node.conftest import BUSYBOX
from tests.waiting import wait_for

pytestmark = pytest.mark.node

SMALL = {"cpu": "50m", "memory": "32Mi", "ephemeralStorage": "256Mi"}
LISTENER = ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]


@pytest.fixture(scope="module")
def node_pools(cluster: Cluster, sdk_namespace: str) -> Pools:
    """Templates and pools in a restricted namespace whose operator places sandbox (and warm) pods on the real node."""
    return Pools(cluster.api_client(), sdk_namespace)


def _template(pools: Pools, name: str, **recipe: Any) -> None:
    pools.template(name, image=BUSYBOX, resources=SMALL, **recipe)


def test_a_claimed_sandbox_runs_the_users_commands_locked_down(node_pools: Pools, cluster: Cluster) -> None:
    _template(node_pools, "shell")
    node_pools.pool("shell", "shell", 1)
    node_pools.wait_pool("shell", 1, timeout=120)

    async def use() -> dict[str, Any]:
        async with await SandboxClient.connect(namespace=node_pools.namespace,
                                               kubeconfig=str(cluster.kubeconfig)) as sandboxes:
            sandbox = await sandboxes.create("claimed", template="shell", ttl=600)
            results = {
                "uid": (await sandbox.run(["id", "-u"])).stdout.decode().strip(),
                "root": (await sandbox.run(["touch", "/probe"])).exit_code,
                "workspace": (await sandbox.run(["sh", "-c", "echo hi > /workspace/f && cat /workspace/f"])).stdout,
                "caps": (await sandbox.run(["grep", "CapEff", "/proc/self/status"])).stdout.decode().split(),
                "token": (await sandbox.run(["ls", "/var/run/secrets/kubernetes.io"])).exit_code,
                "timeout": (await sandbox.run(["sleep", "30"], timeout=1)).timed_out,
            }
            return {**results, "status": dict(sandbox.body.get("status") or {})}

    results = asyncio.run(use())
    assert results["status"]["launch"] == "Warm"
    assert results["uid"] == str(c.SANDBOX_UID)
    assert results["root"] != 0, "the root filesystem is read-only"
    assert results["workspace"] == b"hi\n"
    assert results["caps"] == ["CapEff:", "0000000000000000"]
    assert results["token"] != 0, "no service-account token"
    assert results["timeout"], "a command over its timeout is stopped"
    pod = node_pools.pod(results["status"]["podName"])
    assert pod.spec.node_name == real_node_module.NODE_NAME
    assert pod.metadata.labels[c.LABEL_POOL] == "shell"


def _reaches(cluster: Cluster, namespace: str, pod: str, ip: str) -> bool:
    """Whether an HTTP request from ``pod`` to the listener at ``ip`` is answered (busybox nc speaks enough HTTP)."""
    answer = cluster.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c",
                             f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080", check=False, timeout=30)
    return bool(answer.stdout.rstrip().endswith("\nok"))


def test_a_warm_pod_is_fenced_and_a_claimed_one_holds_to_its_own_policy_from_the_first_moment(
    node_pools: Pools, cluster: Cluster
) -> None:
    namespace = node_pools.namespace
    node_pools.custom.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, {
        "apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "listener"},
        "spec": {"image": BUSYBOX, "command": LISTENER, "resources": SMALL,
                 "network": {"ports": [{"name": "http", "port": 8080}], "readinessPort": "http"}}})
    listener_ip = wait_for(lambda: (node_pools.ready("listener") or {}).get("podIP"), timeout=120,
                           what="the listener Ready")
    allowed = {"egress": {"mode": "AllowList", "allow": [{"cidr": f"{listener_ip}/32", "ports": [{"port": 8080}]}]}}
    _template(node_pools, "isolated", command=["sleep", "3600"])
    _template(node_pools, "open", command=["sleep", "3600"], network=allowed)
    node_pools.pool("isolated", "isolated", 1)
    node_pools.pool("open", "open", 1)
    node_pools.wait_pool("isolated", 1, timeout=120)
    node_pools.wait_pool("open", 1, timeout=120)

    # Waiting in the pool: fenced, whatever its template allows.
    for pool in ("isolated", "open"):
        warm = node_pools.warm_pods(pool)[0].metadata.name
        wait_for(lambda warm=warm: not _reaches(cluster, namespace, warm, listener_ip) or None, timeout=60,
                 what=f"the fence of {pool} to hold")

    # Claimed with egress None: not one request gets through, from the first moment it is Ready.
    node_pools.sandbox("quiet", "isolated", lifetime={"ttlSeconds": 600})
    quiet = wait_for(lambda: node_pools.ready("quiet"), timeout=60, what="the isolated sandbox Ready")
    assert quiet["launch"] == "Warm"
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert not _reaches(cluster, namespace, quiet["podName"], listener_ip), "a claimed pod got out"

    # The control: claimed with the listener allowed, it gets through once its policy is in force.
    node_pools.sandbox("talker", "open", lifetime={"ttlSeconds": 600})
    talker = wait_for(lambda: node_pools.ready("talker"), timeout=60, what="the open sandbox Ready")
    assert talker["launch"] == "Warm"
    wait_for(lambda: _reaches(cluster, namespace, talker["podName"], listener_ip) or None, timeout=60,
             what="the allowed listener to answer the claimed sandbox")
    assert not _reaches(cluster, namespace, quiet["podName"], listener_ip)
