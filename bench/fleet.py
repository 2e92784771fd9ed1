"""Issue 11, "Fast at 10,000 sandboxes": every figure in one run, ours next to the pods-created-directly floor and
the peer (kubernetes-sigs/agent-sandbox, see /work/shared/PEER.md).

    make bench                                          # 3 rounds of 100, fill 1000 (about 6 minutes on 2 cores)
    .venv/bin/python bench/fleet.py --count 20 --rounds 1 --fill 200 --burst 50 --expiring 20
    .venv/bin/python bench/fleet.py --fill 1000,3000,10000 --no-peer

1. Cold rounds: in every round, the same pod spec (copied from the pod our operator renders) is created ``--count``
   times four ways, each in a fresh namespace with only its controller running: pods created directly (no
   controller: the floor), sandbox-operator Sandboxes, agent-sandbox Sandboxes, and the same Sandboxes served by
   bench/fleet_bound.py's least controller with the operator's NetworkPolicy (what any Sandbox controller costs
   here at the least: the bound under the ratios); which goes first alternates.
   create->Ready comes from a raw watch in a process of its own, on arrival times; also throughput, the API server's
   write counters (apiserver_request_total; leases and node heartbeats left out; the bench's own creates and the
   pod's own writes, as the direct pods measured them, taken off), Events, CPU and RSS of the controller process.
2. Scale (sandbox-operator only): one namespace filled to each ``--fill`` size; RSS there; then the operator is
   killed (SIGKILL, as a failover) and a new one started next to a new Sandbox: how soon that Sandbox is Ready, when
   the operator goes quiet (under 2% CPU over 2 s), the CPU it spent and the writes it made meanwhile. Then a
   takeover: an active replica and a standby (Kopf peering), the active one stopped with SIGTERM (as in a rollout)
   next to a new Sandbox: how soon that one is Ready, when the standby goes quiet, its CPU and the writes. Then
   ``--burst`` Sandboxes are created while ``--expiring`` of the fill have TTL deadlines 3-10 s into the burst:
   deletion lateness is the DELETED event's arrival minus the Sandbox's status.expiresAt.

Uses the running local cluster (or starts one) and its kwok nodes only (pods select ``type=kwok``); registers extra
kwok nodes for big fills and removes them, its namespaces and its processes at the end, also on Ctrl-C. The peer's
CRDs stay installed. It asserts nothing; it exits 1 when objects never became Ready (or were never deleted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet_cluster import (
    CpuWindow,
    RawApi,
    WriteKey,
    cluster_pids,
    controller_writes,
    cpu_seconds,
    create_all,
    create_namespace,
    delete_and_wait,
    events_by_source,
    foreign_controllers,
    rss_mib,
    wait_idle,
    wait_nodes_ready,
    write_label,
)
from fleet_peer import API_VERSION as PEER_API_VERSION
from fleet_peer import PLURAL as PEER_PLURAL
from fleet_peer import VERSION as PEER_VERSION
from fleet_peer import PeerProcess, install_peer_crds, peer_binary, peer_crd_files
from fleet_watch import Arrival, ReadyWatch
from localcluster.controlplane import fake_node
from localcluster.handle import Cluster, connect
from localcluster.operator_process import OperatorProcess, install_crds
from realnode import percentile
from sandbox_throughput import apiserver_writes

from sandbox_operator.api import names as c

PLACEMENT = {"type": "kwok"}  # the kwok nodes' label; the real node is tainted and never selected
SANDBOX_SPEC = {"image": "busybox:1.35.0", "command": ["sleep", "3600"],
                "resources": {"cpu": "10m", "memory": "16Mi", "ephemeralStorage": "64Mi"}}
PODS_PER_NODE = 1000
QUANTILES = (0.5, 0.9, 0.99)
WARMUP = "warmup"  # one object per phase before measuring, so first-use costs are not in the figures
IDLE_WINDOW = 2.0  # seconds the cluster's idle CPU is read for before each cold round


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp from the API server as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


# --- the ways to get a pod -------------------------------------------------------------------------------------------


@dataclass
class Controller:
    """One way from a created object to a Ready pod: the objects it takes and the process (if any) doing the work."""

    key: str  # "direct", "ours", "peer", "boundnp"
    title: str
    collection: Callable[[str], str]  # namespace -> collection path
    body: Callable[[str], dict[str, Any]]  # object name -> manifest
    created: WriteKey  # the bench's own create, taken off the write counts
    start: Callable[[str], Any] | None = None  # namespace -> process handle with .process.pid and .stop()


@dataclass
class Phase:
    """One controller's cold round."""

    controller: str
    count: int
    latencies: list[float]
    server_latencies: list[float]
    sent: float  # first create to last create sent
    seconds: float  # first create to last Ready
    missing: int
    writes: Counter[WriteKey]
    events: Counter[str]
    cpu: float | None = None
    rss_idle: float | None = None
    rss_after: float | None = None
    # CPU-seconds of each cluster process and the controller ("the controller") from the first create to 1 s after
    # the last Ready, less what each used idle over as long just before (node heartbeats, leases).
    cluster: dict[str, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else math.nan

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else math.nan


@dataclass
class Restart:
    live: float  # spawn to /healthz
    served: float  # spawn to the new Sandbox's Ready
    idle: float  # spawn to the start of the first quiet 2 s
    cpu: float  # CPU-seconds from spawn until quiet
    rss: float
    writes: Counter[WriteKey]


@dataclass
class Takeover:
    standby_rss: float  # the standby, paused beside the active replica, once quiet
    served: float  # the active replica's SIGTERM to the new Sandbox's Ready
    idle: float  # SIGTERM to the start of the standby's first quiet 2 s
    cpu: float  # the standby's CPU-seconds from the SIGTERM until quiet
    rss: float  # the standby, quiet after taking over
    writes: Counter[WriteKey]  # from the SIGTERM until the counters settle, the peering's keep-alives left out


@dataclass
class Expiry:
    lateness: list[float]
    never_deleted: int
    burst_latencies: list[float]
    burst_missing: int
    stamp_mismatches: int  # status.expiresAt differed from creationTimestamp + ttlSeconds
    burst_late_start: float  # the burst began this much after the planned moment


@dataclass
class Fill:
    size: int
    created: int
    submitted: float  # seconds the bench took to send the creates
    seconds: float  # first create to last Ready
    missing: int
    rss: float = math.nan
    rss_empty: float = math.nan
    restart: Restart | None = None
    takeover: Takeover | None = None
    expiry: Expiry | None = None


@dataclass
class Run:
    """Everything the bench created, so it can all be removed, and the failures seen."""

    cluster: Cluster
    api: RawApi
    tag: str
    scratch: Path
    namespaces: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    processes: list[Any] = field(default_factory=list)
    watches: list[ReadyWatch] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)  # phases during which another sandbox controller ran
    patience: float = 300.0

    def namespace(self, suffix: str) -> str:
        name = f"fleet-{self.tag}-{suffix}"
        self.namespaces.append(name)
        create_namespace(self.api, name, {"sandbox-operator.io/bench": "fleet"})
        return name

    def watch(self, path: str) -> ReadyWatch:
        watch = ReadyWatch(self.cluster.kubeconfig, path)
        self.watches.append(watch)
        return watch

    def operator(self, namespace: str, start: bool = True, **settings: str) -> OperatorProcess:
        """An operator process for ``namespace`` (standalone unless ``settings`` say otherwise), started."""
        operator = OperatorProcess(self.cluster, self.scratch / f"operator-{namespace}-{len(self.processes)}.log",
                                   NAMESPACES=namespace, POD_NODE_SELECTOR=json.dumps(PLACEMENT), **settings)
        self.processes.append(operator)
        if start:
            operator.start()
        return operator

    def own_pids(self) -> list[int]:
        return [p.process.pid for p in self.processes if p.process is not None]

    def note_others(self, label: str) -> None:
        """Remember it when another sandbox controller runs here: its work would show in this phase's figures."""
        others = foreign_controllers(self.own_pids())
        if others and label not in self.overlaps:
            print(f"    WARNING: another sandbox controller runs during {label}: {'; '.join(others)}", flush=True)
            self.overlaps.append(label)

    def wait_for_others(self, label: str) -> None:
        """Before a phase: wait (up to ``patience`` s) until no other sandbox controller has run for 10 s. A
        cluster-wide one would also reconcile this bench's objects, fighting ours over them."""
        deadline, quiet_since, told = time.monotonic() + self.patience, time.monotonic(), False
        while time.monotonic() < deadline:
            others = foreign_controllers(self.own_pids())
            if others:
                quiet_since = time.monotonic()
                if not told:
                    print(f"    waiting up to {self.patience:.0f} s for another sandbox controller to exit: "
                          f"{'; '.join(others)}", flush=True)
                    told = True
            elif time.monotonic() - quiet_since >= (10 if told else 0):
                return
            time.sleep(1)
        self.note_others(label)


