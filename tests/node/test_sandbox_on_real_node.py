"""The operator's promises checked on real containers: a Sandbox on the real node is locked down,
its memory limit is enforced and reported, and its NetworkPolicy is enforced by kube-router."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from localcluster import node as real_node_module
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess, install_crds

from sandbox_operator.api import names as c
from tests.integration.test_sandbox_lifecycle import Sandboxes, sandbox
from tests.waiting import wait_for

pytestmark = pytest.mark.node

BUSYBOX = "busybox:1.35.0"  # the local node holds it under its public name
LISTENER = ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
HTTP = {"ports": [{"name": "http", "port": 8080}]}
SMALL = {"cpu": "50m", "memory": "32Mi", "ephemeralStorage": "256Mi"}  # the real node has 2 cores


@pytest.fixture(scope="module")
def node_sandboxes(cluster: Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    """A restricted namespace, and an operator for it that places sandbox pods on the real node."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    name = f"node-sbx-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"pod-security.kubernetes.io/enforce": "restricted"})))
    install_crds(cluster)
    placement = real_node_module.pod_placement()
    operator = OperatorProcess(
        cluster, Path(tmp_path_factory.mktemp("node-operator")) / "operator.log",
        NAMESPACES=name,
        POD_NODE_SELECTOR=json.dumps(placement["nodeSelector"]),
        POD_TOLERATIONS=json.dumps(placement["tolerations"]),
    )
    operator.start()
    try:
        yield Sandboxes(api, name)
    finally:
        operator.stop()
        core.delete_namespace(name, grace_period_seconds=0, propagation_policy="Background")


@pytest.fixture
def sh(cluster: Cluster, node_sandboxes: Sandboxes) -> Callable[..., Any]:
    """``sh(sandbox, command)``: run a shell command in the sandbox's container (kubectl exec)."""

    def run(name: str, command: str) -> Any:
        return cluster.kubectl("exec", "-n", node_sandboxes.namespace, f"sbx-{name}", "--", "sh", "-c", command,
                               check=False, timeout=30)

    return run


def ready(sandboxes: Sandboxes, name: str, **spec: Any) -> dict[str, Any]:
    sandboxes.create(sandbox(name, image=BUSYBOX, resources=SMALL, **spec))
    sandboxes.wait_condition(name, "True", "PodReady", timeout=120)
    pod = sandboxes.pod(name)
    assert pod is not None and pod.spec.node_name == real_node_module.NODE_NAME
    return sandboxes.status(name)


def test_a_sandbox_on_a_real_node_is_locked_down(node_sandboxes: Sandboxes, sh: Callable[..., Any]) -> None:
    ready(node_sandboxes, "locked")
    assert sh("locked", "id -u").stdout.strip() == str(c.SANDBOX_UID)
    assert sh("locked", "touch /probe").returncode != 0, "the root filesystem is read-only"
    assert sh("locked", "touch /workspace/probe /tmp/probe").returncode == 0, "workspace and /tmp are writable"
    cap_eff = sh("locked", "grep CapEff /proc/self/status").stdout.split()
    assert cap_eff == ["CapEff:", "0000000000000000"]
    assert sh("locked", "ls /var/run/secrets/kubernetes.io").returncode != 0, "no service-account token"


def test_a_sandbox_over_its_memory_limit_is_reported_oom_killed(node_sandboxes: Sandboxes) -> None:
    # Builds a 256 MiB string under a 32 MiB limit; without enforcement it would print and exit 0.
    hog = ["awk", 'BEGIN { s = "xxxxxxxx"; for (i = 0; i < 25; i++) s = s s; print length(s) }']
    node_sandboxes.create(sandbox("hog", image=BUSYBOX, command=hog,
                                  resources={"cpu": "200m", "memory": "32Mi", "ephemeralStorage": "256Mi"}))
    failed = node_sandboxes.wait_condition("hog", "False", "OOMKilled", timeout=120)
    assert node_sandboxes.status("hog")["phase"] == "Failed", failed


