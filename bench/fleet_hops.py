"""Where a cold Sandbox's time goes, hop by hop, next to the same pods created directly (issue 11).

    .venv/bin/python bench/fleet_hops.py                    # a burst of 100 each way, as fast as one client goes
    .venv/bin/python bench/fleet_hops.py --rate 5 --count 30  # paced: the hops on a quiet cluster

For each object, from arrival times on raw watches of the namespace's Sandboxes, pods and NetworkPolicies (one
thread each, plain JSON): the bench's POST -> the Sandbox seen -> its pod seen -> the pod bound to a node -> the pod
Ready -> the Sandbox Ready, and beside the pod, the Sandbox seen -> its NetworkPolicy seen (created together behind
the namespace fence); the same for bench/fleet_bound.py's least controller with the operator's NetworkPolicy (the
operator's hops next to the least any controller could take here); for pods created directly: POST -> pod seen ->
bound -> Ready.
Each hop's p50 / p90, the whole way's p50 / p90 / p99, and each local-cluster process's CPU per 100 objects (first
create to 1 s after the last Ready, less what it used idle over as long just before). It keeps three more watches
than bench/fleet.py, so its figures run a little higher: it shows which hops a burst stretches; the issue's ratios
come from bench/fleet.py. It asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet import (
    IDLE_WINDOW,
    PLACEMENT,
    WARMUP,
    Run,
    add_nodes,
    bench_run,
    median,
    rendered_pod_spec,
    sandbox_body,
    sandboxes_path,
)
from fleet_bound import BoundProcess, operator_writes
from fleet_cluster import CpuWindow, RawApi, cluster_pids, create_all
from fleet_watch import watch_events
from realnode import percentile

from sandbox_operator.api import names as c

SANDBOX_HOPS = ("Sandbox seen", "pod seen", "pod bound", "pod Ready", "Sandbox Ready")
# Off the way to Ready: a new Sandbox's NetworkPolicy is created together with its pod behind the namespace fence
# (sandbox/fence.py); without the fence, the pod would wait for it.
SANDBOX_BESIDE = (("Sandbox seen", "NetworkPolicy seen"),)
DIRECT_HOPS = ("pod seen", "pod bound", "pod Ready")


class Arrivals:
    """First arrival of each (object, milestone) on the namespace's watches; names are the Sandbox's (a child's
    name less the child prefix)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        started = [threading.Event() for _ in range(3)]
        for (path, kind), ready in zip((
            (sandboxes_path(namespace), "Sandbox"),
            (f"/api/v1/namespaces/{namespace}/pods", "pod"),
            (f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", "NetworkPolicy"),
        ), started, strict=True):
            threading.Thread(target=self._watch, args=(RawApi(kubeconfig), path, kind, ready), daemon=True).start()
        for ready in started:
            if not ready.wait(30):
                raise RuntimeError("a watch did not start in 30 s")

    def _note(self, name: str, milestone: str, when: float) -> None:
        with self.lock:
            self.first.setdefault((name, milestone), when)

    def _watch(self, api: RawApi, path: str, kind: str, started: threading.Event) -> None:
        try:
            self._follow(api, path, kind, started)
        except Exception as error:  # say so: the hops after it would only be missing
            print(f"the {kind} watch stopped: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    def _follow(self, api: RawApi, path: str, kind: str, started: threading.Event) -> None:
        version = api.get_json(path, limit="1")["metadata"]["resourceVersion"]
        response = api.stream(path, watch="true", resourceVersion=version, timeoutSeconds="3600")
        started.set()
        for event in watch_events(response):
            when = time.monotonic()
            if event["type"] == "ERROR":
                raise RuntimeError(str(event["object"].get("message")))
            if event["type"] not in ("ADDED", "MODIFIED"):
                continue
            body = event["object"]
            name = body["metadata"]["name"].removeprefix(c.CHILD_PREFIX)
            self._note(name, f"{kind} seen", when)
            if kind == "pod" and (body.get("spec") or {}).get("nodeName"):
                self._note(name, "pod bound", when)
            if kind != "NetworkPolicy" and _ready(body):
                self._note(name, f"{kind} Ready", when)


def _ready(body: dict[str, Any]) -> bool:
    return any(condition.get("type") == "Ready" and condition.get("status") == "True"
               for condition in (body.get("status") or {}).get("conditions") or [])


def _gaps(arrivals: Arrivals, names: list[str], submitted: dict[str, float], start: str, end: str) -> list[float]:
    """Seconds from ``start`` (the POST: its submit time) to ``end`` of each object that reached both."""
    return [arrivals.first[(n, end)] - arrivals.first.get((n, start), submitted[n]) for n in names
            if (n, end) in arrivals.first and (start == "POST" or (n, start) in arrivals.first)]


def burst(run: Run, title: str, hops: tuple[str, ...], collection: str, body: Callable[[str], dict[str, Any]],
          arrivals: Arrivals, count: int, rate: float, pid: int | None,
          beside: tuple[tuple[str, str], ...] = ()) -> None:
    """Create ``count`` objects, wait for the last hop of each, print the hops (and the spans ``beside`` them, off the
    way) and the CPU."""
    names = [f"hop-{index:04d}" for index in range(count)]
    window = CpuWindow({**cluster_pids(run.cluster), **({"the controller": pid} if pid else {})}, IDLE_WINDOW)
    sent = create_all(run.api, collection, (body(name) for name in names), 1, rate)
    submitted = {key.removeprefix(c.CHILD_PREFIX): at for key, at in sent.items()}  # a direct pod: by its name
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any((name, hops[-1]) not in arrivals.first for name in names):
        time.sleep(0.2)
    time.sleep(1.0)
    spent = window.spent()
    print(f"\n{title}: {count} created in {max(submitted.values()) - min(submitted.values()):.2f} s"
          + (f" (at most {rate:g}/s)" if rate else ""))
    spans = [(start, end, "") for start, end in zip(("POST", *hops[:-1]), hops, strict=True)]
    for start, end, note in [*spans, *((start, end, " (beside)") for start, end in beside)]:
        gaps = _gaps(arrivals, names, submitted, start, end)
        p90 = percentile(gaps, 0.9) if gaps else float("nan")
        print(f"  {start:>18} -> {end:<18} p50 {1000 * median(gaps):6.1f} ms   p90 {1000 * p90:6.1f} ms{note}")
    total = [arrivals.first[(n, hops[-1])] - submitted[n] for n in names if (n, hops[-1]) in arrivals.first]
    if not total:
        print(f"  none reached {hops[-1]} within 120 s")
        return
    print(f"  {'POST':>18} -> {hops[-1]:<18} p50 {1000 * median(total):6.1f} ms   p90 "
          f"{1000 * percentile(total, 0.9):6.1f} ms   p99 {1000 * percentile(total, 0.99):6.1f} ms"
          + (f"   NOT READY {count - len(total)}" if len(total) < count else ""))
    print("  CPU-s per 100 objects: " + ", ".join(f"{k} {v * 100 / count:.2f}" for k, v in sorted(spent.items()))
          + f"; every process {sum(spent.values()) * 100 / count:.2f}")


def warm_up(run: Run, namespace: str, arrivals: Arrivals, whose: str) -> None:
    """Create the warm-up Sandbox and wait for its Ready (then 2 s more): the controller's first pass is behind it."""
    run.api.create(sandboxes_path(namespace), sandbox_body(WARMUP))
    deadline = time.monotonic() + 60
    while (WARMUP, "Sandbox Ready") not in arrivals.first:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up Sandbox, {whose}, was not Ready in 60 s")
        time.sleep(0.2)
    time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="objects each way (default 100)")
    parser.add_argument("--rate", type=float, default=0, help="at most this many creates a second (default: no limit)")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    with bench_run("hops") as run:
        add_nodes(run, 3 * args.count + 20)
        pod = rendered_pod_spec(run)  # the direct pods are the operator's, as in bench/fleet.py
        namespace = run.namespace("hops")
        arrivals = Arrivals(run.cluster.kubeconfig, namespace)
        operator = run.operator(namespace)
        warm_up(run, namespace, arrivals, f"sandbox-operator's (see {operator.log_path})")
        assert operator.process is not None
        burst(run, "sandbox-operator", SANDBOX_HOPS, sandboxes_path(namespace), sandbox_body, arrivals,
              args.count, args.rate, operator.process.pid, SANDBOX_BESIDE)
        operator.stop()
        status, policy = operator_writes(run)
        least = run.namespace("hops-least")
        arrivals = Arrivals(run.cluster.kubeconfig, least)
        bound = BoundProcess(run, least, pod, status, policy)
        warm_up(run, least, arrivals, "the least controller's")
        assert bound.process is not None
        burst(run, "least controller + NetworkPolicy", SANDBOX_HOPS, sandboxes_path(least), sandbox_body, arrivals,
              args.count, args.rate, bound.process.pid, SANDBOX_BESIDE)
        bound.stop()
        direct = run.namespace("hops-direct")
        arrivals = Arrivals(run.cluster.kubeconfig, direct)
        time.sleep(2)
        burst(run, "pods created directly", DIRECT_HOPS, f"/api/v1/namespaces/{direct}/pods",
              lambda name: {"apiVersion": "v1", "kind": "Pod", "spec": pod,
                            "metadata": {"name": f"{c.CHILD_PREFIX}{name}"}},
              arrivals, args.count, args.rate, None)
        print(f"\npods select {PLACEMENT} (the kwok nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
