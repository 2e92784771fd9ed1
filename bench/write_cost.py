"""What each kind of write costs the local cluster, with no controller running (issue 11).

    .venv/bin/python bench/write_cost.py                 # 200 writes of each kind, 2 rounds (about 1 minute)
    .venv/bin/python bench/write_cost.py --count 500 --rounds 3

A Sandbox costs the cluster about twice the CPU of its pod alone; this shows which write it is. One warm-up Sandbox is
served by the operator (for the status and the NetworkPolicy it really writes), then the operator stops and the bench
makes ``--count`` writes of each kind from one client, one after the other: Sandbox creates, merge patches of those
Sandboxes' status (that status), creates of that NetworkPolicy under other names, and ConfigMap creates (a built-in
kind with no schema, for scale). The same Sandbox create and status patch also go to a copy of the Sandbox CRD in
another group with every ``x-kubernetes-validations`` (CEL) rule removed: what the rules cost. For each, each local
cluster process's CPU-seconds per 100 writes (idle use subtracted), medians over rounds. It asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from fleet import WARMUP, Run, add_nodes, bench_run, median, sandbox_body, sandboxes_path
from fleet_cluster import CpuWindow, RawApi, cluster_pids, create_all

from sandbox_operator.api import names as c

ROOT = Path(__file__).resolve().parents[1]
UNCHECKED_GROUP = "write-cost.bench.sandbox-operator.io"  # the copy of the Sandbox CRD without CEL rules
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "ownerReferences")


def without_rules(schema: Any) -> Any:
    """The schema less every CEL rule."""
    if isinstance(schema, dict):
        return {key: without_rules(value) for key, value in schema.items() if key != "x-kubernetes-validations"}
    if isinstance(schema, list):
        return [without_rules(value) for value in schema]
    return schema


def install_unchecked_crd(api: RawApi) -> None:
    crd = yaml.safe_load((ROOT / "crds" / f"{c.GROUP}_{c.PLURAL}.yaml").read_text())
    crd["metadata"] = {"name": f"{c.PLURAL}.{UNCHECKED_GROUP}"}
    crd["spec"]["group"] = UNCHECKED_GROUP
    crd["spec"]["versions"] = without_rules(crd["spec"]["versions"])
    status, data = api.request("POST", CRDS, crd)
    if status not in (201, 409):
        raise RuntimeError(f"the CRD without rules: HTTP {status}: {data[:300]!r}")
    deadline = time.monotonic() + 60
    while api.request("GET", f"/apis/{UNCHECKED_GROUP}/{c.VERSION}")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the CRD without rules was not served in 60 s")
        time.sleep(0.5)


def served_example(run: Run, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status and the NetworkPolicy the operator writes for the bench's Sandbox."""
    operator = run.operator(namespace)
    run.api.create(sandboxes_path(namespace), sandbox_body(WARMUP))
    deadline = time.monotonic() + 60
    while True:
        body = run.api.get_json(f"{sandboxes_path(namespace)}/{WARMUP}")
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up Sandbox was not Ready in 60 s; see {operator.log_path}")
        time.sleep(0.2)
    policy = run.api.get_json(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/"
                              f"{c.CHILD_PREFIX}{WARMUP}")
    operator.stop()
    return body["status"], policy


def measure(pids: dict[str, int], write: Callable[[], None], count: int) -> dict[str, float]:
    """Each process's CPU-seconds per 100 writes over one window (idle use subtracted)."""
    window = CpuWindow(pids, 2.0)
    write()
    time.sleep(0.5)  # the watchers' share of the last writes
    return {name: spent * 100 / count for name, spent in window.spent().items()}


def patch_all(api: RawApi, collection: str, names: Iterable[str], status: dict[str, Any]) -> None:
    for name in names:
        code, data = api.request("PATCH", f"{collection}/{name}/status", {"status": status},
                                 content_type="application/merge-patch+json")
        if code != 200:
            raise RuntimeError(f"PATCH {name}/status: HTTP {code}: {data[:300]!r}")


def writes(run: Run, namespace: str, count: int, status: dict[str, Any],
           policy: dict[str, Any]) -> list[tuple[str, Callable[[], None]]]:
    """Each kind of write, ``count`` of them in ``namespace``, in the order they run (a status patch needs its
    Sandboxes)."""
    names = [f"w-{index:05d}" for index in range(count)]
    policies = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    unchecked = f"/apis/{UNCHECKED_GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}"

    def unchecked_body(name: str) -> dict[str, Any]:
        return {**sandbox_body(name), "apiVersion": f"{UNCHECKED_GROUP}/{c.VERSION}"}

    def policy_body(name: str) -> dict[str, Any]:
        meta = {**policy["metadata"], "name": f"np-{name}", "namespace": namespace}
        return copy.deepcopy(policy) | {"metadata": meta}

    def config_map(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{name}"}}

    return [
        ("Sandbox create", lambda: create_all(run.api, sandboxes_path(namespace), map(sandbox_body, names), 1)),
        ("Sandbox status patch", lambda: patch_all(run.api, sandboxes_path(namespace), names, status)),
        ("Sandbox create, no CEL rules", lambda: create_all(run.api, unchecked, map(unchecked_body, names), 1)),
        ("Sandbox status patch, no CEL rules", lambda: patch_all(run.api, unchecked, names, status)),
        ("NetworkPolicy create", lambda: create_all(run.api, policies, map(policy_body, names), 1)),
        ("ConfigMap create", lambda: create_all(run.api, f"/api/v1/namespaces/{namespace}/configmaps",
                                                map(config_map, names), 1)),
    ]


def measure_all(run: Run, count: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Each kind of write's CPU per 100 for each process, a list of one per round, by kind."""
    status, policy = served_example(run, run.namespace("write-cost-probe"))
    for field in SERVER_FIELDS:  # and its owner: a Sandbox in another namespace
        policy["metadata"].pop(field, None)
    pids = cluster_pids(run.cluster)
    rows: dict[str, list[dict[str, float]]] = {}
    for round_number in range(rounds):
        namespace = run.namespace(f"write-cost-r{round_number}")
        for title, write in writes(run, namespace, count, status, policy):
            rows.setdefault(title, []).append(measure(pids, write, count))
        print(f"round {round_number + 1} of {rounds} done", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="writes of each kind per round (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    args = parser.parse_args()
    if args.count < 1 or args.rounds < 1:
        parser.error("--count and --rounds must be at least 1")
    with bench_run("write-cost") as run:
        add_nodes(run, 10)
        install_unchecked_crd(run.api)
        try:
            rows = measure_all(run, args.count, args.rounds)
        finally:
            run.api.request("DELETE", f"{CRDS}/{c.PLURAL}.{UNCHECKED_GROUP}")
    processes = sorted({name for measured in rows.values() for spent in measured for name in spent})
    print(f"\nCPU-s per 100 writes, one client, {args.count} writes of each kind per round, medians over "
          f"{args.rounds} round(s); no controller running")
    print("| write | " + " | ".join(processes) + " | every process |")
    print("|---|" + "---|" * (len(processes) + 1))
    for title, measured in rows.items():
        cells = [median([spent.get(name, 0.0) for spent in measured]) for name in processes]
        total = median([sum(spent.values()) for spent in measured])
        print(f"| {title} | " + " | ".join(f"{cell:.2f}" for cell in cells) + f" | {total:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
