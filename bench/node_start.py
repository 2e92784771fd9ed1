"""Measure the real node: cold and warm start, and pod created -> Running latency.

    .venv/bin/python bench/node_start.py [--pods 10] [--cold]

Starts the local control plane if none runs (and stops it again at the end). ``--cold`` empties
the image cache first, so the first start also builds the images; Go binaries are never rebuilt
here (``python -m localcluster build`` times those). Every start is from an empty node state
directory: containerd, kubelet and kube-router state never survive a stop.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import uuid

from kubernetes import client, watch
from localcluster import images, node
from localcluster.controlplane import ClusterState
from localcluster.handle import connect


def timed_start(state: ClusterState) -> float:
    started = time.monotonic()
    node.start_real_node(state)
    return time.monotonic() - started


def timed_stop(state: ClusterState) -> float:
    started = time.monotonic()
    leftovers = node.stop_real_node(state)
    if leftovers:
        raise RuntimeError(f"teardown left {leftovers}")
    return time.monotonic() - started


def pod_latencies(api: client.ApiClient, count: int) -> list[float]:
    """Create ``count`` pods one after another; return seconds from create to phase Running for each."""
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    deadline = time.monotonic() + 60
    while not any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(namespace).items):
        if time.monotonic() > deadline:
            raise TimeoutError("no default service account")
        time.sleep(0.1)
    latencies = []
    try:
        for index in range(count):
            name = f"latency-{index}"
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    **node.pod_placement(),
                    "automountServiceAccountToken": False,
                    "dnsPolicy": "Default",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": images.BUSYBOX, "imagePullPolicy": "Never",
                                    "command": ["sleep", "3600"]}],
                },
            }
            stream = watch.Watch()
            created = time.monotonic()
            core.create_namespaced_pod(namespace, manifest)
            for event in stream.stream(core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                                       timeout_seconds=120):
                if event["object"].status.phase == "Running":
                    latencies.append(time.monotonic() - created)
                    stream.stop()
            if len(latencies) != index + 1:
                raise TimeoutError(f"pod {name} did not reach Running")
    finally:
        core.delete_namespace(namespace, grace_period_seconds=0)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10, help="pods to create for the latency numbers")
    parser.add_argument("--cold", action="store_true", help="empty the image cache before the first start")
    args = parser.parse_args()

    cluster = connect(start=True)
    assert cluster.control_plane is not None, "the benchmark drives the local cluster, not an external one"
    state = ClusterState.load(cluster.control_plane.state_dir)
    assert state is not None
    try:
        if state.node == "real":
            print(f"stop (an already running node): {timed_stop(state):.2f}s")
        if args.cold:
            shutil.rmtree(images.IMAGE_CACHE, ignore_errors=True)
        first = timed_start(state)
        print(f"node start, {'cold (images built)' if args.cold else 'first'}: {first:.2f}s")
        latencies = pod_latencies(cluster.api_client(), args.pods)
        print(f"pod create -> Running over {len(latencies)} pods: median {statistics.median(latencies):.2f}s, "
              f"min {min(latencies):.2f}s, max {max(latencies):.2f}s")
        print(f"node stop (with {args.pods} pods deleted): {timed_stop(state):.2f}s")
        warm = timed_start(state)
        print(f"node start, warm (images cached): {warm:.2f}s")
        print(f"node stop: {timed_stop(state):.2f}s")
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