def sandbox_body(name: str, lifetime: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {**SANDBOX_SPEC, **({"lifetime": lifetime} if lifetime else {})}
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name}, "spec": spec}


def sandboxes_path(namespace: str) -> str:
    return f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}"


def rendered_pod_spec(run: Run) -> dict[str, Any]:
    """The pod spec our operator renders for the bench's Sandbox, read from the pod it creates."""
    run.wait_for_others("the pod spec probe")
    namespace = run.namespace("podspec")
    operator = run.operator(namespace)
    try:
        run.api.create(sandboxes_path(namespace), sandbox_body("probe"))
        deadline = time.monotonic() + 60
        while True:
            status, data = run.api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{c.CHILD_PREFIX}probe")
            if status == 200:
                break
            if time.monotonic() > deadline or operator.process is None or operator.process.poll() is not None:
                raise RuntimeError(f"our operator made no pod for a Sandbox in 60s; see {operator.log_path}")
            time.sleep(0.2)
    finally:
        operator.stop()
    if delete_and_wait(run.api, f"/api/v1/namespaces/{namespace}", timeout=120):
        run.namespaces.remove(namespace)
    spec: dict[str, Any] = json.loads(data)["spec"]
    if spec.get("nodeSelector") != PLACEMENT:  # another operator, cluster-wide, got there first
        raise RuntimeError(f"the probe pod was not rendered by the bench's operator: nodeSelector "
                           f"{spec.get('nodeSelector')}, not {PLACEMENT}")
    for assigned in ("nodeName", "priority", "serviceAccount"):  # set by the scheduler and admission, not rendered
        spec.pop(assigned, None)
    return spec


