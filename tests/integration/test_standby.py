"""Two replicas with Kopf peering: one works, the other stands by and takes over when the first is killed."""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from tests.integration.operators import (
    active_and_standby,
    cluster_peering,
    create_sandbox,
    event_reasons,
    exclusive,
    pod_uid,
    reconciles,
    wait_ready,
)
from tests.integration.test_pools import Pools
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster
__all__ = ["exclusive"]  # a fixture, used by name
LIFETIME = 10  # SANDBOX_OPERATOR_PEERING_LIFETIME: the bound on the takeover time after a crash


def test_standby_takes_over_after_the_active_replica_is_killed_and_nothing_is_handled_twice(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    # Ready Events on (off by default) show whether a Sandbox was handled twice.
    with active_and_standby(cluster, api, tmp_path, LIFETIME, PROGRESS_EVENTS="true") as (active, standby):
        before = [f"before-{i}" for i in range(3)]
        for name in before:
            create_sandbox(api, namespace, name)
        wait_ready(api, namespace, before)
        # The Ready Events are posted after the status, from a queue: the kill below must not drop one.
        wait_for(lambda: all("Ready" in event_reasons(api, namespace, name) for name in before), timeout=30,
                 what="the Ready Events of the Sandboxes made before the kill")
        assert reconciles(active) > 0
        assert reconciles(standby) == 0, "the standby reconciled while the active replica was alive"
        listings = standby.log().count("listed ")  # the standby's first listing of each kind, while paused

        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        after = [f"after-{i}" for i in range(3)]
        for name in after:
            create_sandbox(api, namespace, name)
        wait_for(lambda: reconciles(standby) > 0, timeout=LIFETIME + 30, interval=0.1,
                 what="the standby to take over")
        takeover = time.monotonic() - killed
        wait_ready(api, namespace, after, timeout=LIFETIME + 60)
        ready_after = time.monotonic() - killed
        assert standby.log().count("listed ") == listings, "the standby's streams went on: a takeover lists nothing"
        print(f"\ntakeover after SIGKILL: {takeover:.1f}s (peering lifetime {LIFETIME}s); "
              f"sandboxes created after the kill Ready {ready_after:.1f}s after it")
        assert takeover <= LIFETIME + 15

        # Taking over re-reads every Sandbox: the ones already Ready get no second transition.
        time.sleep(2)
        for name in before + after:
            assert event_reasons(api, namespace, name).count("Ready") == 1, name


def test_a_clean_shutdown_hands_over_at_once(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    with active_and_standby(cluster, api, tmp_path, 60) as (active, standby):
        active.stop(signal.SIGTERM)  # a rollout or a drain: Kopf withdraws from the peering on its way out
        stopped = time.monotonic()
        create_sandbox(api, namespace, "handed-over")
        wait_ready(api, namespace, ["handed-over"], timeout=60)
        handover = time.monotonic() - stopped
        print(f"\nhandover after SIGTERM: Ready {handover:.1f}s after the active replica stopped (lifetime 60s)")
        assert reconciles(standby) > 0
        assert handover < 30, "a clean shutdown must not wait for the peering lifetime"


def test_a_replica_without_its_peering_object_says_so_at_start(
    cluster: Cluster, crds: None, tmp_path: Path
) -> None:
    absent = OperatorProcess(cluster, tmp_path / "absent.log", STANDALONE="false", PEERING_NAME="no-such-peering")
    absent.start()
    try:
        wait_for(lambda: "does not exist" in absent.log(), timeout=30, what="the missing-peering warning")
    finally:
        absent.stop()
    assert "'no-such-peering' does not exist (cluster-wide)" in absent.log()
    assert "SANDBOX_OPERATOR_STANDALONE=true" in absent.log()


def test_a_replica_with_its_peering_object_does_not_warn(
    cluster: Cluster, api: client.ApiClient, crds: None, exclusive: None, tmp_path: Path
) -> None:
    with cluster_peering(api) as peering:
        present = OperatorProcess(cluster, tmp_path / "present.log", STANDALONE="false", PEERING_NAME=peering)
        present.start()
        try:
            wait_for(lambda: "sandbox-operator started" in present.log(), timeout=30, what="the start-up to finish")
        finally:
            present.stop()
    assert "does not exist" not in present.log()


def test_claims_across_a_takeover_never_share_a_pod(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    pools = Pools(api, namespace)
    with active_and_standby(cluster, api, tmp_path, LIFETIME) as (active, standby):
        pools.template("shared")
        pools.pool("shared", "shared", 10)
        pools.wait_pool("shared", 10)
        names = [f"c{i:02d}" for i in range(30)]
        with ThreadPoolExecutor(max_workers=8) as creators:
            list(creators.map(lambda name: pools.sandbox(name, "shared"), names[:15]))
            active.stop(signal.SIGKILL)  # claims in flight, pool refilling
            list(creators.map(lambda name: pools.sandbox(name, "shared"), names[15:]))
        statuses = pools.wait_all_ready(names, timeout=LIFETIME + 90)
        pods = [status["podName"] for status in statuses]
        assert len(set(pods)) == len(names), "two sandboxes share a pod"
        for name, pod_name in zip(names, pods, strict=True):
            owner = pools.pod(pod_name).metadata.owner_references[0]
            assert (owner.kind, owner.name) == ("Sandbox", name)
        time.sleep(2)  # a second pod for a Sandbox would show up now
        live = [pod for pod in pools.core.list_namespaced_pod(namespace).items if not pod.metadata.deletion_timestamp]
        owners = Counter(pod.metadata.owner_references[0].name for pod in live
                         if pod.metadata.owner_references[0].kind == "Sandbox")
        assert owners == Counter(names), "a Sandbox owns more (or fewer) than one pod"
        print(f"\nwarm {sum(s['launch'] == 'Warm' for s in statuses)} of {len(names)} across the takeover")
        assert reconciles(standby) > 0


def test_a_replica_paused_for_a_higher_priority_one_touches_nothing_until_it_resumes(
    cluster: Cluster, api: client.ApiClient, crds: None, namespace: str, exclusive: None, tmp_path: Path,
) -> None:
    """The active replica is demoted when a higher-priority one joins: its streams go on (its stores stay current),
    but neither a child's event nor a timer makes it reconcile; the new replica repairs. When that one leaves, the
    demoted one resumes and serves a new Sandbox."""
    with cluster_peering(api) as peering:
        shared = {"STANDALONE": "false", "PEERING_NAME": peering, "PEERING_LIFETIME": str(LIFETIME)}
        lower = OperatorProcess(cluster, tmp_path / "lower.log", PRIORITY="100", **shared)
        higher = OperatorProcess(cluster, tmp_path / "higher.log", PRIORITY="200", **shared)
        lower.start()
        try:
            create_sandbox(api, namespace, "demoted")
            wait_ready(api, namespace, ["demoted"])
            higher.start()
            wait_for(lambda: "Pausing operations in favour of" in lower.log(), timeout=60,
                     what="the lower replica to pause")
            wait_for(lambda: reconciles(higher) > 0, timeout=60, what="the higher replica to reconcile")
            time.sleep(1)
            paused_at = reconciles(lower)
            core = client.CoreV1Api(api)
            old_pod = core.read_namespaced_pod("sbx-demoted", namespace).metadata.uid
            core.delete_namespaced_pod("sbx-demoted", namespace, grace_period_seconds=0)
            wait_for(lambda: pod_uid(core, namespace, "sbx-demoted") not in (None, old_pod), timeout=60,
                     what="the higher replica to recreate the pod")
            time.sleep(3)
            assert reconciles(lower) == paused_at, "a paused replica reconciled"

            higher.stop(signal.SIGTERM)  # it withdraws from the peering: the lower one resumes
            create_sandbox(api, namespace, "resumed")
            wait_ready(api, namespace, ["resumed"], timeout=60)
            assert reconciles(lower) > paused_at
        finally:
            higher.stop(signal.SIGKILL)
            lower.stop()

