"""A real node for the local cluster: kubelet + containerd + runc + CNI bridge + kube-router's firewall.

``start_real_node(state)`` adds the node ``real-node`` to a running control plane;
``stop_real_node(state)`` undoes all of it. From the shell::

    make deps                                # once per machine: the Debian packages (node-packages.txt)
    make cluster-up NODE=real                # = python -m localcluster up --node real
    make node-test                           # pytest -m node (starts the node itself if none runs)
    make cluster-down                        # stops everything by recorded PID, removes every trace

Needs root. One real node per machine (the bridge and kubelet port are machine-wide).

What it sets up, and why:

- **Network.** A Linux bridge ``sbxnode0`` with ``10.244.0.1/24``; pods get addresses from
  ``POD_CIDR`` through the CNI ``bridge`` + ``host-local`` plugins with ``isGateway: false`` and
  ``ipMasq: false``: pods have no default route, only the on-link pod subnet, and nothing is NATed.
  IP forwarding is left as the machine has it; on top, ``mangle`` rules (evaluated before any
  ``filter`` rule kube-router writes) drop every forwarded packet entering or leaving the bridge
  that is not bridge-to-bridge, and drop new connections from pods to the host except to
  ``HOST_PORTS_FOR_PODS``. So a pod packet can only reach another local pod, or a host listener
  a test opened on purpose. There is no kube-proxy: tests connect to pod IPs directly, and pods that talk to
  the API server (the operator installed by Helm) use ``apiserver_env()``: a TCP forwarder (``forwarder.py``,
  a recorded child process) listens on ``BRIDGE_IP:APISERVER_PORT_FOR_PODS`` and relays to the API server's
  loopback port; its serving certificate names ``BRIDGE_IP``.
- **NetworkPolicy.** kube-router v2 (built from its Go module) with only its firewall
  (``--run-firewall --run-router=false --run-service-proxy=false``): iptables + ipset, which this
  kernel has (it lacks the NFQUEUE support nftables-queue based enforcers need).
- **cgroups.** kubelet uses the cgroupfs driver with ``cgroupRoot`` nested under the cgroup this
  process runs in (``/proc/self/cgroup``), so every pod stays inside the test run's accounting; the
  machine's hierarchies are not moved, unmounted or reconfigured.
- **Kernel tunables.** kubelet wants to rewrite ``vm.overcommit_memory``, ``kernel.panic`` and
  ``kernel.panic_on_oops``; it runs in its own mount namespace where ``/proc/sys`` is read-only, with
  the ``KubeletInUserNamespace`` gate that turns those failed writes into log lines. Its volume
  mounts still reach containerd: the state directory is a shared bind mount.
- **Images.** No registry: ``localcluster.images`` builds and imports them; containerd has
  ``HTTPS_PROXY`` set to a closed loopback port, so a missing image fails fast instead of
  contacting a registry. Pods must use ``imagePullPolicy: IfNotPresent`` or ``Never``.
- **Placement.** The node carries label ``NODE_LABEL`` and taint ``NODE_TAINT``; use
  ``pod_placement()`` so a pod lands there (and only such pods do, not the kwok nodes' pods).

Everything lives under ``<cluster state>/node/``; what is created outside it (bridge, iptables
chains and rules, ipsets, cgroups, a few runtime directories) is recorded in ``node.json`` and
removed by ``stop_real_node``. Processes are stopped by their recorded PIDs, never by name.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import binaries, images, kubeconfig
from .controlplane import SERVICE_CIDR, ClusterState, ProcessRecord
from .pki import CertificateAuthority

NODE_NAME = "real-node"
NODE_LABEL = ("sandbox-operator.io/node", "real")
NODE_TAINT = {"key": "sandbox-operator.io/node", "value": "real", "effect": "NoSchedule"}
POD_CIDR = "10.244.0.0/24"
BRIDGE = "sbxnode0"
BRIDGE_IP = "10.244.0.1"  # the node's InternalIP: kubelet serves here, pods see the host here
HOST_PORTS_FOR_PODS = "18000:18099"  # host listeners (on BRIDGE_IP) that pods may open connections to
# Pods reach the API server at BRIDGE_IP:APISERVER_PORT_FOR_PODS (a forwarder to its 127.0.0.1 port; no kube-proxy):
# in-cluster clients take it from KUBERNETES_SERVICE_HOST/_PORT (see ``apiserver_env()``).
APISERVER_PORT_FOR_PODS = 18043
FORWARDER = Path(__file__).resolve().parent / "forwarder.py"
KUBELET_PORT = 10250
DEFAULT_IMAGES = (images.PAUSE, images.BUSYBOX)  # imported at start; others on demand (import_images)
CGROUP_LEAF = "sandbox-operator-node"
RULE_COMMENT = "sandbox-operator real node"
KUBE_ROUTER_PREFIXES = ("KUBE-", "kube-router", "inet6:KUBE-", "inet6:kube-router")  # its chains and ipsets

PACKAGE_LIST = Path(__file__).resolve().parent / "node-packages.txt"
# Debian packages the real node needs; ``node-deps.sh`` beside this file installs them (CI, fresh machines).
DEBIAN_PACKAGES = tuple(
    line.strip() for line in PACKAGE_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")
)
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# Paths outside the state dir that containerd/kubelet create with no option to move them.
RUNTIME_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods")


def _log(message: str) -> None:
    print(f"[cluster-node] {message}", file=sys.stderr, flush=True)


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, input=input)


def pod_placement() -> dict[str, Any]:
    """The pod spec fields that put a pod on the real node (and tolerate its taint)."""
    return {
        "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
        "tolerations": [{**NODE_TAINT, "operator": "Equal"}],
    }


def apiserver_env() -> list[dict[str, str]]:
    """Container env entries that point in-cluster clients (client-go, kubernetes_asyncio, Kopf) at the forwarder."""
    return [{"name": "KUBERNETES_SERVICE_HOST", "value": BRIDGE_IP},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(APISERVER_PORT_FOR_PODS)}]


def missing_dependencies() -> list[str]:
    """Commands or plugins the real node needs that this machine lacks (empty when all are there)."""
    commands = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "iptables-save", "ipset",
                "ip", "unshare", "mount", "nft", "gcc")
    missing = [c for c in commands if shutil.which(c) is None]
    cni_dir = _cni_bin_dir()
    for plugin in ("bridge", "host-local", "loopback"):
        if cni_dir is None or not (cni_dir / plugin).exists():
            missing.append(f"CNI plugin {plugin}")
    if not images.BUSYBOX_BINARY.exists():
        missing.append(str(images.BUSYBOX_BINARY))
    return missing


def _cni_bin_dir() -> Path | None:
    return next((Path(d) for d in CNI_BIN_DIRS if (Path(d) / "bridge").exists()), None)


# --- cgroups -------------------------------------------------------------------------


def _own_cgroup_paths() -> dict[str, str]:
    """``{hierarchy: path}`` of this process, from /proc/self/cgroup (v1 controllers and the v2 unified one)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers or "unified"] = path
    return paths


