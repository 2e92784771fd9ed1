"""Start and stop a real Kubernetes control plane on 127.0.0.1, with kwok fake nodes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as child
processes in their own sessions; their PIDs, ports and paths are recorded in
``<state>/cluster.json`` so that ``stop`` can end exactly those processes (never by name)
and remove the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import binaries, kubeconfig
from .pki import CertificateAuthority, KeyPair, service_account_keys
from .ports import free_ports

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
FAKE_POD_CIDR = "10.245.0.0/16"  # addresses kwok hands to pods on fake nodes; never routed
FAKE_NODES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")


def fake_node(
    name: str, *, pods: int, cpu: str = "1000", memory: str = "16Ti", storage: str = "64Ti"
) -> dict[str, Any]:
    """A Node kwok takes up (its pods are fake: no container runs), with room for ``pods`` pods."""
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": storage}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "DefaultTolerationSeconds",
    "NodeRestriction",
    "Priority",
    "ResourceQuota",
    "PodSecurity",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
)


def default_state_dir() -> Path:
    """Where ``make cluster-up`` keeps its state: ``$SANDBOX_OPERATOR_CLUSTER_DIR`` or a fixed temp path."""
    configured = os.environ.get("SANDBOX_OPERATOR_CLUSTER_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "sandbox-operator-cluster"


def _log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


@dataclass
class ProcessRecord:
    """A child process this harness started: enough to find it again and stop only it."""

    name: str
    pid: int
    executable: str
    log: str

    def alive(self) -> bool:
        """True while the PID still runs the executable we started (PIDs can be reused)."""
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        return exe.removesuffix(" (deleted)") == self.executable

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is still there after ``timeout``."""
        if not self.alive():
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                _reap(self.pid)
                if not self.alive():
                    return
                time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (started by an earlier `up`)
        os.waitpid(pid, os.WNOHANG)