def controllers(run: Run, pod_spec: dict[str, Any], peer: Path | None, bound: bool = False) -> list[Controller]:
    def direct_body(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "fleet-direct"}},
                "spec": pod_spec}

    def peer_body(name: str) -> dict[str, Any]:
        return {"apiVersion": PEER_API_VERSION, "kind": "Sandbox", "metadata": {"name": name},
                "spec": {"podTemplate": {"spec": pod_spec}}}

    def start_peer(namespace: str) -> PeerProcess:
        assert peer is not None
        process = PeerProcess(peer, run.cluster.kubeconfig, run.scratch / f"peer-{namespace}.log")
        run.processes.append(process)
        process.start()
        return process

    found = [
        Controller("direct", "pods created directly", lambda ns: f"/api/v1/namespaces/{ns}/pods", direct_body,
                   ("POST", "pods", "")),
        Controller("ours", "sandbox-operator", sandboxes_path, sandbox_body, ("POST", c.PLURAL, ""), run.operator),
    ]
    if peer is not None:
        found.append(Controller("peer", f"agent-sandbox {PEER_VERSION}",
                                lambda ns: f"/apis/{PEER_API_VERSION}/namespaces/{ns}/{PEER_PLURAL}", peer_body,
                                ("POST", PEER_PLURAL, ""), start_peer))
    if bound:
        from fleet_bound import BoundProcess, operator_writes  # it imports this module: here, not at the top

        status, policy = operator_writes(run)
        found.append(Controller("boundnp", "least controller + NetworkPolicy", sandboxes_path, sandbox_body,
                                ("POST", c.PLURAL, ""), lambda ns: BoundProcess(run, ns, pod_spec, status, policy)))
    return found


# --- phase 1: cold rounds --------------------------------------------------------------------------------------------


def settle(pid: int | None, timeout: float = 60) -> None:
    """Let trailing work finish: until the controller is quiet, and at least 2 s."""
    if pid is None:
        time.sleep(2)
    elif wait_idle(pid, timeout) is None:
        print(f"    (the controller did not go quiet within {timeout:.0f} s)", flush=True)


def settled_writes(cluster: Cluster, timeout: float = 30) -> Counter[WriteKey]:
    """The API server's write counters once they stopped moving for a second (the scheduler's Events and kwok's
    status patches trail the Ready the watch saw)."""
    deadline = time.monotonic() + timeout
    last = apiserver_writes(cluster)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = apiserver_writes(cluster)
        if controller_writes(now - last) == Counter():
            return now
        last = now
    return last


def cold_phase(run: Run, controller: Controller, round_number: int, count: int, workers: int, rate: float,
               timeout: float) -> Phase:
    """Create ``count`` objects in a fresh namespace with only this controller running; measure it all."""
    label = f"{controller.title} round {round_number}"
    run.wait_for_others(label)
    namespace = run.namespace(f"{controller.key}-r{round_number}")
    path = controller.collection(namespace)
    watch = run.watch(path)
    process = controller.start(namespace) if controller.start else None
    pid = process.process.pid if process is not None else None
    try:
        run.api.create(path, controller.body(WARMUP))
        if watch.wait_ready([WARMUP], 120):
            raise RuntimeError(f"{controller.title}: the warm-up object was not Ready in 120 s")
        settle(pid)
        writes_before = settled_writes(run.cluster)
        rss_idle = rss_mib(pid) if pid else None
        # The cluster's processes and the controller over one window: the first create to 1 s after the last Ready.
        window = CpuWindow({**cluster_pids(run.cluster), **({"the controller": pid} if pid else {})}, IDLE_WINDOW)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        names = [f"{controller.key}-{index:05d}" for index in range(count)]
        submitted = create_all(run.api, path, (controller.body(name) for name in names), workers, rate)
        sent = max(submitted.values()) - min(submitted.values())
        missing = watch.wait_ready(names, timeout)
        time.sleep(1.0)  # the last status write's echo, the scheduler's Events
        cluster = window.spent()
        ready = {name: watch.ready[name] for name in names if name in watch.ready}
        settle(pid)
        writes = controller_writes(settled_writes(run.cluster) - writes_before)
        cpu = cpu_seconds(pid) - cpu_before if pid else None
        rss_after = rss_mib(pid) if pid else None
        events = events_by_source(run.api, namespace, WARMUP)
        run.note_others(label)
    finally:
        watch.close()
        if process is not None:
            process.stop()
    first = min(submitted.values())
    last = max((arrival.mono for arrival in ready.values()), default=first)
    server = [parse_time(a.stamp) - parse_time(a.created) for a in ready.values() if a.stamp and a.created]
    phase = Phase(controller.key, count, [ready[n].mono - submitted[n] for n in ready], server, sent, last - first,
                  len(missing), writes, events, cpu, rss_idle, rss_after, cluster)
    if missing:
        run.failures.append(f"{controller.title} round {round_number}: {len(missing)} of {count} never Ready")
    if not delete_and_wait(run.api, f"/api/v1/namespaces/{namespace}", timeout=180):
        print(f"    (namespace {namespace} still terminating after 180 s)", flush=True)
    else:
        run.namespaces.remove(namespace)
    return phase


def phase_line(title: str, phase: Phase) -> str:
    quantiles = " ".join(f"p{round(q * 100)} {phase.quantile(q):.3f}s" for q in QUANTILES)
    process = (f"  CPU {phase.cpu:.2f}s  RSS {phase.rss_idle:.0f}->{phase.rss_after:.0f} MiB"
               if phase.cpu is not None else "")
    return (f"  {title:<26} {quantiles}  sent in {phase.sent:.1f}s  {phase.throughput:5.1f} Ready/s  "
            f"writes {sum(phase.writes.values()):5d}"
            f"{process}" + (f"  NOT READY {phase.missing}" if phase.missing else ""))


# --- phase 2: scale -------------------------------------------------------------------------------------------------


def fill_to(run: Run, namespace: str, watch: ReadyWatch, live: set[str], size: int, workers: int) -> Fill:
    """Create Sandboxes until ``size`` are live in the namespace; time them to Ready."""
    made = sum(name.startswith("fill-") for name in live | watch.deleted.keys())
    wanted = [f"fill-{index:05d}" for index in range(made, made + max(0, size - len(live)))]
    started = time.monotonic()
    create_all(run.api, sandboxes_path(namespace), (sandbox_body(name) for name in wanted), workers)
    submitted = time.monotonic() - started
    live.update(wanted)
    missing = watch.wait_ready(wanted, 120 + 0.5 * len(wanted))
    done = max((watch.ready[n].mono for n in wanted if n in watch.ready), default=started)
    if missing:
        run.failures.append(f"fill to {size}: {len(missing)} of {len(wanted)} never Ready")
    return Fill(size, len(wanted), submitted, done - started, len(missing))