def kubelet_cgroup_root() -> str:
    """A cgroup path nested under this process's cgroup in every hierarchy (kubelet's ``cgroupRoot``)."""
    paths = sorted(set(_own_cgroup_paths().values()), key=len)
    deepest = paths[-1]
    for path in paths:
        if not (deepest + "/").startswith(path.rstrip("/") + "/"):
            raise RuntimeError(f"this process sits in unrelated cgroup paths {paths}; cannot nest the node under all")
    return deepest.rstrip("/") + "/" + CGROUP_LEAF


def _cgroup_mounts() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 and v2) as the machine has them."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(target))
    return mounts


def _create_cgroup_root(root: str) -> list[str]:
    """Create ``root`` in every hierarchy (copying cpuset parents' cpus/mems); return the dirs created."""
    created = []
    for mount in _cgroup_mounts():
        current = mount
        for part in root.strip("/").split("/"):
            parent, current = current, current / part
            if current.exists():
                continue
            current.mkdir()
            created.append(str(current))
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (parent / knob).exists() and (current / knob).exists():
                    (current / knob).write_text((parent / knob).read_text())
    return created


def _remove_cgroups(root: str, created: list[str]) -> list[str]:
    """Remove every cgroup under ``root`` (deepest first) and the parents we created; return leftovers."""
    leftovers = []
    for mount in _cgroup_mounts():
        top = mount / root.strip("/")
        if not top.exists():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir_cgroup(directory, leftovers)
        _rmdir_cgroup(top, leftovers)
    for directory in sorted(created, key=lambda p: -len(Path(p).parts)):
        if Path(directory).exists():
            _rmdir_cgroup(Path(directory), leftovers)
    return leftovers


