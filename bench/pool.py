"""Warm starts from a SandboxPool: templated Sandboxes claiming a pool's warm pods, next to templated Sandboxes
started cold, the same pods created directly (the floor) and the peer's warm pool (agent-sandbox's SandboxWarmPool
and SandboxClaims, see /work/shared/PEER.md).

    make bench-pool                                        # kwok: 50 claims against a pool of 50, and the rest
    .venv/bin/python bench/pool.py --count 20 --no-peer --rate 20
    make bench-pool BENCH_ARGS="--node real"               # the real node: 5 warm claims against 5 cold starts

The cluster is the one ``python -m localcluster`` manages, started if none runs, as for bench/fleet.py;
``SANDBOX_OPERATOR_CLUSTER_DIR`` picks another one (e.g. ``SANDBOX_OPERATOR_CLUSTER_DIR=/tmp/socb``).

kwok (the default): one phase after another, each in a fresh namespace with only its controller running.
1. sandbox-operator warm: a SandboxTemplate and a SandboxPool of ``--pool`` replicas (timed until all are Ready),
   one warm-up claim, then ``--count`` templated Sandboxes at once from ``--workers`` clients (``--rate`` paces them).
   The phases below use the pod spec of one of its warm pods.
2. sandbox-operator cold: the same recipe in a template without a pool; ``--count`` templated Sandboxes.
3. pods created directly, the floor: ``--count`` pods of that spec.
4. agent-sandbox warm: its SandboxTemplate of that pod spec, a SandboxWarmPool of ``--pool``, ``--count`` claims.
create->Ready: from the create's submission to the arrival of the first watch event with the Ready condition True
(bench/fleet_watch.py). API writes: the API server's apiserver_request_total deltas (leases and node heartbeats left
out; Events count) less the bench's creates and each new pod's own writes (its binding, kwok's status patches, the
scheduler's Event: what one directly created pod costs). Of a controller's writes, those that make warm pods (pods
and Sandboxes created, the pool's status) are the refill writes; the rest are the claim writes.

``--node real`` (the local cluster's real kubelet node; busybox:1.35.0): a pool of ``--count`` (default 5), then warm
claims one at a time (each once the pool is full again), then cold templated starts one at a time.

Prints numbers and asserts nothing; exits 1 when objects never became Ready. Removes its namespaces, kwok nodes and
processes at the end, also on Ctrl-C; the peer's CRDs stay installed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import (
    Controller,
    Phase,
    Run,
    add_nodes,
    cell,
    clean_up,
    cold_phase,
    finish,
    parse_time,
    per_object_writes,
    phase_line,
    ratio,
    sandboxes_path,
    settle,
    settled_writes,
)
from fleet_cluster import (
    RawApi,
    WriteKey,
    controller_writes,
    cpu_seconds,
    create_all,
    delete_and_wait,
    events_by_source,
    rss_mib,
    write_label,
)
from fleet_peer import GROUP as PEER_GROUP
from fleet_peer import VERSION as PEER_VERSION
from fleet_peer import PeerProcess, install_peer_crds, peer_binary, peer_crd_files
from fleet_watch import ReadyWatch
from localcluster.handle import connect
from localcluster.operator_process import OperatorProcess, install_crds
from realnode import operator_namespace, percentile

from sandbox_operator.api import names as c

RECIPE = {"image": "busybox:1.35.0", "command": ["sleep", "3600"], "resources": {"cpu": "50m", "memory": "32Mi"}}
LIFETIME = {"ttlSeconds": 3600}
POOL = "warm"  # the pool's name and its template's
COLD_TEMPLATE = "cold"
WARMUP = "warmup"
QUANTILES = (0.5, 0.9, 0.99)
PEER_EXTENSIONS = f"extensions.{PEER_GROUP}/v1beta1"
POD_CREATE: WriteKey = ("POST", "pods", "")
ASSIGNED = ("nodeName", "priority", "serviceAccount")  # set on a pod by the scheduler and admission, not rendered


def ours_path(namespace: str, plural: str) -> str:
    return f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{plural}"


def peer_path(namespace: str, plural: str) -> str:
    return f"/apis/{PEER_EXTENSIONS}/namespaces/{namespace}/{plural}"


def templated(template: str) -> Callable[[str], dict[str, Any]]:
    """Sandboxes of ``template`` that set only their lifetime."""
    return lambda name: {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name},
                         "spec": {"templateRef": {"name": template}, "lifetime": LIFETIME}}


def create_template(api: RawApi, namespace: str, name: str, recipe: dict[str, Any]) -> None:
    api.create(ours_path(namespace, c.TEMPLATE_PLURAL),
               {"apiVersion": c.API_VERSION, "kind": c.TEMPLATE_KIND, "metadata": {"name": name}, "spec": recipe})


def create_pool(api: RawApi, namespace: str, replicas: int) -> None:
    api.create(ours_path(namespace, c.POOL_PLURAL),
               {"apiVersion": c.API_VERSION, "kind": c.POOL_KIND, "metadata": {"name": POOL},
                "spec": {"templateRef": {"name": POOL}, "replicas": replicas}})


def wait_pool_full(api: RawApi, path: str, replicas: int, timeout: float) -> bool:
    """Wait until the pool's status counts ``replicas`` ready warm pods."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (api.get_json(path).get("status") or {}).get("readyReplicas", 0) >= replicas:
            return True
        time.sleep(0.25)
    return False


