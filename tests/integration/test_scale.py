"""A thousand Sandboxes across a kill -9, a standby's takeover and a restart: every one stays served and untouched.

Slow for a cluster test: about 2.5 minutes on 2 cores, half of it the fill of 1,000 on kwok. bench/fleet.py measures
the same up to 10,000, with timings. Here only what must hold: nothing unchanged is written (resource versions),
nothing is created twice (uids), and a new Sandbox, a deleted pod and an expiry are each seen to by whichever replica
is active.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from localcluster.controlplane import fake_node
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.integration.operators import (
    active_and_standby,
    create_sandbox,
    exclusive,
    is_ready,
    pod_uid,
    read_sandbox,
    ready,
    reconciles,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
__all__ = ["exclusive"]  # a fixture, used by name
SIZE = 1000
LIFETIME = 10  # the peering lifetime: the bound on a takeover after a SIGKILL
PAUSING = "Pausing operations in favour of"  # Kopf's log line


@pytest.fixture
def room(api: client.ApiClient) -> Iterator[str]:
    """A kwok node with room for the fill; removed once its pods are gone (kwok ends their deletion only while the
    node exists). Requested before ``namespace``, so it is torn down after it."""
    core = client.CoreV1Api(api)
    name = "scale-kwok-node"
    core.create_node(fake_node(name, pods=SIZE + 100))
    try:
        wait_for(lambda: _node_ready(core, name), timeout=60, what=f"kwok to take up {name}")
        yield name
    finally:
        try:
            wait_for(lambda: not core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}",
                                                                  limit=1).items,
                     timeout=300, interval=2, what=f"the pods on {name} to go")
        finally:
            core.delete_node(name)


def _node_ready(core: client.CoreV1Api, name: str) -> bool:
    conditions = core.read_node(name).status.conditions or []
    return any(x.type == "Ready" and x.status == "True" for x in conditions)


def _sandboxes(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL)
    return {item["metadata"]["name"]: item for item in items["items"]}


def _versions(api: client.ApiClient, namespace: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, name) -> (uid, resourceVersion) of every Sandbox, pod and NetworkPolicy in the namespace that is not
    being deleted (an expired Sandbox's children go a little after it)."""
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    found = {("Sandbox", name): (body["metadata"]["uid"], body["metadata"]["resourceVersion"])
             for name, body in _sandboxes(api, namespace).items() if not body["metadata"].get("deletionTimestamp")}
    for kind, items in (("Pod", core.list_namespaced_pod(namespace).items),
                        ("NetworkPolicy", net.list_namespaced_network_policy(namespace).items)):
        found.update({(kind, x.metadata.name): (x.metadata.uid, x.metadata.resource_version) for x in items
                      if not x.metadata.deletion_timestamp})
    return found


def _quiet(process: OperatorProcess, at_least: float) -> Callable[[], bool]:
    """A probe: true once the process ran ``at_least`` passes and then none for 3 s."""
    seen: list[tuple[float, float]] = []

    def probe() -> bool:
        count, now = reconciles(process), time.monotonic()
        if not seen or seen[-1][0] != count:
            seen.append((count, now))
        return count >= at_least and now - seen[-1][1] >= 3

    return probe


def _served(api: client.ApiClient, namespace: str, name: str, old_pod: str | None = None) -> bool:
    """The Sandbox is Ready on a pod other than ``old_pod``."""
    uid = pod_uid(client.CoreV1Api(api), namespace, f"{c.CHILD_PREFIX}{name}")
    return is_ready(api, namespace, name) and uid is not None and uid != old_pod


