"""The SDK on the real node: command round trip next to `kubectl exec` on the same pod, file throughput, and the time
from get_or_create of a cold sandbox to its first command's output.

    .venv/bin/python bench/sdk_exec.py --rounds 100

Uses the running local cluster with its real node (or starts one: `make cluster-up NODE=real` first is faster), runs
its own operator for a fresh namespace, and prints numbers; it asserts nothing (machines here are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from typing import Any

from localcluster.handle import Cluster
from realnode import operator_namespace, percentile

from sandbox_operator.api import names as c
from sandbox_operator.sdk import SandboxClient
from sandbox_operator.sdk.wire import open_exec

PYTHON = "python:3.11-slim"
FILE_BYTES = 32 * 1024 * 1024


def summary(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{label:<34} p50 {percentile(ms, 0.5):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   "
            f"mean {statistics.fmean(ms):7.1f} ms   (n={len(ms)})")


def kubectl_exec_round_trips(cluster: Cluster, namespace: str, pod: str, rounds: int) -> list[float]:
    """`kubectl exec POD -- true`, each a fresh process as a script would run it (kubectl has no persistent mode)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([*_kubectl(cluster), "exec", "-n", namespace, pod, "-c", c.CONTAINER_NAME, "--", "true"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def _kubectl(cluster: Cluster) -> list[str]:
    return ["kubectl", "--kubeconfig", str(cluster.kubeconfig)]


async def sdk_numbers(cluster: Cluster, namespace: str, rounds: int) -> dict[str, Any]:
    async with await SandboxClient.connect(namespace=namespace, kubeconfig=str(cluster.kubeconfig)) as sandboxes:
        started = time.perf_counter()
        cold = await sandboxes.get_or_create({"bench": uuid.uuid4().hex[:8]}, image=PYTHON, cpu="500m",
                                             memory="256Mi", ttl=1800)
        ready = time.perf_counter() - started
        first = await cold.run(["python3", "-c", "print('first output')"])
        to_first_output = time.perf_counter() - started
        assert first.text == "first output\n", first

        sandbox = cold
        for _ in range(5):  # warm the connection pool
            await sandbox.run(["true"])
        run_times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = await sandbox.run(["true"])
            run_times.append(time.perf_counter() - t0)
            assert result.exit_code == 0
        bare_times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            session = await open_exec(sandboxes.ws_api, namespace, sandbox.pod_name, c.CONTAINER_NAME, ["true"])
            async for _frame in session.frames():
                pass
            await session.close()
            bare_times.append(time.perf_counter() - t0)

        data = os.urandom(FILE_BYTES)
        writes, reads = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            await sandbox.files.write("/tmp/bench.bin", data)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = await sandbox.files.read("/tmp/bench.bin")
            reads.append(time.perf_counter() - t0)
            assert back == data
        return {"ready": ready, "first_output": to_first_output, "run": run_times, "bare": bare_times,
                "write": writes, "read": reads, "pod": sandbox.pod_name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="command round trips per method (default 100)")
    args = parser.parse_args()
    with operator_namespace("bench-sdk") as (cluster, namespace):
        numbers = asyncio.run(sdk_numbers(cluster, namespace, args.rounds))
        kubectl = kubectl_exec_round_trips(cluster, namespace, str(numbers["pod"]), args.rounds)
    report(numbers, kubectl)
    return 0


def report(numbers: dict[str, Any], kubectl: list[float]) -> None:
    print(f"cold get_or_create -> Ready:          {numbers['ready']:.2f} s")
    print(f"cold get_or_create -> first output:   {numbers['first_output']:.2f} s  ({PYTHON}, python3 -c print)")
    print(summary("sandbox.run(['true'])", numbers["run"]))
    print(summary("bare exec of true (no wrapper)", numbers["bare"]))
    print(summary("kubectl exec POD -- true", kubectl))
    ratio = percentile(numbers["run"], 0.5) / percentile(kubectl, 0.5)
    print(f"run p50 / kubectl exec p50:           {ratio:.2f}")
    mb = FILE_BYTES / 1e6
    print(f"write {FILE_BYTES >> 20} MiB:  best {mb / min(numbers['write']):6.1f} MB/s   "
          f"median {mb / statistics.median(numbers['write']):6.1f} MB/s")
    print(f"read  {FILE_BYTES >> 20} MiB:  best {mb / min(numbers['read']):6.1f} MB/s   "
          f"median {mb / statistics.median(numbers['read']):6.1f} MB/s")


if __name__ == "__main__":
    raise SystemExit(main())