def launches(api: RawApi, namespace: str, names: list[str]) -> Counter[str]:
    """How our Sandboxes' pods started (status.launch: Warm or Cold)."""
    wanted = set(names)
    return Counter(str((item.get("status") or {}).get("launch") or "none")
                   for item in api.get_json(ours_path(namespace, c.PLURAL))["items"]
                   if item["metadata"]["name"] in wanted)


def own_writes(operator: OperatorProcess) -> Counter[str]:
    """The operator's own count (sandbox_operator_api_requests_total) of its requests other than reads."""
    counts: Counter[str] = Counter()
    for key, value in operator.metrics().items():
        if key.startswith("sandbox_operator_api_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
            if labels.get("verb") not in ("get", "list"):
                code = "" if labels.get("code") == "2xx" else f" ({labels.get('code')})"
                counts[f"{labels.get('verb')} {labels.get('resource')}{code}"] += int(value)
    return counts


def drop_namespace(run: Run, namespace: str) -> None:
    """Delete a phase's namespace now; clean_up retries what is still there at the end."""
    if delete_and_wait(run.api, f"/api/v1/namespaces/{namespace}", timeout=180):
        run.namespaces.remove(namespace)
    else:
        print(f"    (namespace {namespace} still terminating after 180 s)", flush=True)


# --- warm phases: a pool, then claims against it ---------------------------------------------------------------------


@dataclass
class PoolKind:
    """One controller's warm pool: how to make it, claim from it and read it."""

    key: str
    title: str
    claims: Callable[[str], str]  # namespace -> the collection of the objects that claim
    claim: Callable[[str], dict[str, Any]]  # name -> manifest
    created: WriteKey  # the bench's create of a claim
    pool_path: Callable[[str], str]  # namespace -> the pool object
    make_pool: Callable[[str, int], list[WriteKey]]  # namespace, replicas -> the bench's creates
    start: Callable[[str], Any]  # namespace -> a process handle with .process.pid and .stop()
    refill: Callable[[WriteKey], bool]  # the controller's writes that make warm pods rather than serve claims
    launches: Callable[[str, list[str]], Counter[str]] | None = None


@dataclass
class PoolPhase:
    """One warm phase: the claims (measured as a cold phase is) and the pool around them."""

    phase: Phase
    fill_seconds: float  # pool created -> its last warm pod Ready
    fill_writes: Counter[WriteKey]  # all writes while it filled, less the bench's creates
    filled: int  # pods created while it filled
    refill_seconds: float  # first claim sent -> the last new pod Ready
    pods_made: int  # pods created while the claims ran: refills, and cold starts if any
    launches: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)  # the operator's own count of its writes during the claims
    pod_spec: dict[str, Any] = field(default_factory=dict)