def _hands_over(api: client.ApiClient, namespace: str, before: dict[tuple[str, str], tuple[str, str]],
                replica: OperatorProcess, round_name: str) -> None:
    """After ``replica`` became the active one: it serves a new Sandbox, recreates a deleted pod and expires a
    Sandbox past its deadline, then goes quiet; every other object is as it was (uid and resourceVersion)."""
    core = client.CoreV1Api(api)
    new, repaired, expired = f"new-{round_name}", f"fill-{round_name}", f"expiring-{round_name}"
    old_pod = pod_uid(core, namespace, f"{c.CHILD_PREFIX}{repaired}")
    core.delete_namespaced_pod(f"{c.CHILD_PREFIX}{repaired}", namespace)
    create_sandbox(api, namespace, new)
    wait_for(lambda: _served(api, namespace, new), timeout=LIFETIME + 120, interval=0.5,
             what=f"{new} served after the {round_name}")
    wait_for(lambda: _served(api, namespace, repaired, old_pod), timeout=120, interval=0.5,
             what=f"{repaired}'s deleted pod replaced after the {round_name}")
    wait_for(lambda: read_sandbox(api, namespace, expired) is None, timeout=120, interval=0.5,
             what=f"{expired} deleted at its deadline after the {round_name}")
    wait_for(_quiet(replica, SIZE), timeout=180, interval=0.5, what=f"the replica quiet after the {round_name}")
    after = _versions(api, namespace)
    touched = {key for key in (before.keys() & after.keys()) if before[key] != after[key]}
    allowed = {("Sandbox", repaired), ("Pod", f"{c.CHILD_PREFIX}{repaired}")}
    assert touched <= allowed, f"written during the {round_name}: {sorted(touched - allowed)[:10]}"
    gone = before.keys() - after.keys() - {("Sandbox", expired), ("Pod", f"{c.CHILD_PREFIX}{expired}"),
                                            ("NetworkPolicy", f"{c.CHILD_PREFIX}{expired}")}
    assert not gone, f"gone during the {round_name}: {sorted(gone)[:10]}"


def test_a_thousand_sandboxes_survive_a_kill_a_takeover_and_a_restart_untouched(
    cluster: Cluster, api: client.ApiClient, crds: None, room: str, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    names = [f"fill-{index:04d}" for index in range(SIZE)]
    names[:2] = ["fill-takeover", "fill-restart"]  # whose pods each round deletes
    with active_and_standby(cluster, api, tmp_path, LIFETIME) as (active, standby):
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda name: create_sandbox(api, namespace, name), names))
        wait_for(lambda: sum(map(ready, _sandboxes(api, namespace).values())) == SIZE, timeout=600, interval=2,
                 what=f"{SIZE} Sandboxes Ready")
        # Due during the takeover (which waits out the peering lifetime): the standby's to delete.
        create_sandbox(api, namespace, "expiring-takeover", lifetime={"ttlSeconds": 15})
        wait_for(lambda: _served(api, namespace, "expiring-takeover"), timeout=60, what="expiring-takeover Ready")
        assert reconciles(standby) == 0, "the standby reconciled while the active replica was alive"

        before = _versions(api, namespace)
        active.stop(signal.SIGKILL)
        assert read_sandbox(api, namespace, "expiring-takeover") is not None, "expired before the kill: too slow"
        _hands_over(api, namespace, before, standby, "takeover")

        # Due after the restarted replica has listed it: its own timer deletes it.
        create_sandbox(api, namespace, "expiring-restart", lifetime={"ttlSeconds": 15})
        wait_for(lambda: _served(api, namespace, "expiring-restart"), timeout=60, what="expiring-restart Ready")
        before = _versions(api, namespace)
        pauses = standby.log().count(PAUSING)
        active.start()  # a new process of the higher priority: the standby pauses, this one lists everything
        # Kopf lets the higher-priority replica work at once and the other pause when it sees it: a short overlap.
        wait_for(lambda: standby.log().count(PAUSING) > pauses, timeout=30, what="the standby to pause")
        assert read_sandbox(api, namespace, "expiring-restart") is not None, "expired before the restart: too slow"
        paused_at = reconciles(standby)
        _hands_over(api, namespace, before, active, "restart")
        assert reconciles(standby) == paused_at, "the paused replica reconciled after the restarted one took over"