def restart(run: Run, operator: OperatorProcess, namespace: str, watch: ReadyWatch, size: int
            ) -> tuple[Restart, OperatorProcess]:
    """SIGKILL the operator, start a new one (standalone) next to a new Sandbox; measure until the new one is quiet.
    Returns the new one."""
    writes_before = apiserver_writes(run.cluster)
    operator.stop(signal.SIGKILL)
    operator = run.operator(namespace, start=False)
    new = f"new-{size:05d}"
    spawned = time.monotonic()
    run.api.create(sandboxes_path(namespace), sandbox_body(new))
    operator.start()
    live = time.monotonic() - spawned
    assert operator.process is not None
    pid = operator.process.pid
    quiet = wait_idle(pid, timeout=120 + 0.05 * size)
    cpu = cpu_seconds(pid)  # a new process: everything it has used
    rss = rss_mib(pid)
    quiet, served = quiet_and_served(run, watch, new, quiet, spawned, f"restart at {size}")
    writes = controller_writes(settled_writes(run.cluster) - writes_before)
    return Restart(live, served, quiet - spawned, cpu, rss, writes), operator


def quiet_and_served(run: Run, watch: ReadyWatch, new: str, quiet: float | None, since: float, what: str
                     ) -> tuple[float, float]:
    """When the operator went quiet (now if it never did) and how long after ``since`` the Sandbox ``new`` was Ready
    (NaN if never); each failure noted."""
    if quiet is None:
        run.failures.append(f"{what}: the operator was not quiet in time")
        quiet = time.monotonic()
    if watch.wait_ready([new], 60):
        run.failures.append(f"{what}: the new Sandbox was never Ready")
    return quiet, watch.ready[new].mono - since if new in watch.ready else math.nan


PEERING_WRITES = {("kopfpeerings", ""), ("clusterkopfpeerings", "")}  # keep-alives, the same with or without work


def takeover(run: Run, operator: OperatorProcess, namespace: str, watch: ReadyWatch, size: int
             ) -> tuple[Takeover, OperatorProcess]:
    """A handover between two replicas, as in a rollout: an active replica and a standby (Kopf peering), each quiet;
    then the active one gets SIGTERM (Kopf withdraws it from the peering: the standby resumes at once) next to a new
    Sandbox. Measured from the SIGTERM: the new Sandbox's Ready, the standby's quiet, its CPU and the writes. Returns
    the standby, which works on from then."""
    operator.stop()
    peering = f"fleet-{run.tag}-{size}"
    run.api.create(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
                   {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering}})
    replicas = []
    for priority in ("200", "100"):  # the active replica, then the standby
        replica = run.operator(namespace, STANDALONE="false", PEERING_NAME=peering, PEERING_LIFETIME="60",
                               PRIORITY=priority)
        assert replica.process is not None
        settle(replica.process.pid, 60 + 0.02 * size)
        replicas.append(replica)
    active, standby = replicas
    assert standby.process is not None
    pid = standby.process.pid
    standby_rss, cpu_before = rss_mib(pid), cpu_seconds(pid)
    writes_before = apiserver_writes(run.cluster)
    new = f"handover-{size:05d}"
    assert active.process is not None
    stopped = time.monotonic()
    active.process.send_signal(signal.SIGTERM)
    run.api.create(sandboxes_path(namespace), sandbox_body(new))
    quiet = wait_idle(pid, timeout=120 + 0.05 * size)
    cpu, rss = cpu_seconds(pid) - cpu_before, rss_mib(pid)
    quiet, served = quiet_and_served(run, watch, new, quiet, stopped, f"takeover at {size}")
    active.stop()  # it has exited by now: reaped
    writes = controller_writes(settled_writes(run.cluster) - writes_before)
    writes = Counter({key: value for key, value in writes.items() if (key[1], key[2]) not in PEERING_WRITES})
    return Takeover(standby_rss, served, quiet - stopped, cpu, rss, writes), standby


def expiry_under_load(run: Run, namespace: str, watch: ReadyWatch, live: set[str], size: int, burst: int,
                      expiring: int, workers: int) -> Expiry:
    """Give ``expiring`` live Sandboxes TTL deadlines 3-10 s after a burst of ``burst`` creates begins."""
    path = sandboxes_path(namespace)
    chosen = sorted(name for name in live if name.startswith("fill-") and name in watch.ready)[:expiring]
    burst_at = time.time() + 3 + 0.02 * len(chosen)  # time to patch them all and for the operator to take it in
    ttl: dict[str, int] = {}
    for index, name in enumerate(chosen):
        deadline = burst_at + 3 + 7 * index / max(1, len(chosen) - 1)
        ttl[name] = math.ceil(deadline - parse_time(watch.ready[name].created))
    for name, seconds in ttl.items():
        status, data = run.api.request("PATCH", f"{path}/{name}", {"spec": {"lifetime": {"ttlSeconds": seconds}}},
                                       content_type="application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {name}: HTTP {status}: {data[:300]!r}")
    late_start = max(0.0, time.time() - burst_at)
    time.sleep(max(0.0, burst_at - time.time()))
    names = [f"burst-{size:05d}-{index:04d}" for index in range(burst)]
    submitted = create_all(run.api, path, (sandbox_body(name) for name in names), workers)
    live.update(names)
    last_deadline = max((parse_time(watch.ready[n].created) + s for n, s in ttl.items()), default=time.time())
    burst_missing = watch.wait_ready(names, 120 + 0.5 * burst)
    never = watch.wait_deleted(chosen, max(0.0, last_deadline - time.time()) + 120)
    live.difference_update(chosen)
    lateness, mismatches = [], 0
    for name in chosen:
        if name not in watch.deleted:
            continue
        deletion: Arrival = watch.deleted[name]
        planned = parse_time(watch.ready[name].created) + ttl[name]
        expires = parse_time(deletion.stamp) if deletion.stamp else planned
        mismatches += abs(expires - planned) > 0.5
        lateness.append(deletion.wall - expires)
    if never:
        run.failures.append(f"expiry at {size}: {len(never)} of {len(chosen)} never deleted")
    if burst_missing:
        run.failures.append(f"burst at {size}: {len(burst_missing)} of {burst} never Ready")
    burst_latencies = [watch.ready[n].mono - submitted[n] for n in names if n in watch.ready]
    return Expiry(lateness, len(never), burst_latencies, len(burst_missing), mismatches, late_start)