def _rmdir_cgroup(directory: Path, leftovers: list[str]) -> None:
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)  # a dying task can hold the cgroup for a moment
    leftovers.append(str(directory))


# --- network ---------------------------------------------------------------------------


def _mangle_rules() -> list[tuple[str, list[str]]]:
    """(iptables command, rule) pairs that confine pod traffic; evaluated before kube-router's filter rules."""
    comment = ["-m", "comment", "--comment", RULE_COMMENT]
    rules = []
    for iptables in ("iptables", "ip6tables"):
        rules += [
            (iptables, ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *comment, "-j", "DROP"]),
            (iptables, ["FORWARD", "-o", BRIDGE, "!", "-i", BRIDGE, *comment, "-j", "DROP"]),
        ]
    rules += [
        ("iptables", ["INPUT", "-i", BRIDGE, "-p", "tcp", "-d", BRIDGE_IP, "--dport", HOST_PORTS_FOR_PODS,
                      *comment, "-j", "RETURN"]),
        ("iptables", ["INPUT", "-i", BRIDGE, "-m", "conntrack", "--ctstate", "NEW", *comment, "-j", "DROP"]),
        ("ip6tables", ["INPUT", "-i", BRIDGE, "-m", "conntrack", "--ctstate", "NEW", *comment, "-j", "DROP"]),
    ]
    return rules


def _setup_network() -> None:
    network = ipaddress.ip_network(POD_CIDR)
    for route in _run("ip", "-4", "route", "show").stdout.splitlines():
        dest = route.split()[0]
        if dest != "default" and ipaddress.ip_network(dest, strict=False).overlaps(network):
            raise RuntimeError(f"pod CIDR {POD_CIDR} overlaps the machine's route {route!r}")
    for iptables, rule in _mangle_rules():
        _run(iptables, "-t", "mangle", "-A", *rule)
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{BRIDGE_IP}/{network.prefixlen}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def _iptables_state(iptables: str) -> dict[str, tuple[set[str], list[str]]]:
    """``{table: (chains, rules)}`` from ``<iptables>-save``."""
    tables: dict[str, tuple[set[str], list[str]]] = {}
    current = ""
    for line in _run(f"{iptables}-save", check=False).stdout.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = (set(), [])
        elif line.startswith(":"):
            tables[current][0].add(line[1:].split()[0])
        elif line.startswith("-A "):
            tables[current][1].append(line)
    return tables


def _ours(chain: str) -> bool:
    return chain.startswith(KUBE_ROUTER_PREFIXES)


def _remove_iptables() -> None:
    """Delete our confinement rules, and every KUBE-* chain (kube-router's, kubelet's canaries) with its jumps."""
    for iptables in ("iptables", "ip6tables"):
        for table, (chains, rules) in _iptables_state(iptables).items():
            doomed = {c for c in chains if _ours(c)}
            for rule in rules:
                words = shlex.split(rule)
                chain = words[1]
                target = words[words.index("-j") + 1] if "-j" in words else ""
                if chain not in doomed and (target in doomed or RULE_COMMENT in words):
                    _run(iptables, "-t", table, "-D", *words[1:], check=False)
            for chain in doomed:
                _run(iptables, "-t", table, "-F", chain, check=False)
            for chain in doomed:
                _run(iptables, "-t", table, "-X", chain, check=False)


