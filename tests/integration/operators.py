"""Helpers for tests that run their own operator processes: peering objects, sandboxes, metrics, events."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.waiting import wait_for

PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS = "kopf.dev", "v1", "clusterkopfpeerings"


@pytest.fixture
def exclusive(operator: OperatorProcess) -> Iterator[None]:
    """No other operator reconciles while the test runs its own: the session's one is stopped, then restarted."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@contextmanager
def cluster_peering(api: client.ApiClient) -> Iterator[str]:
    """A fresh ClusterKopfPeering (what the chart creates); yields its name."""
    name = f"test-peering-{uuid.uuid4().hex[:8]}"
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS,
                                        {"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
                                         "kind": "ClusterKopfPeering", "metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            custom.delete_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS, name)
        except ApiException as error:
            if error.status != 404:
                raise


@contextmanager
def active_and_standby(
    cluster: Cluster, api: client.ApiClient, logs: Path, lifetime: int, **settings: str
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """Two replicas sharing a fresh peering object, the active one (higher priority) started first; both are in the
    peering when this yields. Afterwards the active one is killed (if still running) and the standby stopped."""
    with cluster_peering(api) as peering:
        shared = {"STANDALONE": "false", "PEERING_NAME": peering, "PEERING_LIFETIME": str(lifetime), **settings}
        active = OperatorProcess(cluster, logs / "active.log", PRIORITY="200", **shared)
        standby = OperatorProcess(cluster, logs / "standby.log", PRIORITY="100", **shared)
        active.start()
        try:
            wait_for(lambda: len(peers(api, peering)) == 1, what="the active replica in the peering")
            standby.start()
            wait_for(lambda: len(peers(api, peering)) == 2, what="both replicas in the peering")
            yield active, standby
        finally:
            active.stop(signal.SIGKILL)
            standby.stop()


def peers(api: client.ApiClient, name: str) -> dict[str, Any]:
    """The peering object's status: ``{peer id: {priority, lifetime, lastseen}}``."""
    body = client.CustomObjectsApi(api).get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS,
                                                                   name)
    return dict(body.get("status") or {})


def create_sandbox(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """A busybox Sandbox; ``spec`` adds fields (``lifetime=...``)."""
    body = {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name},
            "spec": {"image": "busybox", "command": ["sleep", "3600"], **spec}}
    return dict(client.CustomObjectsApi(api).create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, body))


def read_sandbox(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The Sandbox; None when it is gone."""
    try:
        return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(c.GROUP, c.VERSION, namespace,
                                                                              c.PLURAL, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def ready(body: dict[str, Any]) -> bool:
    """Whether a Sandbox body says Ready=True."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)


def is_ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    body = read_sandbox(api, namespace, name)
    return body is not None and ready(body)


def wait_ready(api: client.ApiClient, namespace: str, names: list[str], timeout: float = 90) -> None:
    for name in names:
        wait_for(lambda n=name: is_ready(api, namespace, n), timeout=timeout,  # type: ignore[misc]
                 what=f"sandbox {namespace}/{name} Ready")


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    """Reasons of the Events posted about one Sandbox, repeated by their count."""
    found = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={c.KIND}").items
    return [e.reason for e in found for _ in range(e.count or 1)]


def reconciles(process: OperatorProcess) -> float:
    """How many reconciliations this process ran (all triggers)."""
    return sum(v for k, v in process.metrics().items() if k.startswith("sandbox_operator_reconciles_total{"))


def forbidden_lines(process: OperatorProcess) -> list[str]:
    """Log lines of a request RBAC refused, or of Kopf missing a permission (other 403s, e.g. a namespace
    being deleted or a quota exceeded, are not about permissions)."""
    refused = re.compile(r"forbidden: User .{0,200}? cannot |Not enough permissions")
    return [line for line in process.log().splitlines() if refused.search(line)]


def pod_uid(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    """The pod's uid; None when it is gone or going."""
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return None if pod.metadata.deletion_timestamp else str(pod.metadata.uid)
