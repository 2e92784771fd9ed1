"""Self-tests on the real node: the security claims hold for real containers, and NetworkPolicy is enforced.

Each test has a control that shows the probe can see the opposite outcome, so none can pass vacuously.
Every connection target is a listener the test itself started on this machine (a pod, or a socket on
the node's bridge address).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from localcluster import images
from localcluster import node as real_node_module
from localcluster.controlplane import ClusterState
from localcluster.handle import Cluster

from sandbox_operator.api import names as c
from sandbox_operator.sandbox.fence import render_fence

from .conftest import LISTENER, SLEEPER, pod_manifest, run_pod, wait_for

pytestmark = pytest.mark.node

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def apply_policy(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.NetworkingV1Api(api).create_namespaced_network_policy(
        namespace, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
                    "spec": spec})


def test_hardened_pod_runs_with_a_non_root_uid(core: client.CoreV1Api, node_namespace: str, exec_in: Any) -> None:
    pod = run_pod(core, node_namespace, pod_manifest("hardened", SLEEPER))
    assert pod.spec.node_name == real_node_module.NODE_NAME
    result = exec_in(node_namespace, "hardened", "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "65534"


def test_writing_the_root_filesystem_fails(core: client.CoreV1Api, node_namespace: str, exec_in: Any) -> None:
    run_pod(core, node_namespace, pod_manifest("readonly", SLEEPER))
    control = exec_in(node_namespace, "readonly", "touch", "/tmp/probe")  # the emptyDir is writable
    assert control.returncode == 0, control.stderr
    result = exec_in(node_namespace, "readonly", "touch", "/probe")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_effective_capabilities_are_zero(core: client.CoreV1Api, node_namespace: str, exec_in: Any) -> None:
    run_pod(core, node_namespace, pod_manifest("nocaps", SLEEPER))
    status = exec_in(node_namespace, "nocaps", "cat", "/proc/self/status").stdout
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert caps["CapEff"] == "0000000000000000"
    assert caps["CapPrm"] == "0000000000000000"
    assert caps["CapBnd"] == "0000000000000000"


def test_no_service_account_token_is_mounted_when_automount_is_off(
    core: client.CoreV1Api, node_namespace: str, exec_in: Any
) -> None:
    run_pod(core, node_namespace, pod_manifest("with-token", SLEEPER, automount_token=True))
    run_pod(core, node_namespace, pod_manifest("no-token", SLEEPER, automount_token=False))
    control = exec_in(node_namespace, "with-token", "cat", f"{TOKEN_DIR}/token")
    assert control.returncode == 0 and control.stdout.count(".") == 2, "control pod should hold a JWT"
    result = exec_in(node_namespace, "no-token", "ls", TOKEN_DIR)
    assert result.returncode != 0
    assert "No such file or directory" in result.stderr


def test_a_process_over_its_memory_limit_is_oom_killed(core: client.CoreV1Api, node_namespace: str) -> None:
    # Builds a 256 MiB string under a 32 MiB limit; without enforcement it would print and exit 0.
    hog = ["awk", 'BEGIN { s = "xxxxxxxx"; for (i = 0; i < 25; i++) s = s s; print length(s) }']
    core.create_namespaced_pod(node_namespace, pod_manifest("hog", hog, memory="32Mi"))

    def terminated() -> client.V1ContainerStateTerminated | None:
        statuses = core.read_namespaced_pod("hog", node_namespace).status.container_statuses or []
        return statuses[0].state.terminated if statuses and statuses[0].state.terminated else None

    state = wait_for(terminated, timeout=120, what="the memory hog to end")
    assert state.reason == "OOMKilled", f"exit {state.exit_code}, reason {state.reason}"
    assert state.exit_code == 137


def test_default_deny_blocks_pod_to_pod_until_an_allow_rule(
    api: client.ApiClient, core: client.CoreV1Api, node_namespace: str, can_connect: Callable[..., bool]
) -> None:
    server = run_pod(core, node_namespace, pod_manifest("server", LISTENER, labels={"app": "server"}))
    run_pod(core, node_namespace, pod_manifest("client", SLEEPER, labels={"app": "client"}))
    ip = server.status.pod_ip
    wait_for(lambda: can_connect(node_namespace, "client", ip, 8080), what="the server to accept before any policy")

    apply_policy(api, node_namespace, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    wait_for(lambda: not can_connect(node_namespace, "client", ip, 8080), what="default-deny to block the client")

    apply_policy(api, node_namespace, "server-ingress", {
        "podSelector": {"matchLabels": {"app": "server"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080}]}],
    })
    apply_policy(api, node_namespace, "client-egress", {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": 8080}]}],
    })
    wait_for(lambda: can_connect(node_namespace, "client", ip, 8080), what="the allow rules to let the client in")


def test_the_namespace_fence_closes_sandbox_pods_both_ways_and_takes_nothing_from_their_own_policy(
    api: client.ApiClient, core: client.CoreV1Api, node_namespace: str, can_connect: Callable[..., bool]
) -> None:
    """sandbox.fence, in the operator's order: the fence first, then a sandbox pod without a policy of its own. From
    its first moment it reaches nothing and nothing reaches it; other pods keep their traffic; its own policy then
    allows what it allows, the fence beside it."""
    server = run_pod(core, node_namespace, pod_manifest("server", LISTENER, labels={"app": "server"}))
    run_pod(core, node_namespace, pod_manifest("client", SLEEPER, labels={"app": "client"}))
    wait_for(lambda: can_connect(node_namespace, "client", server.status.pod_ip, 8080), what="the probe to connect")
    client.NetworkingV1Api(api).create_namespaced_network_policy(node_namespace, render_fence(node_namespace))

    sandbox_labels = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SANDBOX: "fenced"}
    boxed = run_pod(core, node_namespace, pod_manifest("boxed", LISTENER, labels=sandbox_labels))
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert not can_connect(node_namespace, "boxed", server.status.pod_ip, 8080), "a fenced pod got out"
        assert not can_connect(node_namespace, "client", boxed.status.pod_ip, 8080), "a fenced pod was reached"
    assert can_connect(node_namespace, "client", server.status.pod_ip, 8080), "the fence closed a pod not a sandbox's"

    apply_policy(api, node_namespace, "sbx-fenced", {  # what the sandbox's own policy would allow: egress to server
        "podSelector": {"matchLabels": sandbox_labels},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": 8080}]}],
    })
    wait_for(lambda: can_connect(node_namespace, "boxed", server.status.pod_ip, 8080),
             what="the sandbox's own policy to allow its egress beside the fence")
    assert not can_connect(node_namespace, "client", boxed.status.pod_ip, 8080), "ingress opened with egress"


def test_egress_allow_list_reaches_one_listener_and_not_another(
    api: client.ApiClient, core: client.CoreV1Api, node_namespace: str, can_connect: Callable[..., bool]
) -> None:
    allowed = run_pod(core, node_namespace, pod_manifest("allowed", LISTENER, labels={"app": "allowed"}))
    other = run_pod(core, node_namespace, pod_manifest("other", LISTENER, labels={"app": "other"}))
    run_pod(core, node_namespace, pod_manifest("sandbox", SLEEPER, labels={"app": "sandbox"}))
    for listener in (allowed, other):  # both answer while no policy applies
        wait_for(lambda ip=listener.status.pod_ip: can_connect(node_namespace, "sandbox", ip, 8080),
                 what=f"{listener.metadata.name} to accept before any policy")

    apply_policy(api, node_namespace, "sandbox-egress", {
        "podSelector": {"matchLabels": {"app": "sandbox"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "allowed"}}}], "ports": [{"port": 8080}]}],
    })
    wait_for(lambda: not can_connect(node_namespace, "sandbox", other.status.pod_ip, 8080),
             what="the egress allow-list to block the other listener")
    assert can_connect(node_namespace, "sandbox", allowed.status.pod_ip, 8080)


@pytest.fixture
def host_listeners() -> Iterator[dict[str, int]]:
    """Two TCP listeners on the node's bridge address: one in the range pods may reach, one outside it."""
    low = int(real_node_module.HOST_PORTS_FOR_PODS.split(":")[0])
    sockets: dict[str, socket.socket] = {}
    for name, port in (("open", low), ("closed", 0)):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((real_node_module.BRIDGE_IP, port))
        sock.listen(8)
        sock.settimeout(0.5)
        sockets[name] = sock
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                connection, _ = sock.accept()
                connection.close()
            except OSError:
                continue

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in sockets.values()]
    for thread in threads:
        thread.start()
    try:
        yield {name: s.getsockname()[1] for name, s in sockets.items()}
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=2)
        for sock in sockets.values():
            sock.close()