def _nft_tables() -> list[str]:
    """``family name`` of every nftables table (iptables-nft keeps its tables there)."""
    out = _run("nft", "list", "tables", check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


def _remove_empty_nft_tables(before: list[str]) -> None:
    """Delete the tables iptables-nft created for us, once they hold no rule any more."""
    for table in set(_nft_tables()) - set(before):
        family, name = table.split()
        listing = _run("nft", "list", "table", family, name, check=False).stdout
        body = [ln.strip() for ln in listing.splitlines()]
        if not any(ln and not ln.startswith(("table", "chain", "type", "}", "policy")) for ln in body):
            _run("nft", "delete", "table", family, name, check=False)


def _remove_ipsets() -> None:
    names = _run("ipset", "list", "-n", check=False).stdout.split()
    for name in names:
        if name.startswith(KUBE_ROUTER_PREFIXES):
            _run("ipset", "destroy", name, check=False)


# --- the node -----------------------------------------------------------------------------


@dataclass
class NodeRecord:
    """What ``node.json`` records: enough for ``stop_real_node`` to undo every change."""

    directory: str
    cgroup_root: str
    created_cgroups: list[str] = field(default_factory=list)
    created_runtime_paths: list[str] = field(default_factory=list)
    nft_tables_before: list[str] = field(default_factory=list)
    shared_mount: bool = False
    processes: list[ProcessRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.directory) / "node.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> NodeRecord | None:
        path = directory / "node.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)


class RealNode:
    """One real node under ``<state_dir>/node`` attached to the control plane described by ``state``."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.cluster_dir = Path(state.state_dir)
        self.dir = self.cluster_dir / "node"
        self.logs = self.cluster_dir / "logs"
        self.containerd_dir = self.dir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubelet_dir = self.dir / "kubelet"
        self.cni_conf_dir = self.dir / "cni" / "net.d"

    # -- start ----------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> NodeRecord:
        """Start containerd, kubelet and kube-router; on failure undo everything and re-raise."""
        existing = NodeRecord.load(self.dir)
        if existing and existing.processes and all(p.alive() for p in existing.processes):
            _log(f"real node already running in {self.dir}")
            return existing
        if existing or self.dir.exists():
            _log("found a stale or half-running real node; stopping it first")
            self.stop()
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise RuntimeError(f"bridge {BRIDGE} exists: another real node runs on this machine (one at a time)")
        missing = missing_dependencies()
        if missing:
            raise RuntimeError(f"the real node needs: {', '.join(missing)} (run make deps)")
        started = time.monotonic()
        paths = binaries.ensure_binaries(("kubernetes", "kube-router"))
        timings = {"binaries": time.monotonic() - started}
        self.dir.mkdir(parents=True, exist_ok=False)
        self.logs.mkdir(exist_ok=True)
        record = NodeRecord(directory=str(self.dir), cgroup_root=kubelet_cgroup_root())
        record.created_runtime_paths = [p for p in RUNTIME_PATHS if not Path(p).exists()]
        record.nft_tables_before = _nft_tables()
        record.save()
        self.state.node = "real"
        self.state.save()
        try:
            _setup_network()
            record.created_cgroups = _create_cgroup_root(record.cgroup_root)
            record.save()
            self._share_state_dir(record)
            self._write_cni_config()
            self._start_containerd(record)
            self._start_forwarder(record)
            step = time.monotonic()
            images.ensure_images(self.socket, DEFAULT_IMAGES)
            timings["images"] = time.monotonic() - step
            step = time.monotonic()
            self._start_kubelet(record, paths["kubelet"])
            self._wait_node_ready(timeout)
            timings["kubelet"] = time.monotonic() - step
            step = time.monotonic()
            self._start_kube_router(record, paths["kube-router"])
            self._wait_firewall(record, timeout)
            timings["kube-router"] = time.monotonic() - step
        except BaseException:
            _log(f"real node start failed; logs are in {self.logs}")
            for process in record.processes:
                tail = Path(process.log).read_text(errors="replace").splitlines()[-20:]
                _log(f"--- last lines of {process.name} ---\n" + "\n".join(tail))
            self.stop()
            raise
        timings["total"] = time.monotonic() - started
        record.timings = timings
        record.save()
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        _log(f"real node {NODE_NAME} ready in {timings['total']:.1f}s ({steps})")
        return record

    def _spawn(self, record: NodeRecord, name: str, argv: list[str], executable: Path,
               env: dict[str, str] | None = None) -> None:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.dir, env={**os.environ, **(env or {})},
            )
        entry = ProcessRecord(name, process.pid, str(executable.resolve()), str(log_path))
        record.processes.append(entry)
        record.save()
        self.state.processes.append(entry)
        self.state.save()

    def _start_forwarder(self, record: NodeRecord) -> None:
        """Relay BRIDGE_IP:APISERVER_PORT_FOR_PODS to the API server (which listens on 127.0.0.1 only)."""
        python = Path(sys.executable)
        self._spawn(record, "apiserver-forwarder", [
            str(python), str(FORWARDER), f"{BRIDGE_IP}:{APISERVER_PORT_FOR_PODS}",
            f"127.0.0.1:{self.state.ports['apiserver']}",
        ], python)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _listening(BRIDGE_IP, APISERVER_PORT_FOR_PODS):
                return
            if not record.processes[-1].alive():
                raise RuntimeError("the API server forwarder exited during start-up")
            time.sleep(0.1)
        raise TimeoutError(f"the API server forwarder did not listen on {BRIDGE_IP}:{APISERVER_PORT_FOR_PODS}")

    def _share_state_dir(self, record: NodeRecord) -> None:
        """Make the node dir a shared mount: kubelet's volume mounts, made in its own namespace, reach containerd."""
        _run("mount", "--bind", str(self.dir), str(self.dir))
        record.shared_mount = True
        record.save()
        _run("mount", "--make-shared", str(self.dir))

    def _start_containerd(self, record: NodeRecord) -> None:
        cni_bin = _cni_bin_dir()
        config = self.containerd_dir / "config.toml"
        self.containerd_dir.mkdir(parents=True)
        config.write_text(f"""\
version = 2
root = "{self.containerd_dir / 'root'}"
state = "{self.containerd_dir / 'state'}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.containerd_dir / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  disable_hugetlb_controller = true
  restrict_oom_score_adj = true  # no CAP_SYS_RESOURCE here: never ask for a lower score than containerd has
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc')}"
        Root = "{self.containerd_dir / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{self.cni_conf_dir}"
    max_conf_num = 1
""")
        # A missing image must fail fast, never reach out to a registry: every fetch goes to a closed port.
        closed = "http://127.0.0.1:9"
        self._spawn(
            record, "containerd", [shutil.which("containerd") or "containerd", "--config", str(config)],
            Path(shutil.which("containerd") or "containerd"),
            env={"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "https_proxy": closed, "http_proxy": closed,
                 "NO_PROXY": "", "no_proxy": ""},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answered = self.socket.exists() and _run("ctr", "--address", str(self.socket), "version", check=False)
            if answered and answered.returncode == 0:
                return
            if not record.processes[-1].alive():
                raise RuntimeError("containerd exited during start-up")
            time.sleep(0.2)
        raise TimeoutError("containerd did not answer on its socket within 60s")

    def _write_cni_config(self) -> None:
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        network = ipaddress.ip_network(POD_CIDR)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "sandbox-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,  # no default route in pods: only the on-link pod subnet
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.dir / "cni" / "ipam"),
                        "ranges": [[{
                            "subnet": POD_CIDR,
                            "rangeStart": str(network.network_address + 10),
                            "rangeEnd": str(network.broadcast_address - 1),
                        }]],
                    },
                },
                {"type": "loopback"},
            ],
        }
        (self.cni_conf_dir / "10-sandbox-node.conflist").write_text(json.dumps(conflist, indent=2))

    def _kubelet_files(self) -> tuple[Path, Path]:
        ca = CertificateAuthority(self.cluster_dir / "pki")
        client = ca.issue("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",))
        serving = ca.issue("kubelet-serving", f"system:node:{NODE_NAME}", ("system:nodes",),
                           server_names=(BRIDGE_IP, NODE_NAME), client=False)
        node_kubeconfig = self.dir / "kubelet.kubeconfig"
        kubeconfig.write(node_kubeconfig, self.state.apiserver_url, ca.pair.cert,
                         user=f"system:node:{NODE_NAME}", client=client)
        self.kubelet_dir.mkdir(parents=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_IP,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(ca.pair.cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},  # only CA-signed clients (the apiserver) get in at all
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": kubelet_cgroup_root(),
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            "podCIDR": POD_CIDR,
            "resolvConf": "",  # pods get no nameserver: there is nothing they may ask
            "clusterDomain": "cluster.local",
            "registerNode": True,
            "registerWithTaints": [NODE_TAINT],
            "imageGCHighThresholdPercent": 100,  # images cannot be pulled again: never collect them
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "featureGates": {"KubeletInUserNamespace": True},
            "protectKernelDefaults": False,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "volumeStatsAggPeriod": "0s",
            "maxPods": 50,
            "localStorageCapacityIsolation": True,
        }
        config_path = self.dir / "kubelet-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        return node_kubeconfig, config_path

    def _start_kubelet(self, record: NodeRecord, kubelet: Path) -> None:
        node_kubeconfig, config_path = self._kubelet_files()
        argv = [
            str(kubelet),
            f"--config={config_path}",
            f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={self.kubelet_dir}",
            f"--cert-dir={self.kubelet_dir / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
            "--v=1",
        ]
        # Own mount namespace with a read-only /proc/sys, so kubelet cannot change the machine's kernel
        # tunables. kubelet tolerates that failure only when KubeletInUserNamespace is on and it believes it
        # runs in a user namespace, which it reads from /proc/self/uid_map: show it a non-identity map.
        # (Nothing else changes: it still runs as real root; runc, in containerd's namespaces, is unaffected.)
        uid_map = self.dir / "kubelet-uid_map"
        uid_map.write_text("0 0 1\n")
        script = (
            "mount --make-rprivate /proc && mount -o bind,ro /proc/sys /proc/sys"
            f" && mount --bind {shlex.quote(str(uid_map))} /proc/$$/uid_map && exec "
            + " ".join(shlex.quote(a) for a in argv)
        )
        wrapper = ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script]
        self._spawn(record, "kubelet", wrapper, kubelet)

    def _kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        kubectl = binaries.MODULES["kubernetes"].bin_dir() / "kubectl"
        return _run(str(kubectl), f"--kubeconfig={self.state.kubeconfig}", *args, check=check, input=input)

    def _wait_node_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._kubectl("get", "node", NODE_NAME, check=False).returncode == 0:
                break
            time.sleep(0.5)
        remaining = max(1, int(deadline - time.monotonic()))
        result = self._kubectl("wait", "--for=condition=Ready", f"node/{NODE_NAME}", f"--timeout={remaining}s",
                               check=False)
        if result.returncode != 0:
            raise TimeoutError(f"node {NODE_NAME} not Ready: {result.stderr.strip()}")

    def _start_kube_router(self, record: NodeRecord, kube_router: Path) -> None:
        self._spawn(record, "kube-router", [
            str(kube_router),
            f"--kubeconfig={self.state.kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            "--health-port=0",
            "--metrics-port=0",
            "--v=1",
        ], kube_router)

    def _wait_firewall(self, record: NodeRecord, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _run("iptables", "-t", "filter", "-S", "KUBE-ROUTER-FORWARD", check=False).returncode == 0:
                return
            if not record.processes[-1].alive():
                raise RuntimeError("kube-router exited during start-up")
            time.sleep(0.5)
        raise TimeoutError("kube-router did not install its firewall chains")

    # -- stop -----------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Undo everything ``start`` did; return what could not be removed (empty when clean)."""
        record = NodeRecord.load(self.dir)
        if record is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return []
        by_name = {p.name: p for p in record.processes}
        if "apiserver-forwarder" in by_name:
            by_name["apiserver-forwarder"].stop()
        if "kube-router" in by_name:
            by_name["kube-router"].stop()
        if "kubelet" in by_name:
            by_name["kubelet"].stop()
        if "containerd" in by_name and by_name["containerd"].alive():
            self._remove_all_containers()
        if "containerd" in by_name:
            by_name["containerd"].stop()
        # Pods bound to a node object that no kubelet serves would hang; the pod GC removes them with it.
        self._kubectl("delete", "node", NODE_NAME, "--ignore-not-found", "--wait=false", "--request-timeout=5s",
                      check=False)
        self._unmount_all()
        _remove_iptables()
        _remove_ipsets()
        _remove_empty_nft_tables(record.nft_tables_before)
        _run("ip", "link", "delete", BRIDGE, check=False)
        leftovers = _remove_cgroups(record.cgroup_root, record.created_cgroups)
        for path in record.created_runtime_paths:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        ours = {p.pid for p in record.processes}
        self.state.processes = [p for p in self.state.processes if p.pid not in ours]
        self.state.node = "fake"
        if self.state.path.exists():
            self.state.save()
        leftovers += _settled_leftovers()
        if leftovers:
            _log("left behind: " + "; ".join(leftovers))
        return leftovers

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, check=False)

    def _remove_all_containers(self) -> None:
        """Kill and delete every container and pod sandbox (kubelet is already stopped)."""
        containers = self._ctr("containers", "list", "-q").stdout.split()
        for container in containers:
            self._ctr("tasks", "kill", "--signal", "SIGKILL", container)
        for container in containers:
            for _ in range(50):
                deleted = self._ctr("tasks", "delete", "--force", container)
                if deleted.returncode == 0 or "not found" in deleted.stderr:
                    break
                time.sleep(0.1)
            self._ctr("containers", "delete", container)

    def _unmount_all(self) -> None:
        """Unmount everything below the node dir (overlay rootfs, shm, netns, volumes), deepest first, then the dir."""
        prefix = str(self.dir)
        for _ in range(3):
            targets = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
            inside = sorted({t for t in targets if t == prefix or t.startswith(prefix + "/")}, key=len, reverse=True)
            if not inside:
                return
            for target in inside:
                if _run("umount", target, check=False).returncode != 0:
                    _run("umount", "--lazy", target, check=False)