def last_ready(watch: ReadyWatch, before: set[str]) -> float:
    """Arrival of the last Ready among the objects that were not Ready ``before``."""
    return max((a.mono for name, a in watch.ready.items() if name not in before), default=math.nan)


def pool_phase(run: Run, kind: PoolKind, count: int, replicas: int, workers: int, rate: float,
               timeout: float) -> PoolPhase:
    """Fill the pool, claim from it once, then ``count`` times at once; measure it all."""
    run.wait_for_others(kind.title)
    namespace = run.namespace(kind.key)
    claims_path, pool_path = kind.claims(namespace), kind.pool_path(namespace)
    claims = run.watch(claims_path)
    pods = run.watch(f"/api/v1/namespaces/{namespace}/pods")
    process = kind.start(namespace)
    pid: int = process.process.pid
    operator = process if isinstance(process, OperatorProcess) else None
    try:
        settle(pid)
        before = settled_writes(run.cluster)
        started = time.monotonic()
        bench_creates = kind.make_pool(namespace, replicas)
        if not wait_pool_full(run.api, pool_path, replicas, timeout):
            raise RuntimeError(f"{kind.title}: the pool of {replicas} was not full within {timeout:.0f} s")
        fill_seconds = last_ready(pods, set()) - started
        settle(pid)
        fill_writes = controller_writes(settled_writes(run.cluster) - before) - Counter(bench_creates)
        pod_spec = run.api.get_json(f"/api/v1/namespaces/{namespace}/pods")["items"][0]["spec"]
        run.api.create(claims_path, kind.claim(WARMUP))
        if claims.wait_ready([WARMUP], 120):
            raise RuntimeError(f"{kind.title}: the warm-up claim was not Ready in 120 s")
        settle(pid)
        wait_pool_full(run.api, pool_path, replicas, timeout)
        settle(pid)
        warm = set(pods.ready)
        events_before = events_by_source(run.api, namespace, WARMUP)  # the fill's: the scheduler's for warm pods
        writes_before = settled_writes(run.cluster)
        own_before = own_writes(operator) if operator else Counter()
        rss_idle, cpu_before = rss_mib(pid), cpu_seconds(pid)
        names = [f"{kind.key}-{index:05d}" for index in range(count)]
        submitted = create_all(run.api, claims_path, (kind.claim(name) for name in names), workers, rate)
        missing = claims.wait_ready(names, timeout)
        settle(pid)
        refilled = wait_pool_full(run.api, pool_path, replicas, timeout)
        settle(pid)
        writes = controller_writes(settled_writes(run.cluster) - writes_before)
        cpu, rss_after = cpu_seconds(pid) - cpu_before, rss_mib(pid)
        own = own_writes(operator) - own_before if operator else Counter()
        refill_seconds = last_ready(pods, warm) - min(submitted.values())
        started_how = kind.launches(namespace, names) if kind.launches else Counter()
        events = events_by_source(run.api, namespace, WARMUP) - events_before
        run.note_others(kind.title)
    finally:
        claims.close()
        pods.close()
        process.stop()
    ready = {name: claims.ready[name] for name in names if name in claims.ready}
    first = min(submitted.values())
    last = max((arrival.mono for arrival in ready.values()), default=first)
    server = [parse_time(a.stamp) - parse_time(a.created) for a in ready.values() if a.stamp and a.created]
    phase = Phase(kind.key, count, [ready[n].mono - submitted[n] for n in ready], server,
                  max(submitted.values()) - first, last - first, len(missing), writes, events, cpu, rss_idle, rss_after)
    if missing:
        run.failures.append(f"{kind.title}: {len(missing)} of {count} claims never Ready")
    if not refilled:
        run.failures.append(f"{kind.title}: the pool was not full again within {timeout:.0f} s of the claims")
    drop_namespace(run, namespace)
    spec = {key: value for key, value in pod_spec.items() if key not in ASSIGNED}
    return PoolPhase(phase, fill_seconds, fill_writes, fill_writes[POD_CREATE], refill_seconds, writes[POD_CREATE],
                     started_how, own, spec)