def scale(run: Run, sizes: list[int], burst: int, expiring: int, workers: int, share: float | None) -> list[Fill]:
    namespace = run.namespace("fill")
    watch = run.watch(sandboxes_path(namespace))
    operator = run.operator(namespace)
    assert operator.process is not None
    settle(operator.process.pid)
    rss_empty = rss_mib(operator.process.pid)
    print(f"  operator idle with an empty namespace: RSS {rss_empty:.1f} MiB", flush=True)
    live: set[str] = set()
    fills = []
    try:
        for size in sizes:
            run.wait_for_others(f"the fill to {size}")
            fill = fill_to(run, namespace, watch, live, size, workers)
            assert operator.process is not None
            settle(operator.process.pid, 60 + 0.02 * size)
            fill.rss, fill.rss_empty = rss_mib(operator.process.pid), rss_empty
            print(f"  fill {size}: {fill.created} created in {fill.submitted:.1f}s, all Ready in {fill.seconds:.1f}s;"
                  f" RSS {fill.rss:.1f} MiB", flush=True)
            fill.restart, operator = restart(run, operator, namespace, watch, size)
            live.add(f"new-{size:05d}")
            print(f"  restart at {size}: live {fill.restart.live:.2f}s, new Sandbox Ready {fill.restart.served:.2f}s,"
                  f" quiet {fill.restart.idle:.1f}s, {fill.restart.cpu:.1f} CPU-s, RSS {fill.restart.rss:.1f} MiB, "
                  f"{sum(fill.restart.writes.values())} writes", flush=True)
            print("    writes during the restart: " + restart_writes(fill.restart, share), flush=True)
            fill.takeover, operator = takeover(run, operator, namespace, watch, size)
            live.add(f"handover-{size:05d}")
            t = fill.takeover
            print(f"  takeover at {size}: standby RSS {t.standby_rss:.1f} MiB; after the SIGTERM, new Sandbox Ready "
                  f"{t.served:.2f}s, quiet {t.idle:.1f}s, {t.cpu:.1f} CPU-s, RSS {t.rss:.1f} MiB, "
                  f"{sum(t.writes.values())} writes ({write_summary(t.writes)})", flush=True)
            if burst or expiring:
                fill.expiry = expiry_under_load(run, namespace, watch, live, size, burst, expiring, workers)
                print(f"  expiry at {size}: deletion late p50/p99/max {expiry_cell(fill.expiry)}; burst create->Ready "
                      f"p50/p99 {burst_cell(fill.expiry)}", flush=True)
            run.note_others(f"the fill to {size}")
            fills.append(fill)
    finally:
        operator.stop()
        watch.close()
    return fills


def write_summary(writes: Counter[WriteKey] | dict[WriteKey, float], limit: int = 12) -> str:
    """The biggest counters, then how many more."""
    ordered = sorted(writes.items(), key=lambda kv: (-abs(kv[1]), write_label(kv[0])))
    text = ", ".join(f"{write_label(k)} {v:g}" for k, v in ordered[:limit])
    return (text or "none") + (f", and {len(ordered) - limit} more counters" if len(ordered) > limit else "")


def restart_writes(restart: Restart, share: float | None) -> str:
    total = sum(restart.writes.values())
    text = f"{total} ({write_summary(restart.writes)})"
    if share is None:
        return text
    return (f"{text}; the new Sandbox's own share is about {share:.1f} (cold rounds), leaving {total - share:.1f} for "
            "the unchanged ones")


def expiry_cell(expiry: Expiry) -> str:
    """Deletion lateness p50 / p99 / max."""
    if not expiry.lateness:
        return "none deleted"
    text = (f"{percentile(expiry.lateness, 0.5):.2f} / {percentile(expiry.lateness, 0.99):.2f} / "
            f"{max(expiry.lateness):.2f} s")
    return text + (f" ({expiry.never_deleted} never deleted)" if expiry.never_deleted else "")


def burst_cell(expiry: Expiry) -> str:
    """The burst's create->Ready p50 / p99."""
    if not expiry.burst_latencies:
        return "none Ready"
    return f"{percentile(expiry.burst_latencies, 0.5):.2f} / {percentile(expiry.burst_latencies, 0.99):.2f} s"


# --- the report ------------------------------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or math.isnan(numerator) or math.isnan(denominator) or not denominator:
        return "-"
    return f"x{numerator / denominator:.2f}"


def cell(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}{unit}"