@dataclass
class ClusterState:
    """Everything ``cluster.json`` records about a running local cluster."""

    state_dir: str
    apiserver_url: str
    kubeconfig: str
    ports: dict[str, int]
    processes: list[ProcessRecord] = field(default_factory=list)
    version: str = ""
    node: str = "fake"

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / "cluster.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        """Read the recorded state, or None when no cluster was started in ``state_dir``."""
        path = state_dir / "cluster.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)


class ControlPlane:
    """Start, probe and stop one local cluster rooted at ``state_dir``."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.pki_dir = self.state_dir / "pki"
        self.logs_dir = self.state_dir / "logs"

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> ClusterState:
        """Bring the whole cluster up and wait until it serves and a node is Ready."""
        existing = ClusterState.load(self.state_dir)
        if existing and all(p.alive() for p in existing.processes):
            _log(f"already running in {self.state_dir}")
            return existing
        if existing:
            _log("found a stale or half-running cluster; stopping it first")
            self.stop()
        started = time.monotonic()
        paths = binaries.ensure_binaries(("etcd", "kubernetes", "kwok"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        self.logs_dir.mkdir(exist_ok=True)
        components = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        ports = dict(zip(components, free_ports(len(components)), strict=True))
        state = ClusterState(
            state_dir=str(self.state_dir),
            apiserver_url=f"https://127.0.0.1:{ports['apiserver']}",
            kubeconfig=str(self.state_dir / "admin.kubeconfig"),
            ports=ports,
            version=binaries.MODULES["kubernetes"].version,
        )
        state.save()
        try:
            self._write_pki_and_kubeconfigs(state)
            self._start_etcd(state, paths["etcd"])
            self._start_apiserver(state, paths["kube-apiserver"])
            self._wait_ready(state, timeout)
            self._start_controller_manager(state, paths["kube-controller-manager"])
            self._start_scheduler(state, paths["kube-scheduler"])
            self._start_kwok(state, paths["kwok"])
            self._register_fake_nodes(state, paths["kubectl"])
            self._wait_node_ready(state, paths["kubectl"], timeout)
        except BaseException:
            _log(f"start failed; logs are in {self.logs_dir}")
            self._dump_log_tails(state)
            self.stop(keep_logs=True)
            raise
        _log(f"cluster up in {time.monotonic() - started:.1f}s")
        return state

    def stop(self, keep_logs: bool = False) -> None:
        """Stop every recorded process by PID (reverse start order) and remove the state directory."""
        state = ClusterState.load(self.state_dir)
        if state:
            if state.node == "real":
                from . import node  # the real node has more to undo than processes

                node.stop_real_node(state)
            for record in reversed(state.processes):
                record.stop()
        if keep_logs:
            return
        if self.state_dir.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.state_dir)], check=False)

    def status(self) -> dict[str, Any]:
        """A summary of what runs and whether the apiserver answers ``/readyz``."""
        state = ClusterState.load(self.state_dir)
        if state is None:
            return {"running": False, "state_dir": str(self.state_dir)}
        return {
            "running": all(p.alive() for p in state.processes),
            "state_dir": state.state_dir,
            "kubeconfig": state.kubeconfig,
            "apiserver": state.apiserver_url,
            "version": state.version,
            "node": state.node,
            "ready": self._readyz(state),
            "processes": {p.name: {"pid": p.pid, "alive": p.alive()} for p in state.processes},
        }

    # --- pieces ----------------------------------------------------------------------

    def _spawn(self, state: ClusterState, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals exactly this tree
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
            )
        state.processes.append(ProcessRecord(name, process.pid, str(Path(argv[0]).resolve()), str(log_path)))
        state.save()

    def _write_pki_and_kubeconfigs(self, state: ClusterState) -> None:
        from .node import BRIDGE_IP  # pods on the real node reach the API server there (node.py's forwarder)

        ca = CertificateAuthority(self.pki_dir)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "127.0.0.1", "localhost", SERVICE_IP, BRIDGE_IP, "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
            ),
            client=False,
        )
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        service_account_keys(self.pki_dir)
        identities = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("kwok-controller", ("system:masters",)),
        }
        for stem, (user, groups) in identities.items():
            pair = ca.issue(stem, user, groups)
            kubeconfig.write(
                self.state_dir / f"{stem}.kubeconfig", state.apiserver_url, ca.pair.cert, user=user, client=pair
            )

    def _start_etcd(self, state: ClusterState, etcd: Path) -> None:
        client = f"http://127.0.0.1:{state.ports['etcd']}"
        peer = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        self._spawn(state, "etcd", [
            str(etcd),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync",  # throwaway data; as envtest does
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ])

    def _start_apiserver(self, state: ClusterState, apiserver: Path) -> None:
        pki = self.pki_dir
        self._spawn(state, "kube-apiserver", [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ])

    def _start_controller_manager(self, state: ClusterState, binary: Path) -> None:
        pki = self.pki_dir
        config = self.state_dir / "controller-manager.kubeconfig"
        self._spawn(state, "kube-controller-manager", [
            str(binary),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['controller-manager']}",
            # Every default controller: garbagecollector, namespace, resourcequota, serviceaccount(-token), ...
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--leader-elect=false",
            "--concurrent-gc-syncs=5",
            # Default 5m: a quota on a just-installed CRD's count/... would stay "unknown" that long.
            "--resource-quota-sync-period=10s",
            "--v=1",
        ])

    def _start_scheduler(self, state: ClusterState, binary: Path) -> None:
        config = self.state_dir / "scheduler.kubeconfig"
        self._spawn(state, "kube-scheduler", [
            str(binary),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ])

    def _start_kwok(self, state: ClusterState, binary: Path) -> None:
        port = state.ports["kwok"]
        self._spawn(
            state,
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-label-selector=type=kwok",
                f"--cidr={FAKE_POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--server-address=127.0.0.1:{port}",
                # Heartbeat through Leases; without it kwok patches node status too rarely for the
                # node lifecycle controller's 50s grace period, and nodes flap NotReady.
                "--node-lease-duration-seconds=40",
            ],
            env={"HOME": str(self.state_dir)},  # kwok reads ~/.kwok; keep it inside the state dir
        )

    def _register_fake_nodes(self, state: ClusterState, kubectl: Path) -> None:
        nodes = [fake_node(name, pods=110, cpu="32", memory="256Gi", storage="1Ti") for name in FAKE_NODES]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        subprocess.run(
            [str(kubectl), f"--kubeconfig={state.kubeconfig}", "apply", "-f", "-"],
            input=manifest.encode(), check=True, capture_output=True,
        )

    # --- probes ----------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        admin = KeyPair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return context

    def _readyz(self, state: ClusterState) -> bool:
        try:
            with urllib.request.urlopen(f"{state.apiserver_url}/readyz", context=self._ssl_context(), timeout=3) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _wait_ready(self, state: ClusterState, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._readyz(state):
                return
            dead = [p.name for p in state.processes if not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited during start-up")
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s")

    def _wait_node_ready(self, state: ClusterState, kubectl: Path, timeout: float) -> None:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={state.kubeconfig}", "wait", "--for=condition=Ready",
             "node", "--all", f"--timeout={int(timeout)}s"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise TimeoutError(f"nodes not Ready: {result.stderr.strip()}")

    def _dump_log_tails(self, state: ClusterState) -> None:
        for record in state.processes:
            try:
                tail = Path(record.log).read_text(errors="replace").splitlines()[-15:]
            except OSError:
                continue
            _log(f"--- last lines of {record.name} ---\n" + "\n".join(tail))