def our_refill(key: WriteKey) -> bool:
    """Our writes that make warm pods: the pods, and the pool's status."""
    return key == POD_CREATE or key[1:] == (c.POOL_PLURAL, "status")


def peer_refill(key: WriteKey) -> bool:
    """The peer's writes that make warm pods: a Sandbox, its pod and Service each, and the pool's status."""
    return key in {POD_CREATE, ("POST", "sandboxes", ""), ("POST", "services", "")} or key[1:] == (
        "sandboxwarmpools", "status")


def our_pool(run: Run) -> PoolKind:
    def make_pool(namespace: str, replicas: int) -> list[WriteKey]:
        create_template(run.api, namespace, POOL, RECIPE)
        create_pool(run.api, namespace, replicas)
        return [("POST", c.TEMPLATE_PLURAL, ""), ("POST", c.POOL_PLURAL, "")]

    return PoolKind(
        "ours-warm", "sandbox-operator warm (SandboxPool)", sandboxes_path, templated(POOL), ("POST", c.PLURAL, ""),
        lambda ns: f"{ours_path(ns, c.POOL_PLURAL)}/{POOL}", make_pool, run.operator,
        refill=our_refill, launches=lambda ns, names: launches(run.api, ns, names),
    )


def peer_pool(run: Run, binary: Path, pod_spec: dict[str, Any]) -> PoolKind:
    def make_pool(namespace: str, replicas: int) -> list[WriteKey]:
        run.api.create(peer_path(namespace, "sandboxtemplates"), {
            "apiVersion": PEER_EXTENSIONS, "kind": "SandboxTemplate", "metadata": {"name": POOL},
            "spec": {"podTemplate": {"spec": pod_spec}}})
        run.api.create(peer_path(namespace, "sandboxwarmpools"), {
            "apiVersion": PEER_EXTENSIONS, "kind": "SandboxWarmPool", "metadata": {"name": POOL},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": POOL}}})
        return [("POST", "sandboxtemplates", ""), ("POST", "sandboxwarmpools", "")]

    def start(namespace: str) -> PeerProcess:
        process = PeerProcess(binary, run.cluster.kubeconfig, run.scratch / f"peer-{namespace}.log")
        run.processes.append(process)
        process.start()
        return process

    def claim(name: str) -> dict[str, Any]:
        return {"apiVersion": PEER_EXTENSIONS, "kind": "SandboxClaim", "metadata": {"name": name},
                "spec": {"warmPoolRef": {"name": POOL}}}

    return PoolKind(
        "peer-warm", f"agent-sandbox {PEER_VERSION} warm (SandboxWarmPool)",
        lambda ns: peer_path(ns, "sandboxclaims"), claim, ("POST", "sandboxclaims", ""),
        lambda ns: f"{peer_path(ns, 'sandboxwarmpools')}/{POOL}", make_pool, start,
        refill=peer_refill,
    )


def cold_controllers(run: Run, pod_spec: dict[str, Any]) -> list[Controller]:
    """Templated Sandboxes without a pool, and the same pods created directly (fleet.py's cold phase runs both)."""
    def start_cold(namespace: str) -> OperatorProcess:
        create_template(run.api, namespace, COLD_TEMPLATE, RECIPE)
        return run.operator(namespace)

    def direct(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "pool-direct"}},
                "spec": pod_spec}

    return [
        Controller("ours-cold", "sandbox-operator cold (template, no pool)", sandboxes_path, templated(COLD_TEMPLATE),
                   ("POST", c.PLURAL, ""), start_cold),
        Controller("direct", "pods created directly", lambda ns: f"/api/v1/namespaces/{ns}/pods", direct, POD_CREATE),
    ]