@dataclass
class Cold:
    """The cold rounds of every controller, and how their writes are netted."""

    phases: dict[str, list[Phase]]
    titles: dict[str, str]
    created: dict[str, WriteKey]

    def floor(self, round_index: int) -> dict[WriteKey, float]:
        """The pod's own writes per pod in a round: the direct pods' writes less the bench's creates."""
        direct = self.phases.get("direct", [])
        return per_object_writes(direct[round_index], self.created["direct"], {}) if round_index < len(direct) else {}

    def net_writes(self, round_index: int, phase: Phase) -> dict[WriteKey, float]:
        """A controller's own writes per object in a round (the direct pods': all theirs, with the create)."""
        if phase.controller == "direct":
            return per_object_writes(phase, None, {})
        return per_object_writes(phase, self.created[phase.controller], self.floor(round_index))

    def figure(self, key: str, value: Callable[[int, Phase], float | None]) -> float | None:
        """The median over rounds of one figure of one controller."""
        known = [v for i, p in enumerate(self.phases[key]) if (v := value(i, p)) is not None]
        return median(known) if known else None

    def new_sandbox_share(self) -> float | None:
        """The writes one new Sandbox causes (its create, the pod's own, the operator's), from the cold rounds."""
        return self.figure("ours", lambda _i, p: sum(p.writes.values()) / p.count) if self.phases.get("ours") else None


def per_object_writes(phase: Phase, created: WriteKey | None, floor: dict[WriteKey, float]) -> dict[WriteKey, float]:
    """A phase's writes per object by counter, less the bench's creates and the pod's own writes (``floor``)."""
    result = {}
    for key in set(phase.writes) | set(floor):
        value = (phase.writes.get(key, 0) - (phase.count if key == created else 0)) / phase.count - floor.get(key, 0)
        if abs(value) >= 0.005:
            result[key] = value
    return result


def quantile_figure(q: float) -> Callable[[int, Phase], float | None]:
    return lambda _i, p: p.quantile(q)