def _listening(host: str, port: int | None = None) -> bool:
    """Whether a TCP socket listens on ``host`` (IPv4, and ``port`` if given), from /proc/net/tcp."""
    wanted = ipaddress.ip_address(host).packed[::-1].hex().upper()  # the kernel prints the address little-endian
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and address == wanted and (port is None or int(hex_port, 16) == port):
            return True
    return False


def _settled_leftovers(timeout: float = 10.0) -> list[str]:
    """``leftover_resources`` once they stop going: the kernel removes a pod's veth pair in the background after its
    network namespace is gone, so a teardown that just unmounted them can still see some."""
    deadline = time.monotonic() + timeout
    while True:
        found = leftover_resources()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def leftover_resources() -> list[str]:
    """Anything of a real node that is still on the machine: bridge, rules, ipsets, mounts (empty when clean)."""
    found = []
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    if _listening(BRIDGE_IP):
        found.append(f"a TCP listener on {BRIDGE_IP} (the API server forwarder?)")
    links = _run("ip", "-o", "link", "show", "type", "veth").stdout.strip()
    if links:
        found.append(f"veth links: {links}")
    for iptables in ("iptables", "ip6tables"):
        for table, (chains, rules) in _iptables_state(iptables).items():
            found += [f"{iptables} -t {table} chain {c}" for c in chains if _ours(c)]
            found += [f"{iptables} -t {table} {r}" for r in rules if RULE_COMMENT in r or " KUBE-" in r]
    found += [f"ipset {n}" for n in _run("ipset", "list", "-n", check=False).stdout.split()
              if n.startswith(KUBE_ROUTER_PREFIXES)]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
              if "sandbox-operator-cluster" in line or "/node/containerd" in line or "/node/kubelet" in line]
    return found


def start_real_node(state: ClusterState) -> NodeRecord:
    """Add the real node to the running control plane ``state`` (``up --node real``)."""
    return RealNode(state).start()


def import_images(state: ClusterState, references: tuple[str, ...] = (images.PYTHON,)) -> list[str]:
    """Build (cached) and import more images into the running real node, e.g. ``images.PYTHON`` for the demo."""
    return images.ensure_images(RealNode(state).socket, references)


def stop_real_node(state: ClusterState) -> list[str]:
    """Tear the real node down completely (called by ``ControlPlane.stop`` before the control plane stops)."""
    return RealNode(state).stop()