# --- the kwok report -------------------------------------------------------------------------------------------------


def net_writes(writes: Counter[WriteKey], count: int, created: WriteKey | None, pods: int,
               floor: dict[WriteKey, float]) -> dict[WriteKey, float]:
    """Writes per object, less the bench's ``count`` creates and the own writes of the ``pods`` pods made."""
    result = {}
    for key in set(writes) | set(floor):
        value = (writes.get(key, 0) - (count if key == created else 0) - floor.get(key, 0.0) * pods) / max(count, 1)
        if abs(value) >= 0.005:
            result[key] = value
    return result


@dataclass
class Column:
    """One way to a Ready pod, as the report shows it."""

    title: str
    phase: Phase
    net: dict[WriteKey, float]  # the controller's writes per object
    pool: PoolPhase | None = None
    refill: Callable[[WriteKey], bool] | None = None
    fill_net: dict[WriteKey, float] = field(default_factory=dict)  # the controller's writes per warm pod made

    def split(self, refill: bool) -> float | None:
        if self.refill is None:
            return None
        return sum(v for k, v in self.net.items() if self.refill(k) == refill)


def quantile(q: float) -> Callable[[Column], float | None]:
    return lambda col: percentile(col.phase.latencies, q) if col.phase.latencies else None


def launched(col: Column) -> str:
    if col.pool is None or not col.pool.launches:
        return "-"
    return ", ".join(f"{how} {n}" for how, n in sorted(col.pool.launches.items()))


