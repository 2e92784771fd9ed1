"""Create N sandboxes and measure what it costs: create→Ready latency, throughput, API writes, operator RSS.

    .venv/bin/python bench/sandbox_throughput.py --count 100

Uses the running local cluster (or starts one; SANDBOX_OPERATOR_TEST_KUBECONFIG for another cluster),
runs its own operator process, and prints numbers; it asserts nothing (machines here are noisy).
API writes are counted twice: by the operator itself (sandbox_operator_api_requests_total) and by the
API server (apiserver_request_total, every client: this script, the operator, the scheduler, kwok).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client, watch
from localcluster.handle import Cluster, connect
from localcluster.operator_process import OperatorProcess, install_crds

from sandbox_operator.api import names as c

WRITE_VERBS = {"POST", "PATCH", "PUT", "DELETE", "APPLY"}
SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def apiserver_writes(cluster: Cluster) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total for write verbs, by (verb, resource, subresource)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") in WRITE_VERBS:
            key = (labels["verb"], labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] += int(float(match["value"]))
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="sandboxes to create (default 50)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for all to be Ready")
    args = parser.parse_args()

    cluster = connect(start=True)
    install_crds(cluster)
    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    operator = OperatorProcess(cluster, Path(tempfile.gettempdir()) / f"{namespace}-operator.log")
    operator.start()
    try:
        time.sleep(2)  # let the operator finish its initial listing before measuring
        submitted: dict[str, float] = {}
        ready: dict[str, float] = {}
        done = threading.Event()

        def watch_ready() -> None:
            stream = watch.Watch()
            for event in stream.stream(custom.list_namespaced_custom_object, c.GROUP, c.VERSION, namespace,
                                       c.PLURAL, timeout_seconds=int(args.timeout)):
                obj = event["object"]
                name = obj["metadata"]["name"]
                conditions = (obj.get("status") or {}).get("conditions") or []
                if name not in ready and any(x["type"] == "Ready" and x["status"] == "True" for x in conditions):
                    ready[name] = time.monotonic()
                    if len(ready) == args.count:
                        stream.stop()
            done.set()

        writes_before = apiserver_writes(cluster)
        counter = "sandbox_operator_api_requests_total"
        ops_before = {k: v for k, v in operator.metrics().items() if k.startswith(counter)}
        watcher = threading.Thread(target=watch_ready, daemon=True)
        watcher.start()
        time.sleep(0.5)
        started = time.monotonic()
        for index in range(args.count):
            name = f"bench-{index:04d}"
            submitted[name] = time.monotonic()
            custom.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, {
                "apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name},
                "spec": {"image": "busybox:1.35.0", "command": ["sleep", "3600"],
                         "resources": {"cpu": "10m", "memory": "16Mi", "ephemeralStorage": "64Mi"}},
            })
        submit_seconds = time.monotonic() - started
        done.wait(args.timeout)
        finished = max(ready.values()) if ready else time.monotonic()
        time.sleep(3)  # let trailing status writes land before counting
        writes_after = apiserver_writes(cluster)
        ops_after = {k: v for k, v in operator.metrics().items() if k.startswith(counter)}
        rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{operator.process.pid}/status").read_text()
                       .splitlines() if line.startswith("VmRSS:")) if operator.process else 0
    finally:
        operator.stop()
        core.delete_namespace(namespace)

    latencies = [ready[n] - submitted[n] for n in ready]
    print(f"sandboxes: {args.count} created in {submit_seconds:.2f}s; Ready: {len(ready)}")
    if latencies:
        quantiles = "  ".join(f"p{round(q * 100)} {percentile(latencies, q):.2f}s" for q in (0.5, 0.9, 0.99))
        print(f"create->Ready latency: {quantiles}  max {max(latencies):.2f}s  mean {statistics.mean(latencies):.2f}s")
        print(f"throughput: {len(ready) / (finished - started):.1f} sandboxes/s Ready "
              f"(first create to last Ready: {finished - started:.1f}s)")
    operator_writes = {k: ops_after[k] - ops_before.get(k, 0) for k in ops_after}
    total_operator = sum(v for k, v in operator_writes.items() if 'verb="get"' not in k)
    print(f"operator API requests per sandbox: {total_operator / args.count:.2f}")
    for key, value in sorted(operator_writes.items()):
        if value:
            print(f"  {key.removeprefix('sandbox_operator_api_requests_total')}: {value / args.count:.2f}")
    delta = writes_after - writes_before
    print(f"apiserver write requests per sandbox (all clients): {sum(delta.values()) / args.count:.2f}")
    for (verb, resource, sub), value in sorted(delta.items(), key=lambda kv: -kv[1]):
        print(f"  {verb:6} {resource + ('/' + sub if sub else ''):28} {value / args.count:.2f}")
    print(f"operator RSS after the run: {rss_kib / 1024:.1f} MiB")
    return 0 if len(ready) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
