"""`make demo`: the local cluster, the CRDs, the operator, a Sandbox that becomes Ready and then expires, a Tenant.

Set NODE=real to run the sandbox as a real container on a kubelet + containerd node (root needed),
KEEP=1 to leave the cluster running afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localcluster.controlplane import ControlPlane
from localcluster.handle import Cluster, connect
from localcluster.operator_process import OperatorProcess, install_crds
from localcluster.paths import REPO_ROOT as ROOT


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster_kubectl: list[str], *args: str, input: str | None = None) -> str:
    result = subprocess.run([*cluster_kubectl, *args], capture_output=True, text=True, check=False, input=input)
    print(result.stdout.rstrip() or result.stderr.rstrip(), flush=True)
    return result.stdout


def tenant_demo(cluster: Cluster, kubectl: list[str]) -> None:
    """A Tenant: its namespace, quota and policy, used by a member of its group through plain kubectl."""
    say("tenants: kubectl apply -f deploy/ (tenant ClusterRole + ValidatingAdmissionPolicy) and examples/tenant.yaml")
    show(kubectl, "apply", "--server-side", "-f", str(ROOT / "deploy"))
    show(kubectl, "apply", "-f", str(ROOT / "examples" / "tenant.yaml"))
    show(kubectl, "wait", "--for=condition=Ready", "tenant/team-a", "--timeout=120s")
    show(kubectl, "get", "tenant", "team-a")
    show(kubectl, "get", "resourcequota,limitrange,networkpolicy,rolebinding", "-n", "team-a")

    member = cluster.user_kubeconfig(Path(tempfile.gettempdir()) / "demo-alice.kubeconfig", "alice", ("team-a",))
    as_alice = [cluster.kubectl_path, f"--kubeconfig={member}", "-n", "team-a"]
    say("alice (group team-a) creates a sandbox within the tenant's limits")
    show(as_alice, "apply", "-f", "-", input=SCRATCH)
    show(as_alice, "wait", "--for=condition=Ready", "sandbox/scratch", "--timeout=60s")
    show(as_alice, "get", "sbx")
    say("... and is refused by the API server when she asks for more than the tenant allows")
    show(as_alice, "apply", "-f", "-", input=SCRATCH.replace("name: scratch", "name: greedy")
         .replace("cpu: 250m", 'cpu: "3"').replace("busybox:1.35.0", "evil.example/miner:latest"))
    say("... and cannot create pods or read secrets directly")
    show(as_alice, "auth", "can-i", "create", "pods")
    show(as_alice, "auth", "can-i", "get", "secrets")
    show(kubectl, "get", "tenant", "team-a")
    say("deleting the tenant deletes its namespace and every sandbox in it")
    show(kubectl, "delete", "tenant", "team-a", "--wait=false")


SCRATCH = """\
apiVersion: sandbox-operator.io/v1alpha1
kind: Sandbox
metadata:
  name: scratch
spec:
  image: busybox:1.35.0
  command: ["sleep", "3600"]
  resources:
    cpu: 250m
    memory: 128Mi
"""


def main() -> int:
    node = os.environ.get("NODE", "fake")
    plane = ControlPlane()
    was_running = bool(plane.status().get("running"))
    say(f"local cluster ({'already running' if was_running else 'starting'}; node={node})")
    state = plane.start()
    if node == "real":
        from localcluster import node as real_node

        real_node.start_real_node(state)
    cluster = connect(start=False)
    kubectl = [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}"]
    show(kubectl, "get", "nodes")

    say("installing the CRDs (kubectl apply --server-side -f crds/)")
    install_crds(cluster)
    show(kubectl, "get", "crds")

    log = Path(tempfile.gettempdir()) / "sandbox-operator-demo.log"
    say(f"starting the operator (python -m sandbox_operator; log: {log})")
    operator = OperatorProcess(cluster, log)
    operator.start()
    try:
        say("applying examples/sandbox.yaml (ttlSeconds: 60)")
        show(kubectl, "apply", "-n", "default", "-f", str(ROOT / "examples" / "sandbox.yaml"))
        say("kubectl wait --for=condition=Ready sandbox/hello")
        show(kubectl, "wait", "-n", "default", "--for=condition=Ready", "sandbox/hello", "--timeout=120s")
        show(kubectl, "get", "sbx", "-n", "default")
        say("what the operator created: a locked-down pod and a default-deny NetworkPolicy, owned by the Sandbox")
        show(kubectl, "get", "pod,networkpolicy", "-n", "default", "-l", "sandbox-operator.io/sandbox=hello")
        show(kubectl, "get", "pod", "sbx-hello", "-n", "default", "-o",
             "jsonpath={.spec.containers[0].securityContext}{'\\n'}")
        say("waiting for the TTL to run out (the operator acts at the deadline) ...")
        started = time.monotonic()
        while time.monotonic() - started < 120:
            result = subprocess.run([*kubectl, "get", "sbx", "hello", "-n", "default", "--no-headers"],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                break
            print(f"  {result.stdout.strip()}", flush=True)
            time.sleep(5)
        show(kubectl, "get", "sbx,pod,networkpolicy", "-n", "default")
        say("events of the sandbox's life")
        show(kubectl, "get", "events", "-n", "default", "--field-selector", "involvedObject.kind=Sandbox",
             "-o", "custom-columns=TIME:.firstTimestamp,REASON:.reason,MESSAGE:.message")
        tenant_demo(cluster, kubectl)
        say("operator metrics (excerpt)")
        for key, value in operator.metrics().items():
            if key.startswith(("sandbox_operator_expirations_total", "sandbox_operator_ready_latency_seconds_count")):
                print(f"  {key} {value}")
    finally:
        operator.stop()
        if not was_running and os.environ.get("KEEP") != "1":
            say("stopping the local cluster (KEEP=1 keeps it)")
            plane.stop()
        else:
            print(f"\nthe cluster keeps running: export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
