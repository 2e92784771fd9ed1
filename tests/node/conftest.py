"""Fixtures for tests on the real node: the node itself, namespaces, pods placed on it, and probes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from localcluster import images
from localcluster import node as real_node_module
from localcluster.controlplane import ClusterState
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess, install_crds

from tests.waiting import wait_for

BUSYBOX = "busybox:1.35.0"  # the local node holds it under its public name


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> Iterator[str]:
    """The name of a Ready node that runs real containers; started here on the local cluster if needed."""
    if cluster.external:
        nodes = client.CoreV1Api(cluster.api_client()).list_node(
            label_selector=f"{real_node_module.NODE_LABEL[0]}={real_node_module.NODE_LABEL[1]}").items
        if not nodes:
            pytest.skip(f"the external cluster has no node labelled {'='.join(real_node_module.NODE_LABEL)}")
        yield nodes[0].metadata.name
        return
    assert cluster.control_plane is not None
    state = ClusterState.load(cluster.control_plane.state_dir)
    assert state is not None
    started_here = state.node != "real"
    if started_here:
        missing = real_node_module.missing_dependencies()
        if missing:
            pytest.fail(f"the real node needs {', '.join(missing)}: apt-get install "
                        + " ".join(real_node_module.DEBIAN_PACKAGES))
        real_node_module.start_real_node(state)
    try:
        yield real_node_module.NODE_NAME
    finally:
        if started_here and not cluster.owned:
            leftovers = real_node_module.stop_real_node(state)
            assert not leftovers, f"teardown left {leftovers}"


def placed_operator(cluster: Cluster, log: Path, namespace: str) -> OperatorProcess:
    """An operator (not started yet) serving ``namespace`` that puts sandbox pods on the real node."""
    placement = real_node_module.pod_placement()
    return OperatorProcess(
        cluster, log,
        NAMESPACES=namespace,
        POD_NODE_SELECTOR=json.dumps(placement["nodeSelector"]),
        POD_TOLERATIONS=json.dumps(placement["tolerations"]),
    )


@pytest.fixture(scope="module")
def sdk_namespace(cluster: Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh restricted namespace served by an operator of its own that places sandbox pods on the real node, with
    the python image (python:3.11-slim) present there: for clients (SDK, CLI) using the admin kubeconfig."""
    if not cluster.external:
        assert cluster.control_plane is not None
        state = ClusterState.load(cluster.control_plane.state_dir)
        assert state is not None
        real_node_module.import_images(state, (images.PYTHON,))
    core = client.CoreV1Api(cluster.api_client())
    name = f"node-sdk-{uuid.uuid4().hex[:8]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted", "sandbox-operator.io/test": "node"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    install_crds(cluster)
    operator = placed_operator(cluster, tmp_path_factory.mktemp("sdk-operator") / "operator.log", name)
    operator.start()
    try:
        yield name
    finally:
        operator.stop()
        core.delete_namespace(name, grace_period_seconds=0, propagation_policy="Background")


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def node_namespace(real_node: str, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace labelled for Pod Security ``restricted``, with its default service account ready."""
    name = f"node-{uuid.uuid4().hex[:10]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted", "sandbox-operator.io/test": "node"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_for(lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
             what="the default service account")
    try:
        yield name
    finally:
        core.delete_namespace(name, grace_period_seconds=0, propagation_policy="Background")


def hardened_container(name: str, command: list[str], *, memory: str = "64Mi") -> dict[str, Any]:
    """A container with the sandbox security context: non-root, read-only root, no capabilities."""
    return {
        "name": name,
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"limits": {"cpu": "200m", "memory": memory}, "requests": {"cpu": "10m", "memory": "16Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_manifest(name: str, command: list[str], *, labels: dict[str, str] | None = None, memory: str = "64Mi",
                 automount_token: bool = False, restart: str = "Never") -> dict[str, Any]:
    """A hardened single-container busybox pod placed on the real node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            **real_node_module.pod_placement(),
            "automountServiceAccountToken": automount_token,
            "enableServiceLinks": False,
            "dnsPolicy": "Default",
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [hardened_container("main", command, memory=memory)],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
        },
    }


LISTENER = ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
SLEEPER = ["sleep", "3600"]


def run_pod(core: client.CoreV1Api, namespace: str, manifest: dict[str, Any], timeout: float = 90) -> client.V1Pod:
    """Create the pod and wait until it is Running with a pod IP; return it."""
    core.create_namespaced_pod(namespace, manifest)
    name = manifest["metadata"]["name"]

    def running() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in ("Failed", "Succeeded"):
            pytest.fail(f"pod {name} ended early: {pod.status}")
        ready = pod.status.phase == "Running" and pod.status.pod_ip
        return pod if ready else None

    return wait_for(running, timeout=timeout, what=f"pod {name} to run")


@pytest.fixture
def exec_in(cluster: Cluster) -> Callable[..., Any]:
    """``exec_in(namespace, pod, *argv)`` -> CompletedProcess of ``kubectl exec`` (never raises on exit code)."""

    def run(namespace: str, pod: str, *argv: str, timeout: float = 30) -> Any:
        return cluster.kubectl("exec", "-n", namespace, pod, "--", *argv, check=False, timeout=timeout)

    return run


@pytest.fixture
def can_connect(exec_in: Callable[..., Any]) -> Callable[[str, str, str, int], bool]:
    """``can_connect(namespace, pod, ip, port)``: whether a TCP connection from the pod succeeds (2 s timeout)."""

    def probe(namespace: str, pod: str, ip: str, port: int) -> bool:
        return bool(exec_in(namespace, pod, "nc", "-w", "2", ip, str(port)).returncode == 0)

    return probe
