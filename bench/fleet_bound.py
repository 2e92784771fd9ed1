"""The least a Sandbox controller could do on this cluster: the bound under the cold-round goals (issue 11).

    .venv/bin/python bench/fleet_bound.py                     # 3 interleaved rounds of 100, about 3 minutes
    .venv/bin/python bench/fleet_bound.py --count 100 --rounds 5

Next to the pods created directly (the floor) and sandbox-operator, the same Sandboxes served by a controller that
does only what no Sandbox controller can skip: on a Sandbox's ADDED event it POSTs the pod (the operator's rendered
spec, labels and owner reference), and when that pod is first Ready it merge-patches the Sandbox's status with the
status the operator writes (so the API server and the watchers handle the same bytes). Nothing else: no NetworkPolicy
(``--policy`` adds the operator's, POSTed beside the pod), no Events, no decisions, no caches, no retries; plain JSON
on raw watches, writes from a thread pool. It is not a controller anyone could run (it ignores deletes, updates,
failures and restarts); it shows how close to the floor a Sandbox can get here when its controller costs almost
nothing, so the operator's ratios can be read against it. Figures come from bench/fleet.py's cold round
(``cold_phase``): create->Ready from a raw watch, CPU of each process. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet import (
    Controller,
    Run,
    add_nodes,
    bench_run,
    cold_phase,
    controllers,
    median,
    phase_line,
    rendered_pod_spec,
    sandboxes_path,
)
from fleet_cluster import RawApi
from fleet_watch import watch_events
from write_cost import served_example

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import format_time
from sandbox_operator.k8s.manifest import owner_reference

HERE = Path(__file__).resolve().parent


def stamped(status: dict[str, Any]) -> dict[str, Any]:
    """The operator's status with its conditions' transition times now (the bench's cross-check reads them)."""
    now = format_time(datetime.now(UTC))
    conditions = [{**cond, "lastTransitionTime": now} if "lastTransitionTime" in cond else cond
                  for cond in status.get("conditions") or []]
    return {**status, "conditions": conditions} if conditions else status


def serve(kubeconfig: str, namespace: str, pod_spec: dict[str, Any], status: dict[str, Any],
          policy: dict[str, Any] | None) -> None:
    """The minimal controller's loop (runs in a process of its own, until killed)."""
    api = RawApi(kubeconfig)
    writers = ThreadPoolExecutor(8)
    sandboxes = sandboxes_path(namespace)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    policies = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    owners: dict[str, str] = {}  # pod name -> Sandbox name, of the pods this process made
    ready: set[str] = set()

    def write(method: str, path: str, body: dict[str, Any], content_type: str = "application/json") -> None:
        code, data = api.request(method, path, body, content_type=content_type)
        if code >= 300:
            print(f"{method} {path}: HTTP {code}: {data[:200]!r}", file=sys.stderr, flush=True)

    def added(sandbox: dict[str, Any]) -> None:
        meta = sandbox["metadata"]
        name = f"{c.CHILD_PREFIX}{meta['name']}"
        labels = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SANDBOX: meta["name"]}
        owner = [owner_reference(c.KIND, meta["name"], meta["uid"])]
        owners[name] = meta["name"]
        if policy is not None:
            body = {**policy, "metadata": {"name": name, "labels": labels, "ownerReferences": owner}}
            writers.submit(write, "POST", policies, body)
        writers.submit(write, "POST", pods, {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec,
                                             "metadata": {"name": name, "labels": labels, "ownerReferences": owner}})

    def pod_changed(pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        conditions = (pod.get("status") or {}).get("conditions") or []
        if name in owners and name not in ready and any(
                cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions):
            ready.add(name)
            writers.submit(write, "PATCH", f"{sandboxes}/{owners[name]}/status", {"status": stamped(status)},
                           "application/merge-patch+json")

    def follow(path: str, handle: Any, kinds: tuple[str, ...]) -> None:
        listing = api.get_json(path)  # what was there before this process started, then what comes
        for obj in listing["items"]:
            handle(obj)
        version = listing["metadata"]["resourceVersion"]
        response = api.stream(path, watch="true", resourceVersion=version, timeoutSeconds="3600")
        for event in watch_events(response):
            if event["type"] in kinds:
                handle(event["object"])

    follow_pods = threading.Thread(target=follow, args=(pods, pod_changed, ("ADDED", "MODIFIED")), daemon=True)
    follow_pods.start()
    follow(sandboxes, added, ("ADDED",))


class BoundProcess:
    """The minimal controller as a child process (``.process.pid``, ``.stop()``), as bench/fleet.py starts the
    operator and the peer."""

    def __init__(self, run: Run, namespace: str, pod_spec: dict[str, Any], status: dict[str, Any],
                 policy: dict[str, Any] | None) -> None:
        config = {"namespace": namespace, "pod_spec": pod_spec, "status": status, "policy": policy}
        path = run.scratch / f"bound-{namespace}.json"
        path.write_text(json.dumps(config))
        self.log = open(run.scratch / f"bound-{namespace}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, str(HERE / "fleet_bound.py"), "--serve", str(path), "--kubeconfig",
             str(run.cluster.kubeconfig)], stdout=self.log, stderr=subprocess.STDOUT)
        run.processes.append(self)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.log.close()


def operator_writes(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status and the NetworkPolicy (its kind and spec) the operator writes for the bench's Sandbox."""
    status, policy = served_example(run, run.namespace("bound-probe"))
    return status, {key: policy[key] for key in ("apiVersion", "kind", "spec")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="objects per way per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        config = json.loads(Path(args.serve).read_text())
        serve(args.kubeconfig, config["namespace"], config["pod_spec"], config["status"], config["policy"])
        return 0
    with bench_run("bound") as run:
        add_nodes(run, 4 * args.count * args.rounds + 200)
        pod_spec = rendered_pod_spec(run)
        status, policy = operator_writes(run)
        direct, ours = controllers(run, pod_spec, None)
        ways = [direct, ours]
        for key, title, with_policy in (("bound", "least controller", None),
                                        ("boundnp", "least controller + NetworkPolicy", policy)):
            ways.append(Controller(key, title, sandboxes_path, ours.body, ours.created,
                                   lambda ns, p=with_policy: BoundProcess(run, ns, pod_spec, status, p)))
        phases: dict[str, list[Any]] = {way.key: [] for way in ways}
        for round_number in range(args.rounds):
            order = ways[round_number % len(ways):] + ways[:round_number % len(ways)]
            for way in order:
                phase = cold_phase(run, way, round_number, args.count, 1, 0, 180)
                phases[way.key].append(phase)
                print(phase_line(way.title, phase), flush=True)
            print(f"round {round_number + 1} of {args.rounds} done", flush=True)
        floor = median([p.quantile(0.5) for p in phases["direct"]])
        print(f"\ncreate->Ready, medians over {args.rounds} rounds of {args.count}; ratio to the floor's p50")
        print("| way | p50 | p90 | p99 | p50 / floor | controller CPU per 100 | every process per 100 |")
        print("|---|---|---|---|---|---|---|")
        for way in ways:
            measured = phases[way.key]
            p50, p90, p99 = (median([p.quantile(q) for p in measured]) for q in (0.5, 0.9, 0.99))
            cpu = median([p.cpu * 100 / p.count for p in measured]) if measured[0].cpu is not None else None
            every = median([sum(p.cluster.values()) * 100 / p.count for p in measured])
            print(f"| {way.title} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {p50 / floor:.2f}x | "
                  f"{'-' if cpu is None else f'{cpu:.2f}'} | {every:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