def report(columns: dict[str, Column], count: int, replicas: int, peer_note: str) -> None:
    def pool_figure(value: Callable[[PoolPhase], float]) -> Callable[[Column], float | None]:
        return lambda col: None if col.pool is None else value(col.pool)

    rows: list[tuple[str, Callable[[Column], float | None], str, int]] = [
        *((f"create->Ready p{round(q * 100)}", quantile(q), " s", 3) for q in QUANTILES),
        ("throughput, Ready/s (first create to last Ready)", lambda col: col.phase.throughput, "", 1),
        ("(the bench's creates were sent in, s)", lambda col: col.phase.sent, "", 2),
        ("API writes per object, all clients, with the create",
         lambda col: sum(col.phase.writes.values()) / col.phase.count, "", 2),
        ("controller writes per object (less the create and new pods' own)",
         lambda col: None if col.phase.controller == "direct" else sum(col.net.values()), "", 2),
        ("  of which claim", lambda col: col.split(False), "", 2),
        ("  of which refill (warm pods made, pool status)", lambda col: col.split(True), "", 2),
        ("Events per object", lambda col: sum(col.phase.events.values()) / col.phase.count, "", 2),
        ("controller CPU-s per 100 objects",
         lambda col: None if col.phase.cpu is None else col.phase.cpu * 100 / col.phase.count, "", 2),
        ("controller RSS after, MiB", lambda col: col.phase.rss_after, "", 1),
        (f"pool of {replicas} filled in (created -> last warm pod Ready)", pool_figure(lambda p: p.fill_seconds),
         " s", 2),
        ("  controller writes per warm pod made while filling", lambda col: sum(col.fill_net.values()) or None, "", 2),
        ("refilled (first claim sent -> last new pod Ready)", pool_figure(lambda p: p.refill_seconds), " s", 2),
        ("pods created while the claims ran", pool_figure(lambda p: float(p.pods_made)), "", 0),
    ]
    keys = [key for key in ("direct", "ours-cold", "ours-warm", "peer-warm") if key in columns]
    pairs = [(a, b) for a, b in (("ours-warm", "ours-cold"), ("ours-warm", "direct"), ("ours-warm", "peer-warm"),
                                 ("peer-warm", "direct")) if a in columns and b in columns]
    short = {"direct": "direct", "ours-cold": "ours cold", "ours-warm": "ours warm", "peer-warm": "peer warm"}
    print(f"\n## Warm claims: {count} against a pool of {replicas}, on kwok\n")
    if peer_note:
        print(f"peer: not measured ({peer_note})\n")
    header = ["figure", *(columns[k].title for k in keys), *(f"{short[a]} / {short[b]}" for a, b in pairs)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, value, unit, digits in rows:
        figures = {key: value(columns[key]) for key in keys}
        cells = [label, *(cell(figures[k], unit, digits) for k in keys)]
        cells += [ratio(figures[a], figures[b]) for a, b in pairs]
        print("| " + " | ".join(cells) + " |")
    print("| launches (status.launch) | " + " | ".join(launched(columns[k]) for k in keys) + " |" + " |" * len(pairs))
    for key in keys:
        col = columns[key]
        what = ("its own writes per pod, less the create: the floor taken off the others" if key == "direct"
                else "controller writes per object by counter" + (", refill marked" if col.refill else ""))
        print(f"\n{col.title}: {what}:")
        for write, value in sorted(col.net.items(), key=lambda kv: (-kv[1], write_label(kv[0]))):
            mark = "  refill" if col.refill and col.refill(write) else ""
            print(f"    {write_label(write):<40} {value:6.2f}{mark}")
        if col.fill_net:
            print("  while filling, per warm pod made: " + ", ".join(
                f"{write_label(k)} {v:.2f}" for k, v in sorted(col.fill_net.items(), key=lambda kv: -kv[1])))
        if col.pool and col.pool.own:
            print("  the operator's own count during the claims (sandbox_operator_api_requests_total), per claim: "
                  + ", ".join(f"{k} {v / col.phase.count:.2f}" for k, v in sorted(col.pool.own.items())))
        if col.phase.events:
            print("  Events per object by reporter: " + ", ".join(
                f"{source} {n / col.phase.count:.2f}" for source, n in col.phase.events.most_common()))
        server = statistics.mean(col.phase.server_latencies) if col.phase.server_latencies else math.nan
        if server >= 0:
            print(f"  cross-check from server stamps (1 s resolution): mean Ready transition - creation {server:.2f} s")
        elif server < 0:  # the peer's claim copies the Ready condition of the Sandbox it took, made earlier
            print(f"  (no cross-check from server stamps: the Ready transition predates creation by {-server:.1f} s)")


def log_problems(scratch: Path, limit: int = 8) -> None:
    """Warnings, errors and tracebacks in the controllers' logs of this run, a few lines of each log."""
    for log in sorted(scratch.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if any(word in line for word in ("WARNING", "ERROR", "Traceback", "level=error", '"error"'))]
        if lines:
            print(f"\n{log.name}: {len(lines)} warning/error line(s), the first {min(limit, len(lines))}:")
            for line in lines[:limit]:
                print(f"    {line[:600]}")


def warm_column(kind: PoolKind, measured: PoolPhase, count: int, floor: dict[WriteKey, float]) -> Column:
    """A warm phase's column: its writes less the bench's claims and the own writes of the pods it made."""
    return Column(kind.title, measured.phase,
                  net_writes(measured.phase.writes, count, kind.created, measured.pods_made, floor), measured,
                  kind.refill, net_writes(measured.fill_writes, measured.filled, None, measured.filled, floor))


def measure_kwok(run: Run, args: argparse.Namespace, started: float) -> int:
    count, replicas = args.count or 50, args.pool or args.count or 50
    print(f"pool bench {run.tag}: {os.cpu_count()} CPUs, cluster {run.cluster.kubeconfig}, {count} claims against a "
          f"pool of {replicas} from {args.workers} client thread(s)"
          f"{f' at most {args.rate:g}/s' if args.rate else ''}", flush=True)
    binary, peer_note = None, "--no-peer" if args.no_peer else ""
    if not args.no_peer:
        files, peer_note = peer_crd_files()
        if files:
            binary, peer_note = peer_binary()
        if binary is not None:
            install_peer_crds(run.cluster, files)
    add_nodes(run, 6 * (count + replicas) + 100)
    ours_kind = our_pool(run)
    ours = pool_phase(run, ours_kind, count, replicas, args.workers, args.rate, args.timeout)
    print(phase_line(ours_kind.title, ours.phase), flush=True)
    controllers, cold = cold_controllers(run, ours.pod_spec), {}
    for controller in controllers:
        cold[controller.key] = cold_phase(run, controller, 1, count, args.workers, args.rate, args.timeout)
        print(phase_line(controller.title, cold[controller.key]), flush=True)
    floor = per_object_writes(cold["direct"], POD_CREATE, {})  # one pod's own writes, less its create
    columns = {ctl.key: Column(ctl.title, cold[ctl.key], net_writes(cold[ctl.key].writes, count, ctl.created, count,
                                                                    {} if ctl.key == "direct" else floor))
               for ctl in controllers}
    columns["ours-warm"] = warm_column(ours_kind, ours, count, floor)
    if binary is not None:
        peer_kind = peer_pool(run, binary, ours.pod_spec)
        try:
            peer = pool_phase(run, peer_kind, count, replicas, args.workers, args.rate, args.timeout)
            print(phase_line(peer_kind.title, peer.phase), flush=True)
            columns["peer-warm"] = warm_column(peer_kind, peer, count, floor)
        except (RuntimeError, TimeoutError) as error:
            peer_note = f"its warm pool did not run here: {error}"
            print(f"  peer: {peer_note}", flush=True)
    report(columns, count, replicas, peer_note)
    return finish(run, started, " (CPU contention; a cluster-wide one would also act on these objects)")


# --- the real node ---------------------------------------------------------------------------------------------------


def one_at_a_time(api: RawApi, watch: ReadyWatch, namespace: str, template: str, names: list[str],
                  before_each: Callable[[], None], timeout: float) -> list[float]:
    """Create the templated Sandboxes one after another, each once the last is Ready; their create->Ready."""
    latencies = []
    for name in names:
        before_each()
        sent = time.monotonic()
        api.create(ours_path(namespace, c.PLURAL), templated(template)(name))
        if watch.wait_ready([name], timeout):
            print(f"  {name} was not Ready within {timeout:.0f} s", flush=True)
            continue
        latencies.append(watch.ready[name].mono - sent)
        print(f"  {name}: {latencies[-1]:.2f} s", flush=True)
    return latencies


def wait_pods_at_most(api: RawApi, namespace: str, count: int, timeout: float) -> None:
    """Wait until at most ``count`` pods, terminating ones included, are left in the namespace."""
    deadline = time.monotonic() + timeout
    while len(api.get_json(f"/api/v1/namespaces/{namespace}/pods")["items"]) > count and time.monotonic() < deadline:
        time.sleep(0.5)


def measure_real(args: argparse.Namespace) -> int:
    count = args.count or 5
    with operator_namespace("pool-real") as (cluster, namespace):
        api = RawApi(cluster.kubeconfig)
        pool_path = f"{ours_path(namespace, c.POOL_PLURAL)}/{POOL}"
        print(f"pool bench on the real node: cluster {cluster.kubeconfig}, namespace {namespace}, {count} warm and "
              f"{count} cold, one at a time", flush=True)
        watch = ReadyWatch(cluster.kubeconfig, ours_path(namespace, c.PLURAL))
        try:
            create_template(api, namespace, POOL, RECIPE)
            create_template(api, namespace, COLD_TEMPLATE, RECIPE)
            started = time.monotonic()
            create_pool(api, namespace, count)
            if not wait_pool_full(api, pool_path, count, args.timeout):
                print(f"the pool of {count} was not full within {args.timeout:.0f} s")
                return 1
            print(f"pool of {count} full in {time.monotonic() - started:.1f} s", flush=True)

            def pool_full() -> None:
                time.sleep(1)  # the pool sees the last claim and starts its refill
                wait_pool_full(api, pool_path, count, args.timeout)
                time.sleep(1)  # the node is quiet again

            def pause() -> None:
                time.sleep(1)

            warm_names = [f"warm-{index:02d}" for index in range(count)]
            cold_names = [f"cold-{index:02d}" for index in range(count)]
            warm = one_at_a_time(api, watch, namespace, POOL, [f"{WARMUP}-warm", *warm_names], pool_full,
                                 args.timeout)[1:]
            how = {"warm": launches(api, namespace, warm_names)}
            for name in [f"{WARMUP}-warm", *warm_names]:  # their pods leave the node before the cold starts
                api.request("DELETE", f"{ours_path(namespace, c.PLURAL)}/{name}")
            pool_full()
            wait_pods_at_most(api, namespace, count, args.timeout)
            cold = one_at_a_time(api, watch, namespace, COLD_TEMPLATE, [f"{WARMUP}-cold", *cold_names], pause,
                                 args.timeout)[1:]
            how["cold"] = launches(api, namespace, cold_names)
        finally:
            watch.close()
    failures = 2 * count - len(warm) - len(cold)

    def figures(values: list[float]) -> list[float | None]:
        if not values:
            return [None] * 5
        return [percentile(values, 0.5), percentile(values, 0.9), statistics.mean(values), min(values), max(values)]

    print(f"\n## Real node: {count} warm claims against {count} cold starts of busybox, one at a time\n")
    print("| figure | warm (claimed from the pool) | cold (template, no pool) | warm / cold |")
    print("|---|---|---|---|")
    for label, w, k in zip(("create->Ready p50", "p90", "mean", "min", "max"), figures(warm), figures(cold),
                           strict=True):
        print(f"| {label} | {cell(w, ' s', 3)} | {cell(k, ' s', 3)} | {ratio(w, k)} |")
    print(f"| launches (status.launch) | {', '.join(f'{h} {n}' for h, n in sorted(how['warm'].items()))} | "
          f"{', '.join(f'{h} {n}' for h, n in sorted(how['cold'].items()))} | |")
    print("\ntarget: warm p50 at most 1/5 of cold p50 (x0.20)")
    if failures:
        print(f"FAILED: {failures} Sandbox(es) never Ready")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", choices=("kwok", "real"), default="kwok",
                        help="kwok nodes (default) or the local cluster's real node")
    parser.add_argument("--count", type=int, default=0, help="claims and cold creates (default 50; real node: 5)")
    parser.add_argument("--pool", type=int, default=0, help="pool replicas on kwok (default: --count)")
    parser.add_argument("--workers", type=int, default=10,
                        help="creating threads on kwok (default 10: the claims come at once)")
    parser.add_argument("--rate", type=float, default=0, help="on kwok, at most this many creates a second")
    parser.add_argument("--no-peer", action="store_true", help="leave out agent-sandbox's warm pool")
    parser.add_argument("--timeout", type=float, default=180, help="seconds for a phase's objects to be Ready")
    parser.add_argument("--wait-others", type=float, default=0,
                        help="before each phase, seconds to wait for other sandbox controllers on this machine to "
                        "exit (default 0: go on and say so)")
    args = parser.parse_args()

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    if args.node == "real":
        try:
            return measure_real(args)
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
    started = time.monotonic()
    cluster = connect(start=True)
    install_crds(cluster)
    with tempfile.TemporaryDirectory(prefix="pool-") as scratch:
        run = Run(cluster, RawApi(cluster.kubeconfig), f"pool-{uuid.uuid4().hex[:6]}", Path(scratch),
                  patience=args.wait_others)
        try:
            return measure_kwok(run, args, started)
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
        finally:
            clean_up(run)
            log_problems(run.scratch)


if __name__ == "__main__":
    sys.exit(main())