def test_a_sandbox_reaches_only_its_egress_allow_list(node_sandboxes: Sandboxes, sh: Callable[..., Any]) -> None:
    allowed_ip = ready(node_sandboxes, "allowed", command=LISTENER, network=HTTP)["podIP"]
    other_ip = ready(node_sandboxes, "other", command=LISTENER, network=HTTP)["podIP"]
    ready(node_sandboxes, "client", command=["sleep", "3600"], network={
        "egress": {"mode": "AllowList", "allow": [{"cidr": f"{allowed_ip}/32", "ports": [{"port": 8080}]}]}})
    ready(node_sandboxes, "isolated", command=["sleep", "3600"])
    ready(node_sandboxes, "wide", command=["sleep", "3600"], network={  # the control: both listeners answer
        "egress": {"mode": "AllowList", "allow": [{"cidr": "10.244.0.0/16", "ports": [{"port": 8080}]}]}})

    def fetch(source: str, ip: str) -> bool:  # (busybox-static's wget crashes here; nc speaks HTTP well enough)
        answer = sh(source, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080").stdout
        return bool(answer.rstrip().endswith("\nok"))

    # kube-router applies a new pod's policy within a sync; wait for the allowed path, then check the others.
    wait_for(lambda: fetch("client", allowed_ip), timeout=60, what="the allow-listed listener to answer")
    wait_for(lambda: fetch("wide", other_ip), timeout=60, what="the other listener to answer a client allowed to it")
    wait_for(lambda: not fetch("client", other_ip), timeout=60, what="the listener off the list to be blocked")
    wait_for(lambda: not fetch("isolated", allowed_ip), timeout=60, what="egress None to be blocked")
    assert fetch("client", allowed_ip), "the allowed path still works after the others are blocked"
    assert not fetch("client", other_ip)
    assert not fetch("isolated", allowed_ip)


def test_a_pod_whose_label_was_removed_is_replaced_by_a_fenced_one(
    node_sandboxes: Sandboxes, sh: Callable[..., Any]
) -> None:
    target_ip = ready(node_sandboxes, "target", command=LISTENER, network=HTTP)["podIP"]
    ready(node_sandboxes, "reacher", command=["sleep", "3600"], network={  # the control: the listener answers
        "egress": {"mode": "AllowList", "allow": [{"cidr": f"{target_ip}/32", "ports": [{"port": 8080}]}]}})
    ready(node_sandboxes, "escapee", command=["sleep", "3600"])

    def fetch(source: str) -> bool:
        answer = sh(source, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target_ip} 8080").stdout
        return bool(answer.rstrip().endswith("\nok"))

    wait_for(lambda: fetch("reacher"), timeout=60, what="the listener to answer an allowed client")
    wait_for(lambda: not fetch("escapee"), timeout=60, what="egress None to be blocked")
    first = node_sandboxes.pod("escapee")
    assert first is not None
    # Without the label, no NetworkPolicy selects the pod: kube-router stops fencing it at its next sync.
    node_sandboxes.core.patch_namespaced_pod("sbx-escapee", node_sandboxes.namespace,
                                             {"metadata": {"labels": {c.LABEL_SANDBOX: None}}})
    wait_for(lambda: (p := node_sandboxes.pod("escapee")) is not None and p.metadata.uid != first.metadata.uid,
             timeout=60, what="the operator to replace the unlabelled pod")
    node_sandboxes.wait_condition("escapee", "True", "PodReady", timeout=120)
    replacement = node_sandboxes.pod("escapee")
    assert replacement is not None and replacement.metadata.labels[c.LABEL_SANDBOX] == "escapee"
    wait_for(lambda: not fetch("escapee"), timeout=60, what="the replacement pod to be fenced")
    assert fetch("reacher"), "the listener still answers the allowed client"


def test_a_sandbox_with_a_readiness_port_is_ready_only_once_it_listens(node_sandboxes: Sandboxes) -> None:
    late = ["sh", "-c", "sleep 6 && " + LISTENER[2]]  # the server comes up 6 s after the container starts
    node_sandboxes.create(sandbox("late", image=BUSYBOX, resources=SMALL, command=late,
                                  network={**HTTP, "readinessPort": "http"}))
    waiting = node_sandboxes.wait_condition("late", "False", "PodNotReady", timeout=120)
    assert "running but not ready" in waiting["message"]
    node_sandboxes.wait_condition("late", "True", "PodReady", timeout=60)
    status = node_sandboxes.status("late")
    started = dt.datetime.fromisoformat(status["startedAt"].replace("Z", "+00:00"))
    ready = next(cond for cond in status["conditions"] if cond["type"] == "Ready")
    became_ready = dt.datetime.fromisoformat(ready["lastTransitionTime"].replace("Z", "+00:00"))
    assert (became_ready - started).total_seconds() >= 5, (started, became_ready)
