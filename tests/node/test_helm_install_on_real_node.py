"""``helm install`` with the operator really running: its offline-built image imported into the real node's
containerd, two replicas as pods on the real node (non-root, hardened), Sandboxes Ready, the active replica
killed and a standby taking over, and ``helm uninstall`` leaving only the CRDs.

Pods on the real node reach the API server through the node's forwarder (``node.apiserver_env()``: there is no
kube-proxy); the chart's NetworkPolicy is narrowed to exactly that address, which kube-router enforces. The
operator watches one namespace and places its sandbox pods on the real node too.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localcluster import node as real_node_module
from localcluster import operator_image
from localcluster.controlplane import ClusterState
from localcluster.handle import Cluster
from localcluster.helm import CHART, helm, set_args, uninstall
from localcluster.paths import CRDS

from sandbox_operator.api import names as c
from tests.integration.test_sandbox_lifecycle import sandbox
from tests.waiting import wait_for

pytestmark = pytest.mark.node

BUSYBOX = "busybox:1.35.0"  # the local node holds it under its public name
SMALL = {"cpu": "50m", "memory": "32Mi", "ephemeralStorage": "256Mi"}  # the real node has 2 cores
LIFETIME = 10  # peering.lifetimeSeconds: the bound on a takeover after a crash
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "sandbox-operator.io/test": "helm-real-node"}


def _containerd_socket(cluster: Cluster) -> Path:
    assert cluster.control_plane is not None
    state = ClusterState.load(cluster.control_plane.state_dir)
    assert state is not None and state.node == "real"
    return real_node_module.RealNode(state).socket


def _ctr(socket: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["ctr", "--address", str(socket), "-n", "k8s.io", *args], check=True,
                         capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def _running_operator_pids(socket: Path) -> list[int]:
    """Host PIDs of running containers of the operator image (``ctr``: no crictl here)."""
    containers = {row[0] for row in _ctr(socket, "containers", "list") if row[1] == operator_image.REFERENCE}
    return [int(row[1]) for row in _ctr(socket, "tasks", "list") if row[0] in containers and row[2] == "RUNNING"]


@pytest.fixture
def namespaces(real_node: str, api: client.ApiClient) -> Iterator[tuple[str, str]]:
    """(release namespace, sandbox namespace), both enforcing Pod Security ``restricted``."""
    core = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:6]
    names = (f"helm-node-{suffix}", f"helm-node-work-{suffix}")
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED)))
    try:
        yield names
    finally:
        for name in names:
            core.delete_namespace(name, grace_period_seconds=0, propagation_policy="Background")


def _values(work_namespace: str) -> dict[str, Any]:
    placement = real_node_module.pod_placement()
    return {
        "image.repository": operator_image.REFERENCE.rsplit(":", 1)[0],
        "image.tag": operator_image.REFERENCE.rsplit(":", 1)[1],
        "image.pullPolicy": "Never",  # imported, never pulled: there is no registry
        "replicaCount": 2,
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "operator.watchNamespaces": [work_namespace],
        "operator.logFormat": "text",
        "operator.extraEnv": [
            *real_node_module.apiserver_env(),
            {"name": "SANDBOX_OPERATOR_POD_NODE_SELECTOR", "value": json.dumps(placement["nodeSelector"])},
            {"name": "SANDBOX_OPERATOR_POD_TOLERATIONS", "value": json.dumps(placement["tolerations"])},
        ],
        # Egress to exactly the API server as pods here see it; kube-router enforces it on this node.
        "networkPolicy.apiServer": {"cidrs": [f"{real_node_module.BRIDGE_IP}/32"],
                                    "ports": [real_node_module.APISERVER_PORT_FOR_PODS]},
        "peering.lifetimeSeconds": LIFETIME,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "crds.install": False,  # crds/ is applied cluster-wide by the crds fixture; Helm cannot adopt it
        "tenants.enabled": False,  # deploy/ is applied cluster-wide by other tests; Helm cannot adopt it
        "test.sandboxImage": BUSYBOX,
    }


def _ready_sandbox(cluster: Cluster, api: client.ApiClient, namespace: str, name: str, timeout: int = 120) -> float:
    """Create a small busybox Sandbox, wait for its Ready condition; return the seconds it took."""
    started = time.monotonic()
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, sandbox(name, image=BUSYBOX, resources=SMALL))
    waited = cluster.kubectl("wait", "-n", namespace, f"sandboxes.{c.GROUP}/{name}", "--for=condition=Ready",
                             f"--timeout={timeout}s", check=False, timeout=timeout + 10)
    assert waited.returncode == 0, waited.stderr
    pod = client.CoreV1Api(api).read_namespaced_pod(f"sbx-{name}", namespace)
    assert pod.spec.node_name == real_node_module.NODE_NAME
    return time.monotonic() - started


def _operator_pods(core: client.CoreV1Api, namespace: str, release: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release}").items)


def _active_pod(api: client.ApiClient, work_namespace: str, peering: str) -> str:
    """The replica that works: the peer with the highest priority in the (namespaced) KopfPeering."""
    body = client.CustomObjectsApi(api).get_namespaced_custom_object("kopf.dev", "v1", work_namespace,
                                                                      "kopfpeerings", peering)
    status = body.get("status") or {}
    assert len(status) == 2, f"expected both replicas in the peering, got {status}"
    return str(max(status, key=lambda peer: status[peer]["priority"]))


def _reconciles(pod: client.V1Pod) -> float:
    """The replica's reconcile count, from its /metrics (the host reaches pod IPs; the policy admits scrapes)."""
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=3) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sandbox_operator_reconciles_total{"))


def _exec_python(cluster: Cluster, namespace: str, pod: str, code: str) -> str:
    result = cluster.kubectl("exec", "-n", namespace, pod, "--", "/usr/bin/python3.11", "-c", code, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


PROBE = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
try:
    open("/probe", "w")
    writable = True
except OSError:
    writable = False
print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["NoNewPrivs"].strip(), status["Seccomp"].strip(),
      writable)
"""


def test_helm_install_runs_the_operator_image_on_the_real_node_and_uninstall_leaves_only_crds(
    cluster: Cluster, api: client.ApiClient, crds: None, namespaces: tuple[str, str],
) -> None:
    if cluster.external:
        pytest.skip("the image is imported into the local real node's containerd")
    release_ns, work_ns = namespaces
    core = client.CoreV1Api(api)
    socket = _containerd_socket(cluster)

    started = time.monotonic()
    archive = operator_image.build()
    operator_image.import_into_node(socket)
    image_seconds = time.monotonic() - started
    imported = {row[0]: row for row in _ctr(socket, "images", "list")}
    assert operator_image.REFERENCE in imported
    print(f"\noperator image: archive {archive.stat().st_size / 2**20:.1f} MiB, in containerd "
          f"{' '.join(imported[operator_image.REFERENCE][3:5])} (build/cache + import {image_seconds:.1f}s)")

    release = f"sbx-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-sandbox-operator"
    peering = f"{release}-peering"
    values = {**_values(work_ns), "peering.name": peering}
    started = time.monotonic()
    installed = helm("install", release, str(CHART), "--namespace", release_ns, "--wait", "--timeout", "180s",
                     *set_args(values), kubeconfig=cluster.kubeconfig, check=False)
    install_seconds = time.monotonic() - started
    try:
        if installed.returncode != 0:
            described = cluster.kubectl("describe", "pods", "-n", release_ns, check=False).stdout
            logs = cluster.kubectl("logs", "-n", release_ns, "-l", f"app.kubernetes.io/instance={release}",
                                   "--tail=30", "--all-containers", "--prefix", check=False).stdout
            pytest.fail(f"helm install failed: {installed.stderr}\n{described[-4000:]}\n{logs}")
        pods = _operator_pods(core, release_ns, release)
        assert len(pods) == 2 and all(p.spec.node_name == real_node_module.NODE_NAME for p in pods)
        for pod in pods:
            ready = next(x for x in pod.status.conditions if x.type == "Ready")
            seconds = (ready.last_transition_time - pod.metadata.creation_timestamp).total_seconds()
            print(f"operator pod {pod.metadata.name}: Ready {seconds:.0f}s after creation "
                  f"(helm install --wait {install_seconds:.1f}s)")

        # Hardened as the chart says, seen from inside (exec) and from the host (the container's process).
        uid, gid, cap_eff, no_new_privs, seccomp, writable = _exec_python(
            cluster, release_ns, pods[0].metadata.name, PROBE).split()
        assert (uid, gid) == (str(operator_image.UID), str(operator_image.UID))
        assert cap_eff == "0000000000000000" and no_new_privs == "1" and seccomp == "2"  # 2: seccomp filter
        assert writable == "False", "the root filesystem is read-only"
        pids = _running_operator_pids(socket)
        assert len(pids) == 2, pids
        for pid in pids:
            host_uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                             if line.startswith("Uid:")).split()[1:]
            assert host_uids == [str(operator_image.UID)] * 4, f"pid {pid} runs as {host_uids} on the host"

        first = _ready_sandbox(cluster, api, work_ns, "first")
        print(f"first Sandbox Ready {first:.1f}s after creation")
        began = time.monotonic()
        # The hook's objects are deleted once it succeeds, its logs with them: the phase is what remains.
        tested = helm("test", release, "--namespace", release_ns, "--timeout", "180s",
                      kubeconfig=cluster.kubeconfig, check=False)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout
        print(f"helm test passed in {time.monotonic() - began:.1f}s")

        active = _active_pod(api, work_ns, peering)
        by_name = {p.metadata.name: p for p in pods}
        assert active in by_name, active
        standby = next(name for name in by_name if name != active)
        assert _reconciles(by_name[active]) > 0
        assert _reconciles(by_name[standby]) == 0, "the standby reconciled while the active replica was alive"

        cluster.kubectl("delete", "pod", "-n", release_ns, active, "--grace-period=0", "--force", "--wait=false")
        killed = time.monotonic()
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            c.GROUP, c.VERSION, work_ns, c.PLURAL, sandbox("after-kill", image=BUSYBOX, resources=SMALL))

        def new_worker() -> str | None:  # the standby, or the Deployment's replacement pod if its priority is higher
            for pod in _operator_pods(core, release_ns, release):
                if pod.metadata.name != active and pod.status.pod_ip and pod.status.phase == "Running":
                    try:
                        if _reconciles(pod) > 0:
                            return str(pod.metadata.name)
                    except OSError:
                        continue  # the replacement's metrics server is not up yet
            return None

        worker = wait_for(new_worker, timeout=LIFETIME + 60, interval=0.1, what="another replica to take over")
        takeover = time.monotonic() - killed
        waited = cluster.kubectl("wait", "-n", work_ns, f"sandboxes.{c.GROUP}/after-kill", "--for=condition=Ready",
                                 f"--timeout={LIFETIME + 90}s", check=False, timeout=LIFETIME + 100)
        ready_after = time.monotonic() - killed
        assert waited.returncode == 0, waited.stderr
        role = "the standby" if worker == standby else "the Deployment's replacement pod"
        print(f"active replica {active} force-deleted: {role} {worker} took over after {takeover:.1f}s "
              f"(peering lifetime {LIFETIME}s); the Sandbox created after the kill Ready {ready_after:.1f}s after it")
    finally:
        started = time.monotonic()
        uninstalled = uninstall(release, release_ns, cluster.kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
    print(f"helm uninstall --wait {time.monotonic() - started:.1f}s")
    _assert_only_crds_left(cluster, api, release, (release_ns, work_ns), fullname, socket)
    print(f"everything but the CRDs gone {time.monotonic() - started:.1f}s after the uninstall began")


def _assert_only_crds_left(cluster: Cluster, api: client.ApiClient, release: str, namespaces: tuple[str, ...],
                           fullname: str, socket: Path) -> None:
    selector = f"app.kubernetes.io/instance={release}"
    core = client.CoreV1Api(api)
    # The uninstall waits for the pods too (foreground cascade); this is the check that they are gone.
    started = time.monotonic()
    wait_for(lambda: not _operator_pods(core, namespaces[0], release), timeout=60,
             what="the operator's pods to be gone")
    print(f"operator pods gone {time.monotonic() - started:.1f}s after helm uninstall returned")
    for namespace in namespaces:
        leftovers = cluster.kubectl(
            "get", "all,serviceaccounts,networkpolicies,poddisruptionbudgets,configmaps,secrets,roles,rolebindings,"
            "kopfpeerings.kopf.dev", "-n", namespace, "-l", selector, "-o", "name").stdout.split()
        assert leftovers == [], f"{namespace}: {leftovers}"
    cluster_scoped = cluster.kubectl(
        "get", "clusterroles,clusterrolebindings,clusterkopfpeerings.kopf.dev,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings", "-l", selector, "-o", "name").stdout.split()
    assert cluster_scoped == []
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster.kubectl("get", kind, fullname, check=False).returncode != 0, f"{kind} {fullname} is left"
    wait_for(lambda: not _running_operator_pids(socket), timeout=60,
             what="no operator container running on the node")
    crd_names = {d["metadata"]["name"] for path in sorted(CRDS.glob("*.yaml"))
                 for d in yaml.safe_load_all(path.read_text()) if d}
    assert f"{c.PLURAL}.{c.GROUP}" in crd_names
    listed = set(cluster.kubectl("get", "crd", "-o", "name").stdout.split())
    missing = {n for n in crd_names if f"customresourcedefinition.apiextensions.k8s.io/{n}" not in listed}
    assert not missing, f"helm uninstall removed the CRDs {missing}"
