"""The peer controller, kubernetes-sigs/agent-sandbox, for bench/fleet.py: built, installed and run as
/work/shared/PEER.md says (CRDs with conversion strategy None, no webhook, no leader election, Ready on /readyz)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from localcluster.binaries import CACHE_ROOT, cache_lock
from localcluster.handle import Cluster
from localcluster.ports import free_ports

VERSION = "v0.5.6"
MODULE = "sigs.k8s.io/agent-sandbox"
BINARY = CACHE_ROOT / "peer" / f"agent-sandbox-controller-{VERSION}"
GROUP = "agents.x-k8s.io"
API_VERSION = f"{GROUP}/v1beta1"
PLURAL = "sandboxes"


def _go() -> str | None:
    return shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)


def peer_binary() -> tuple[Path | None, str]:
    """The controller binary, built through the Go module proxy under the cache's build lock if it is missing;
    (None, why) when it cannot be had."""
    if BINARY.exists():
        return BINARY, ""
    go = _go()
    if go is None:
        return None, "the Go toolchain is not on PATH"
    with cache_lock(BINARY):
        if BINARY.exists():  # another process built it while we waited for the lock
            return BINARY, ""
        print(f"building the peer {MODULE} {VERSION} (a few minutes, once) ...", flush=True)
        command = f"{MODULE}/cmd/agent-sandbox-controller"
        with tempfile.TemporaryDirectory() as work:
            steps = [
                [go, "mod", "init", "peer"],
                [go, "get", f"{command}@{VERSION}"],
                ["nice", "-n", "10", go, "build", "-o", f"{BINARY}.partial", command],
            ]
            for step in steps:
                done = subprocess.run(step, cwd=work, capture_output=True, text=True)
                if done.returncode != 0:
                    return None, f"{' '.join(step[:3])} failed: {done.stderr.strip()[-300:]}"
        os.replace(f"{BINARY}.partial", BINARY)
    return BINARY, ""


def peer_crd_files() -> tuple[list[Path], str]:
    """The peer's CRD manifests from its module, downloaded through the Go module proxy into the module cache if it
    is not there yet (a fresh machine)."""
    go = _go()
    if go is None:
        return [], "the Go toolchain is not on PATH"
    done = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{VERSION}"], capture_output=True, text=True)
    try:
        found = json.loads(done.stdout)
    except ValueError:
        found = {}
    if not isinstance(found, dict) or "Dir" not in found:
        why = found.get("Error") if isinstance(found, dict) else None
        return [], f"go mod download {MODULE}@{VERSION} failed: {(why or done.stderr or done.stdout).strip()[-300:]}"
    directory = Path(found["Dir"])
    files = sorted((directory / "k8s" / "crds").glob("*.yaml"))
    return files, "" if files else f"no CRDs under {directory}/k8s/crds"


def install_peer_crds(cluster: Cluster, files: list[Path]) -> None:
    """Apply the peer's CRDs with conversion strategy None (their conversion webhook is not run) and wait for them."""
    documents: list[dict[str, Any]] = []
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                document["spec"]["conversion"] = {"strategy": "None"}
                documents.append(document)
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": documents})
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
    names = [f"crd/{document['metadata']['name']}" for document in documents]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


class PeerProcess:
    """One agent-sandbox-controller process on loopback ports; ``start`` returns when /readyz answers."""

    def __init__(self, binary: Path, kubeconfig: Path, log_path: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the controller and wait until its readiness endpoint answers."""
        metrics_port, health_port = free_ports(2)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--enable-webhook=false",
                 "--manage-webhook-certs=false", f"--metrics-bind-address=127.0.0.1:{metrics_port}",
                 f"--health-probe-bind-address=127.0.0.1:{health_port}", "--extensions"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the peer exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the peer was not ready in {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the controller (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