def test_pods_reach_the_host_only_on_the_ports_opened_for_them(
    core: client.CoreV1Api, node_namespace: str, can_connect: Callable[..., bool], host_listeners: dict[str, int]
) -> None:
    run_pod(core, node_namespace, pod_manifest("prober", SLEEPER))
    host = real_node_module.BRIDGE_IP
    # Both listeners accept from the host itself; only the one in HOST_PORTS_FOR_PODS accepts from a pod.
    for port in host_listeners.values():
        socket.create_connection((host, port), timeout=2).close()
    assert can_connect(node_namespace, "prober", host, host_listeners["open"])
    assert not can_connect(node_namespace, "prober", host, host_listeners["closed"])


def test_pods_have_no_route_off_the_node(core: client.CoreV1Api, node_namespace: str, exec_in: Any) -> None:
    run_pod(core, node_namespace, pod_manifest("routes", SLEEPER))
    routes = exec_in(node_namespace, "routes", "ip", "-4", "route", "show").stdout.strip().splitlines()
    assert routes, "the pod should have its on-link route"
    assert [r.split()[0] for r in routes] == [real_node_module.POD_CIDR], routes  # no default route, no other


def test_forwarded_pod_traffic_is_dropped_before_any_other_rule(real_node: str, cluster: Cluster) -> None:
    if cluster.external:
        pytest.skip("inspects this machine's rules: only for the local cluster's real node")
    # mangle FORWARD runs before filter FORWARD, where kube-router ACCEPTs policy-compliant traffic.
    rules = real_node_module._run("iptables", "-t", "mangle", "-S", "FORWARD").stdout.splitlines()
    appended = [r for r in rules if r.startswith("-A FORWARD")]
    bridge = real_node_module.BRIDGE
    assert appended[0].startswith(f"-A FORWARD -i {bridge} ! -o {bridge}") and appended[0].endswith("-j DROP")
    assert appended[1].startswith(f"-A FORWARD ! -i {bridge} -o {bridge}") and appended[1].endswith("-j DROP")
    nat = real_node_module._run("iptables-save", "-t", "nat").stdout
    assert "MASQUERADE" not in nat and "SNAT" not in nat


def test_python_image_runs_code_as_non_root(
    real_node: str, cluster: Cluster, core: client.CoreV1Api, node_namespace: str
) -> None:
    if cluster.external:
        pytest.skip("imports a locally built image into the local real node")
    assert cluster.control_plane is not None
    state = ClusterState.load(cluster.control_plane.state_dir)
    assert state is not None
    real_node_module.import_images(state, (images.PYTHON,))
    manifest = pod_manifest("python", ["python3", "-c", "import os, json, sqlite3; print(json.dumps(os.getuid()))"])
    manifest["spec"]["containers"][0]["image"] = images.PYTHON
    core.create_namespaced_pod(node_namespace, manifest)

    def finished() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("python", node_namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = wait_for(finished, timeout=90, what="the python pod to finish")
    assert pod.status.phase == "Succeeded", pod.status
    assert core.read_namespaced_pod_log("python", node_namespace).strip() == "65534"
