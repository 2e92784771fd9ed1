"""Shared by the benches on the real node: the local cluster with its real node and the python image, and an
operator of their own serving a fresh namespace whose pods land on that node."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client
from localcluster import images
from localcluster import node as real_node_module
from localcluster.controlplane import ClusterState
from localcluster.handle import Cluster, connect
from localcluster.operator_process import OperatorProcess, install_crds


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def operator_namespace(prefix: str) -> Iterator[tuple[Cluster, str]]:
    """The cluster and a fresh restricted namespace served by an operator that places pods on the real node."""
    cluster = connect(start=True)
    assert cluster.control_plane is not None, "the bench runs on the local cluster's real node"
    state = ClusterState.load(cluster.control_plane.state_dir)
    assert state is not None
    if state.node != "real":
        real_node_module.start_real_node(state)
    real_node_module.import_images(state, (images.PYTHON,))
    core = client.CoreV1Api(cluster.api_client())
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={"pod-security.kubernetes.io/enforce": "restricted"})))
    install_crds(cluster)
    placement = real_node_module.pod_placement()
    with tempfile.TemporaryDirectory() as scratch:
        operator = OperatorProcess(
            cluster, Path(scratch) / "operator.log", NAMESPACES=namespace,
            POD_NODE_SELECTOR=json.dumps(placement["nodeSelector"]),
            POD_TOLERATIONS=json.dumps(placement["tolerations"]),
        )
        operator.start()
        try:
            yield cluster, namespace
        finally:
            operator.stop()
            core.delete_namespace(namespace, grace_period_seconds=0, propagation_policy="Background")
