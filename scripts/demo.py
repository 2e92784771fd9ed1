"""`make demo`: the local cluster, the CRDs, the operator, a Sandbox that becomes Ready and then expires, a Tenant.

Where this machine can run the real node (root on Linux, with the packages `make deps` installs), sandboxes are real
containers on a kubelet + containerd node and the demo also uses the Python SDK: a sandbox made by get_or_create,
Python code run in it, a file written and read back, then the sandbox expiring by itself. Elsewhere the node is
simulated (kwok): pods are scheduled and reported running, nothing runs, and the SDK part is skipped (it says so).
NODE=real or NODE=fake forces a choice; KEEP=1 leaves the cluster running afterwards.
"""

from __future__ import annotations

import asyncio
import json
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


SDK_TTL_SECONDS = 40


async def sdk_demo(cluster: Cluster) -> str:
    """The main job through the SDK: a sandbox per user and project, code run in it, a file in and out."""
    from sandbox_operator.sdk import SandboxClient

    async with await SandboxClient.connect(namespace="default", kubeconfig=str(cluster.kubeconfig)) as sandboxes:
        say(f"SDK: get_or_create(key={{'user': 'alice', 'project': 'demo'}}, image='python:3.11-slim', "
            f"ttl={SDK_TTL_SECONDS})")
        started = time.monotonic()
        sandbox = await sandboxes.get_or_create({"user": "alice", "project": "demo"}, image="python:3.11-slim",
                                                ttl=SDK_TTL_SECONDS, cpu="500m", memory="256Mi")
        print(f"  {sandbox.name} is {sandbox.phase} after {time.monotonic() - started:.1f}s", flush=True)
        code = "import platform, sys; print('hello from', platform.python_version(), 'on', platform.node())"
        say(f"SDK: sandbox.run(['python3', '-c', {code!r}], timeout=10)")
        result = await sandbox.run(["python3", "-c", code], timeout=10)
        print(f"  exit {result.exit_code} in {result.duration * 1000:.0f} ms: {result.text.strip()}", flush=True)
        say("SDK: a runaway command is killed with everything it started at its timeout")
        result = await sandbox.run(["sh", "-c", "sleep 600 & sleep 601"], timeout=2)
        listing = (await sandbox.run(["ps", "-o", "args"])).text.splitlines()
        left = sum(line.split() in (["sleep", "600"], ["sleep", "601"]) for line in listing)
        print(f"  timed_out={result.timed_out} exit {result.exit_code} after {result.duration:.1f}s; "
              f"sleep processes left: {left}", flush=True)
        say("SDK: files.write('/tmp/notes/hello.json', ...) and files.read() back")
        payload = json.dumps({"answer": 42}).encode()
        await sandbox.files.write("/tmp/notes/hello.json", payload)
        back = await sandbox.files.read("/tmp/notes/hello.json")
        print(f"  wrote {len(payload)} bytes, read back {back.decode()} (equal: {back == payload})", flush=True)
        print(f"  it expires by itself at {sandbox.expires_at} (ttl {SDK_TTL_SECONDS}s); nothing cleans it up here")
        return sandbox.name


def real_node_possible() -> tuple[bool, str]:
    """Whether this machine can run the real node, and if not, why."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return False, "the real node needs root on Linux"
    from localcluster import node as real_node

    missing = real_node.missing_dependencies()
    return (not missing, f"missing {', '.join(missing)} (make deps installs them)" if missing else "")


def main() -> int:
    possible, why_not = real_node_possible()
    node = os.environ.get("NODE") or ("real" if possible else "fake")
    if node == "fake":
        print(f"note: the node is simulated (kwok): no container runs, so the SDK part (code, files) is skipped"
              f"{'; ' + why_not if why_not else ' (NODE=fake)'}", flush=True)
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
    settings: dict[str, str] = {}
    if node == "real":
        from localcluster import images
        from localcluster import node as real_node

        real_node.import_images(state, (images.PYTHON,))
        placement = real_node.pod_placement()
        settings = {"POD_NODE_SELECTOR": json.dumps(placement["nodeSelector"]),
                    "POD_TOLERATIONS": json.dumps(placement["tolerations"])}
    operator = OperatorProcess(cluster, log, **settings)
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
        names = ["hello"]
        if node == "real":
            names.append(asyncio.run(sdk_demo(cluster)))
        say("waiting for the TTLs to run out (the operator acts at the deadline) ...")
        started = time.monotonic()
        while time.monotonic() - started < 150:
            result = subprocess.run([*kubectl, "get", "sbx", *names, "-n", "default", "--no-headers",
                                     "--ignore-not-found"], capture_output=True, text=True, check=False)
            if not result.stdout.strip():
                break
            print("  " + result.stdout.strip().replace("\n", "\n  "), flush=True)
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
