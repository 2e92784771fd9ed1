"""Run the operator as a real process (``python -m sandbox_operator``) against the cluster under test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localcluster.handle import Cluster
from localcluster.paths import REPO_ROOT
from localcluster.ports import free_ports

ROOT = REPO_ROOT


def install_crds(cluster: Cluster) -> None:
    """Apply every CRD in crds/ and wait until the API server serves them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))


class OperatorProcess:
    """One operator process; ``start``/``stop`` can be called repeatedly (e.g. to test a restart)."""

    def __init__(self, cluster: Cluster, log_path: Path, kubeconfig: Path | None = None, **settings: str) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.kubeconfig = kubeconfig or cluster.kubeconfig  # e.g. a user bound to exactly the chart's ClusterRole
        self.metrics_port, self.health_port = free_ports(2)
        self.settings = {"STANDALONE": "true", **settings}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the operator and wait until its liveness endpoint answers."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SANDBOX_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "SANDBOX_OPERATOR_HEALTH_PORT": str(self.health_port),
            **{f"SANDBOX_OPERATOR_{key}": value for key, value in self.settings.items()},
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox_operator"], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the operator did not become live in {timeout}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the operator (SIGKILL simulates a crash); kill it if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus samples, as ``{'name{labels}': value}``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