def cold_table(cold: Cold, count: int, rounds: int, peer_note: str) -> None:
    keys = [key for key in ("direct", "ours", "peer", "boundnp") if cold.phases.get(key)]
    rows: list[tuple[str, Callable[[int, Phase], float | None], str, int]] = [
        *((f"create->Ready p{round(q * 100)}", quantile_figure(q), " s", 3) for q in QUANTILES),
        ("throughput, Ready/s (first create to last Ready)", lambda _i, p: p.throughput, "", 1),
        ("(the bench's creates were sent in, s)", lambda _i, p: p.sent, "", 2),
        ("API writes per object, all clients, with the create", lambda _i, p: sum(p.writes.values()) / p.count, "", 2),
        ("controller writes per object (less the create and the pod's own)",
         lambda i, p: sum(cold.net_writes(i, p).values()) if p.controller != "direct" else 0.0, "", 2),
        ("Events per object", lambda _i, p: sum(p.events.values()) / p.count, "", 2),
        ("controller CPU-s per 100 objects", lambda _i, p: None if p.cpu is None else p.cpu * 100 / p.count, "", 2),
        ("cluster CPU-s per 100 objects: the API server",
         lambda _i, p: p.cluster["kube-apiserver"] * 100 / p.count if "kube-apiserver" in p.cluster else None, "", 2),
        ("cluster CPU-s per 100 objects: every process, with the controller",
         lambda _i, p: sum(p.cluster.values()) * 100 / p.count if p.cluster else None, "", 2),
        ("controller RSS idle, MiB", lambda _i, p: p.rss_idle, "", 1),
        ("controller RSS after the round, MiB", lambda _i, p: p.rss_after, "", 1),
    ]
    print(f"\n## Cold create->Ready: {rounds} round(s) of {count}, medians over rounds\n")
    if peer_note:
        print(f"peer: not measured ({peer_note})\n")
    compared = [key for key in keys if key != "direct"]
    # ours against the peer (a goal), and against the least controller: what the operator costs beyond the bound
    against = [other for other in ("peer", "boundnp") if "ours" in keys and other in keys]
    header = ["figure", *(cold.titles[k] for k in keys), *(f"{cold.titles[k]} / direct" for k in compared),
              *(f"ours / {cold.titles[other]}" for other in against)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, value, unit, digits in rows:
        figures = {key: cold.figure(key, value) for key in keys}
        cells = [label, *(cell(figures[k], unit, digits) for k in keys)]
        cells += [ratio(figures[k], figures.get("direct")) for k in compared]
        cells += [ratio(figures["ours"], figures[other]) for other in against]
        print("| " + " | ".join(cells) + " |")
    per_round_ratios(cold, compared)


def per_round_ratios(cold: Cold, compared: list[str]) -> None:
    """Each round's p50 against the floor's in the same round: how far the rounds differ with the same code."""
    floors = [phase.quantile(0.5) for phase in cold.phases.get("direct", [])]
    if not floors:
        return
    print("\np50 against the floor's in the same round, round by round: " + "; ".join(
        f"{cold.titles[key]} " + ", ".join(ratio(phase.quantile(0.5), floor)
                                           for phase, floor in zip(cold.phases[key], floors, strict=False))
        for key in compared))


def cold_details(cold: Cold) -> None:
    for key, runs in cold.phases.items():
        if not runs:
            continue
        what = "with the create" if key == "direct" else "less the create and the pod's own writes"
        print(f"\n{cold.titles[key]}: writes per object by counter, {what} (median over rounds):")
        per_round = [cold.net_writes(i, p) for i, p in enumerate(runs)]
        medians = {k: median([r.get(k, 0.0) for r in per_round]) for r in per_round for k in r}
        shown = sorted((k for k, v in medians.items() if abs(v) >= 0.02), key=lambda k: (-medians[k], write_label(k)))
        for write in shown:
            print(f"    {write_label(write):<40} {medians[write]:6.2f}")
        rest = [v for k, v in medians.items() if k not in shown]
        if rest:
            print(f"    {len(rest)} more counters under 0.02 each, {sum(rest):+.2f} together")
        events: Counter[str] = Counter()
        for phase in runs:
            events.update(phase.events)
        total = sum(phase.count for phase in runs)
        print("  Events per object by reporter: "
              + (", ".join(f"{source} {value / total:.2f}" for source, value in events.most_common()) or "none"))
        components = sorted({name for phase in runs for name in phase.cluster})
        if components:
            spent = {name: median([p.cluster[name] * 100 / p.count for p in runs if name in p.cluster])
                     for name in components}
            print("  CPU-s per 100 objects, first create to 1 s after the last Ready, less idle (medians over rounds, "
                  "so they need not add up): " + ", ".join(f"{name} {value:.2f}" for name, value in spent.items()))
        server = [statistics.mean(p.server_latencies) for p in runs if p.server_latencies]
        if server:
            print(f"  cross-check from server stamps (1 s resolution): mean Ready transition - creation "
                  f"{median(server):.2f} s")


def scale_table(fills: list[Fill], share: float | None) -> None:
    print("\n## Scale: sandbox-operator, one namespace filled to each size\n")
    print("| fill | filled in | RSS at fill | RSS per sandbox | restart: live | new Sandbox Ready | quiet after"
          " | restart CPU-s | restart writes (less the new one's) | expiry lateness p50 / p99 / max"
          " | burst create->Ready p50 / p99 |")
    print("|" + "---|" * 11)
    for fill in fills:
        r, e = fill.restart, fill.expiry
        per_sandbox = f"{(fill.rss - fill.rss_empty) * 1024 / fill.size:.1f} KiB" + (
            f" (restarted: {(r.rss - fill.rss_empty) * 1024 / fill.size:.1f})" if r is not None else "")
        restart_cells = ["-"] * 5 if r is None else [
            f"{r.live:.2f} s", f"{r.served:.2f} s", f"{r.idle:.1f} s", f"{r.cpu:.1f}",
            f"{sum(r.writes.values())}" + (f" ({sum(r.writes.values()) - share:.1f})" if share is not None else "")]
        expiry_cells = ["-", "-"] if e is None else [expiry_cell(e), burst_cell(e)]
        rate = fill.created / max(fill.seconds, 1e-9)
        filled = f"{fill.created} in {fill.seconds:.1f} s ({rate:.0f}/s; sent in {fill.submitted:.1f} s)"
        rss = f"{fill.rss:.1f} MiB" + (f" (restarted: {r.rss:.1f})" if r is not None else "")
        cells = [str(fill.size), filled, rss, per_sandbox, *restart_cells, *expiry_cells]
        print("| " + " | ".join(cells) + " |")
    notes = [f"at {fill.size}, {fill.expiry.stamp_mismatches} status.expiresAt differed from creation + ttlSeconds"
             for fill in fills if fill.expiry and fill.expiry.stamp_mismatches]
    notes += [f"at {fill.size}, the burst began {fill.expiry.burst_late_start:.1f} s late"
              for fill in fills if fill.expiry and fill.expiry.burst_late_start > 0.5]
    takeovers = [fill for fill in fills if fill.takeover is not None]
    if takeovers:
        print("\n| fill | standby RSS before | takeover: new Sandbox Ready | quiet after | standby CPU-s "
              "| writes (less the new one's) | RSS after |")
        print("|" + "---|" * 7)
        for fill in takeovers:
            t = fill.takeover
            assert t is not None
            total = sum(t.writes.values())
            print(f"| {fill.size} | {t.standby_rss:.1f} MiB | {t.served:.2f} s | {t.idle:.1f} s | {t.cpu:.1f} | {total}"
                  + (f" ({total - share:.1f})" if share is not None else "") + f" | {t.rss:.1f} MiB |")
        print("\nThe takeover: an active replica and a standby (Kopf peering, each quiet), then SIGTERM to the active "
              "one (a rollout: Kopf withdraws it from the peering, the standby resumes at once) next to a new "
              "Sandbox; times from the SIGTERM, CPU the standby's from then, writes without the peering's "
              "keep-alives.")
    print("\nRSS at fill: the process that filled, once quiet; restarted: the new process, quiet after the restart. "
          "RSS per sandbox = (RSS - RSS idle with an empty namespace) / fill. The restart is a SIGKILL and a new "
          "process; live = /healthz answers; quiet = under 2% CPU over 2 s; times from the new process's start."
          + "".join(f"\nnote: {note}" for note in notes))


# --- the run ---------------------------------------------------------------------------------------------------------


def add_nodes(run: Run, pods: int) -> None:
    """Register kwok nodes for ``pods`` more pods."""
    run.nodes = [f"fleet-{run.tag}-kwok-{index}" for index in range(math.ceil(pods / PODS_PER_NODE))]
    for name in run.nodes:
        run.api.create("/api/v1/nodes", fake_node(name, pods=PODS_PER_NODE))
    missing = wait_nodes_ready(run.api, run.nodes, 60)
    if missing:
        raise RuntimeError(f"kwok did not take up nodes {sorted(missing)} within 60 s")


@contextmanager
def bench_run(prefix: str, patience: float = 300.0) -> Iterator[Run]:
    """The local cluster (started if none runs) with the CRDs, and a Run with a scratch directory; whatever the run
    created is removed after, however the bench ends."""
    cluster = connect(start=True)
    install_crds(cluster)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch:
        run = Run(cluster, RawApi(cluster.kubeconfig), uuid.uuid4().hex[:6], Path(scratch), patience=patience)
        try:
            yield run
        finally:
            clean_up(run)


def clean_up(run: Run) -> None:
    """Stop every process the bench started, then delete its namespaces and, once their pods are gone, its nodes
    (kwok finishes the pods' deletion only while their node exists). A second Ctrl-C stops the waiting only."""
    for watch in run.watches:
        watch.close()
    for process in run.processes:
        process.stop()
    started = time.monotonic()
    for namespace in run.namespaces:
        run.api.request("DELETE", f"/api/v1/namespaces/{namespace}", {"propagationPolicy": "Background"})
    left = list(run.namespaces)
    try:
        left = [ns for ns in run.namespaces if not delete_and_wait(run.api, f"/api/v1/namespaces/{ns}", 600)]
    except KeyboardInterrupt:
        print("\ninterrupted again: not waiting for the namespaces", flush=True)
    finally:
        for name in run.nodes:
            run.api.request("DELETE", f"/api/v1/nodes/{name}")
    print(f"\ncleanup: {len(run.namespaces)} namespace(s) and {len(run.nodes)} kwok node(s) deleted in "
          f"{time.monotonic() - started:.0f} s" + (f"; still terminating: {', '.join(left)}" if left else "")
          + "; the peer's CRDs (agents.x-k8s.io) stay installed", flush=True)


def measure(run: Run, args: argparse.Namespace, sizes: list[int], started: float) -> int:
    """Every phase the arguments ask for, then the report; 1 if anything never became Ready or was never deleted."""
    print(f"fleet bench {run.tag}: {os.cpu_count()} CPUs, cluster {run.cluster.kubeconfig}, "
          f"count {args.count} x {args.rounds} round(s) from {args.workers} client thread(s)"
          f"{f' at most {args.rate:g}/s' if args.rate else ''}, fill {sizes or '-'}, burst {args.burst}, "
          f"expiring {args.expiring}", flush=True)
    peer, peer_note = None, ""
    if args.no_peer:
        peer_note = "--no-peer"
    elif args.skip_cold:
        peer_note = "--skip-cold"
    else:
        files, peer_note = peer_crd_files()
        if files:
            peer, peer_note = peer_binary()
        if peer is not None:
            install_peer_crds(run.cluster, files)
    add_nodes(run, max(sizes, default=0) + args.burst + 2 * args.count + 200)
    print(f"registered {len(run.nodes)} kwok node(s) of {PODS_PER_NODE} pods", flush=True)
    pod_spec = rendered_pod_spec(run)
    print(f"pod spec: copied from the pod sandbox-operator rendered, nodeSelector {pod_spec.get('nodeSelector')}",
          flush=True)
    kinds = controllers(run, pod_spec, peer, bound=not (args.no_bound or args.skip_cold))
    cold = Cold({k.key: [] for k in kinds}, {k.key: k.title for k in kinds}, {k.key: k.created for k in kinds})
    for round_number in range(1, 0 if args.skip_cold else args.rounds + 1):
        order = kinds if round_number % 2 else list(reversed(kinds))
        print(f"round {round_number}: " + ", then ".join(k.title for k in order), flush=True)
        for controller in order:
            phase = cold_phase(run, controller, round_number, args.count, args.workers, args.rate, args.timeout)
            cold.phases[controller.key].append(phase)
            print(phase_line(controller.title, phase), flush=True)
    share = cold.new_sandbox_share()
    fills = scale(run, sizes, args.burst, args.expiring, args.fill_workers, share) if sizes else []
    if not args.skip_cold:
        cold_table(cold, args.count, args.rounds, peer_note)
        cold_details(cold)
    if fills:
        scale_table(fills, share)
    return finish(run, started, ": its work is in those figures")


def finish(run: Run, started: float, overlap_note: str) -> int:
    """Print what overlapped, how long it took and what failed; the exit status (1 when something failed)."""
    if run.overlaps:
        print("\nWARNING: another sandbox controller ran during " + ", ".join(run.overlaps) + overlap_note)
    print(f"\nmeasured in {(time.monotonic() - started) / 60:.1f} min")
    for failure in run.failures:
        print(f"FAILED: {failure}")
    return 1 if run.failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="objects per controller per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved cold rounds (default 3)")
    parser.add_argument("--fill", default="1000", help="comma-separated fill sizes (default 1000)")
    parser.add_argument("--burst", type=int, default=200, help="Sandboxes created in the expiry burst (default 200)")
    parser.add_argument("--expiring", type=int, default=100, help="fill Sandboxes expiring in the burst (default 100)")
    parser.add_argument("--no-peer", action="store_true", help="leave out agent-sandbox")
    parser.add_argument("--no-bound", action="store_true",
                        help="leave out the least controller (bench/fleet_bound.py) in the cold rounds")
    parser.add_argument("--skip-cold", action="store_true", help="no cold rounds: scale only")
    parser.add_argument("--skip-scale", action="store_true", help="no fill: cold rounds only")
    parser.add_argument("--workers", type=int, default=1,
                        help="creating threads in the cold rounds (default 1: one client, one create at a time)")
    parser.add_argument("--rate", type=float, default=0,
                        help="cold rounds: at most this many creates a second, the same for every controller "
                        "(default: as fast as the client goes)")
    parser.add_argument("--fill-workers", type=int, default=16, help="creating threads for fills and bursts")
    parser.add_argument("--timeout", type=float, default=180, help="seconds for a cold round's objects to be Ready")
    parser.add_argument("--wait-others", type=float, default=300,
                        help="before each phase, seconds to wait for other sandbox controllers to exit (default 300)")
    args = parser.parse_args()
    sizes = [] if args.skip_scale else sorted({int(size) for size in args.fill.split(",") if size.strip()})

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    with bench_run("fleet", patience=args.wait_others) as run:
        try:
            return measure(run, args, sizes, started)
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130


if __name__ == "__main__":
    sys.exit(main())
