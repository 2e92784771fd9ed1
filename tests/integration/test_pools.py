"""SandboxTemplates and SandboxPools against a real API server: claims, refills, races, rolls, quota, scale."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.handle import Cluster
from localcluster.operator_process import OperatorProcess

from sandbox_operator.api import names as c
from tests.integration.tenant_helpers import api_error, install_tenant_policy, tenant
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

RECIPE = {"image": "busybox", "command": ["sleep", "3600"], "resources": {"cpu": "50m", "memory": "32Mi"}}


class Pools:
    """Templates, pools and templated Sandboxes in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def _create(self, plural: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": c.API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
        return dict(self.custom.create_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, plural, body))

    def template(self, name: str, **recipe: Any) -> dict[str, Any]:
        return self._create(c.TEMPLATE_PLURAL, c.TEMPLATE_KIND, name, {**RECIPE, **recipe})

    def pool(self, name: str, template: str, replicas: int) -> dict[str, Any]:
        return self._create(c.POOL_PLURAL, c.POOL_KIND, name, {"templateRef": {"name": template}, "replicas": replicas})

    def sandbox(self, name: str, template: str, **spec: Any) -> dict[str, Any]:
        return self._create(c.PLURAL, c.KIND, name, {"templateRef": {"name": template}, **spec})

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, plural, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, plural, name, patch)

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, self.namespace, plural, name)

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict((self.get(plural, name) or {}).get("status") or {})

    def ready(self, name: str) -> dict[str, Any] | None:
        """The Sandbox's status once it is Ready."""
        status = self.status(c.PLURAL, name)
        return status if status.get("phase") == "Ready" else None

    def wait_all_ready(self, names: list[str], timeout: float) -> list[dict[str, Any]]:
        """Every Sandbox's status once all are Ready; on a timeout, the failure says what each one not Ready and
        each pod of the namespace not Ready say (a test that waited in silence could not be told apart later)."""
        ready: dict[str, dict[str, Any]] = {}

        def all_ready() -> bool:
            ready.update({name: status for name in names if name not in ready
                          and (status := self.ready(name)) is not None})
            return len(ready) == len(names)

        def explain() -> str:
            late = [f"{name}: {self._said(name)}" for name in names if name not in ready]
            pods = [f"{pod.metadata.name} {pod.status.phase} on {pod.spec.node_name}"
                    for pod in self.core.list_namespaced_pod(self.namespace).items
                    if not any(cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions or [])]
            return "  " + "\n  ".join(late) + "\npods not Ready: " + (", ".join(pods) or "none")

        wait_for(all_ready, timeout=timeout, what=f"all {len(names)} Sandboxes Ready", explain=explain)
        return [ready[name] for name in names]

    def _said(self, name: str) -> str:
        status = self.status(c.PLURAL, name)
        condition = next((cond for cond in status.get("conditions") or [] if cond.get("type") == "Ready"), {})
        return (f"phase {status.get('phase')}, Ready {condition.get('status')} {condition.get('reason')}: "
                f"{condition.get('message')}" if status else "no status")

    def wait_pool(self, name: str, ready: int, timeout: float = 60) -> dict[str, Any]:
        """The pool's status once it says ``ready`` warm pods are ready and they are (the status may lag the pods
        by a second while they move)."""
        def full() -> dict[str, Any] | None:
            status = self.status(c.POOL_PLURAL, name)
            says = status.get("readyReplicas") == ready and status.get("replicas") == ready
            return status if says and self.ready_warm_pods(name) == ready else None

        return wait_for(full, timeout=timeout, what=f"pool {name} with {ready} ready warm pods")

    def ready_warm_pods(self, pool: str) -> int:
        return sum(1 for pod in self.warm_pods(pool)
                   if any(cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions or []))

    def pool_pods(self, pool: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=f"{c.LABEL_POOL}={pool}").items)

    def warm_pods(self, pool: str) -> list[client.V1Pod]:
        return [pod for pod in self.pool_pods(pool) if pod.metadata.owner_references[0].kind == c.POOL_KIND
                and not pod.metadata.deletion_timestamp]

    def pod(self, name: str) -> client.V1Pod:
        return self.core.read_namespaced_pod(name, self.namespace)


@pytest.fixture
def pools(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Pools:
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    return Pools(api, namespace)


def test_a_sandbox_of_a_template_claims_a_ready_warm_pod_and_the_pool_refills(pools: Pools) -> None:
    pools.template("small")
    pools.pool("warm", "small", 2)
    status = pools.wait_pool("warm", 2)
    assert status["selector"] == f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY},{c.LABEL_POOL}=warm,!{c.LABEL_SANDBOX}"
    warm_before = {pod.metadata.name for pod in pools.warm_pods("warm")}

    pools.sandbox("claimer", "small", lifetime={"ttlSeconds": 3600})
    ready = wait_for(lambda: pools.ready("claimer"), what="the sandbox Ready")
    assert ready["launch"] == "Warm"
    assert ready["podName"] in warm_before
    pod = pools.pod(ready["podName"])
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == (c.KIND, "claimer", True)
    assert pod.metadata.labels[c.LABEL_SANDBOX] == "claimer"
    assert pod.metadata.labels[c.LABEL_POOL] == "warm"  # still fenced, beside its own policy
    assert c.LABEL_RECIPE_HASH not in pod.metadata.labels
    policies = pools.networking.list_namespaced_network_policy(pools.namespace).items
    assert {p.metadata.name for p in policies} == {"sbx-claimer", "warm-fence"}

    pools.wait_pool("warm", 2)
    assert ready["podName"] not in {pod.metadata.name for pod in pools.warm_pods("warm")}
    # The claimed sandbox stays as it is: no second pod, no status churn.
    time.sleep(1)
    assert pools.status(c.PLURAL, "claimer")["podName"] == ready["podName"]


def test_a_sandbox_without_a_ready_warm_pod_starts_cold_and_one_without_its_template_waits(pools: Pools) -> None:
    pools.sandbox("early", "later", lifetime={"ttlSeconds": 3600})
    waiting = wait_for(lambda: (pools.status(c.PLURAL, "early").get("conditions") or [None])[0],
                       what="the waiting condition")
    assert (waiting["status"], waiting["reason"]) == ("False", "TemplateNotFound")
    assert pools.status(c.PLURAL, "early")["phase"] == "Pending"

    pools.template("later")
    ready = wait_for(lambda: pools.ready("early"), what="the sandbox Ready once its template exists")
    assert ready["launch"] == "Cold"
    assert ready["podName"] == "sbx-early"


def test_fifty_creators_against_a_pool_of_twenty_never_share_a_pod_and_leave_no_orphan(pools: Pools) -> None:
    pools.template("burst")
    pools.pool("burst", "burst", 20)
    pools.wait_pool("burst", 20, timeout=120)
    names = [f"b{i:02d}" for i in range(50)]
    with ThreadPoolExecutor(max_workers=16) as creators:
        list(creators.map(lambda name: pools.sandbox(name, "burst", lifetime={"ttlSeconds": 3600}), names))
    statuses = {name: wait_for(lambda name=name: pools.ready(name), timeout=120, what=f"{name} Ready")
                for name in names}
    pods = [status["podName"] for status in statuses.values()]
    assert len(set(pods)) == 50, "two sandboxes share a pod"
    warm = [name for name, status in statuses.items() if status["launch"] == "Warm"]
    print(f"warm {len(warm)}, cold {50 - len(warm)}")
    assert len(warm) >= 20  # every ready warm pod served (refills may serve more)
    for name, status in statuses.items():
        pod = pools.pod(status["podName"])
        assert pod.metadata.owner_references[0].name == name
        assert pod.metadata.labels[c.LABEL_SANDBOX] == name

    for name in names:
        pools.delete(c.PLURAL, name)
    pools.wait_pool("burst", 20)

    def no_orphan() -> bool | None:
        left = [pod.metadata.name for pod in pools.core.list_namespaced_pod(pools.namespace).items
                if pod.metadata.owner_references[0].kind != c.POOL_KIND and not pod.metadata.deletion_timestamp]
        return True if not left else None

    wait_for(no_orphan, timeout=60, what="every claimed pod gone with its sandbox")


def test_editing_the_template_rolls_the_pool_and_keeps_claimed_sandboxes_as_they_started(pools: Pools) -> None:
    pools.template("roll")
    pools.pool("roll", "roll", 3)
    first_hash = pools.wait_pool("roll", 3)["recipeHash"]
    pools.sandbox("kept", "roll", lifetime={"ttlSeconds": 3600})
    kept = wait_for(lambda: pools.ready("kept"), what="the claimed sandbox Ready")
    assert kept["launch"] == "Warm"
    pools.wait_pool("roll", 3)

    pools.patch(c.TEMPLATE_PLURAL, "roll", {"spec": {"command": ["sleep", "7200"]}})
    lowest_ready = 3

    def rolled() -> bool:
        nonlocal lowest_ready
        pods = pools.warm_pods("roll")
        lowest_ready = min(lowest_ready, pools.ready_warm_pods("roll"))
        status = pools.status(c.POOL_PLURAL, "roll")
        hashes = {pod.metadata.labels[c.LABEL_RECIPE_HASH] for pod in pods}
        return status.get("recipeHash") not in (None, first_hash) and hashes == {status["recipeHash"]} \
            and status.get("readyReplicas") == 3 and len(pods) == 3

    wait_for(rolled, timeout=90, interval=0.1, what="the pool rolled to the new recipe")
    assert lowest_ready >= 3, "the roll went below the floor of ready warm pods"
    for pod in pools.warm_pods("roll"):
        assert pod.spec.containers[0].command == ["sleep", "7200"]
    still = pools.status(c.PLURAL, "kept")
    assert (still["phase"], still["podName"]) == ("Ready", kept["podName"])
    assert pools.pod(kept["podName"]).spec.containers[0].command == ["sleep", "3600"]

    # A new sandbox gets the new recipe.
    pools.sandbox("fresh", "roll", lifetime={"ttlSeconds": 3600})
    fresh = wait_for(lambda: pools.ready("fresh"), what="a new sandbox Ready")
    assert pools.pod(fresh["podName"]).spec.containers[0].command == ["sleep", "7200"]


def test_a_pool_scales_through_the_scale_subresource(pools: Pools, cluster: Cluster) -> None:
    pools.template("scaled")
    pools.pool("scaled", "scaled", 1)
    pools.wait_pool("scaled", 1)
    cluster.kubectl("scale", "-n", pools.namespace, "sandboxpool/scaled", "--replicas=5")
    pools.wait_pool("scaled", 5)
    scale = pools.custom.get_namespaced_custom_object_scale(c.GROUP, c.VERSION, pools.namespace, c.POOL_PLURAL,
                                                            "scaled")
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (5, 5)
    assert scale["status"]["selector"].endswith(f"!{c.LABEL_SANDBOX}")
    cluster.kubectl("scale", "-n", pools.namespace, "sandboxpool/scaled", "--replicas=2")
    pools.wait_pool("scaled", 2)
    wait_for(lambda: len(pools.warm_pods("scaled")) == 2 or None, what="the extra warm pods deleted")


def test_a_quota_stops_a_pool_from_filling_and_the_pool_says_so(pools: Pools) -> None:
    pools.core.create_namespaced_resource_quota(pools.namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="pods"), spec=client.V1ResourceQuotaSpec(hard={"pods": "2"})))
    wait_for(lambda: pools.core.read_namespaced_resource_quota("pods", pools.namespace).status.hard or None,
             what="the quota computed")
    pools.template("capped")
    pools.pool("capped", "capped", 4)

    def stopped() -> dict[str, Any] | None:
        status = pools.status(c.POOL_PLURAL, "capped")
        condition = next(iter(status.get("conditions") or []), {})
        return condition if condition.get("reason") == "QuotaExceeded" and status.get("readyReplicas") == 2 else None

    condition = wait_for(stopped, timeout=60, what="the pool reporting the quota")
    assert condition["status"] == "False"
    assert "exceeded quota" in condition["message"]
    assert len(pools.warm_pods("capped")) == 2


def test_deleting_a_pool_deletes_only_its_unclaimed_pods(pools: Pools) -> None:
    pools.template("gone")
    pools.pool("gone", "gone", 2)
    pools.wait_pool("gone", 2)
    pools.sandbox("stays", "gone", lifetime={"ttlSeconds": 3600})
    stays = wait_for(lambda: pools.ready("stays"), what="the claimed sandbox Ready")
    assert stays["launch"] == "Warm"
    pools.delete(c.POOL_PLURAL, "gone")
    wait_for(lambda: not pools.warm_pods("gone") or None, what="the unclaimed pods deleted")
    time.sleep(2)
    assert pools.pod(stays["podName"]).metadata.deletion_timestamp is None
    assert pools.ready("stays") is not None


def test_a_claimed_sandbox_expires_suspends_and_resumes_like_a_cold_one(pools: Pools) -> None:
    pools.template("life")
    pools.pool("life", "life", 2)
    pools.wait_pool("life", 2)
    pools.sandbox("short", "life", lifetime={"ttlSeconds": 4})
    pools.sandbox("paused", "life", lifetime={"ttlSeconds": 3600})
    short = wait_for(lambda: pools.ready("short"), what="the short sandbox Ready")
    paused = wait_for(lambda: pools.ready("paused"), what="the paused sandbox Ready")
    assert short["launch"] == paused["launch"] == "Warm"

    wait_for(lambda: pools.get(c.PLURAL, "short") is None or None, timeout=30, what="the short sandbox expired")

    pools.patch(c.PLURAL, "paused", {"spec": {"suspended": True}})
    wait_for(lambda: pools.status(c.PLURAL, "paused").get("phase") == "Suspended" or None, what="suspended")
    wait_for(lambda: _gone(pools, paused["podName"]), what="the claimed pod deleted on suspension")
    pools.patch(c.PLURAL, "paused", {"spec": {"suspended": False}})
    resumed = wait_for(lambda: pools.ready("paused"), what="resumed")
    assert resumed["podName"] != paused["podName"]


def _gone(pools: Pools, pod: str) -> bool | None:
    try:
        found = pools.pod(pod)
    except ApiException as error:
        return True if error.status == 404 else None
    return True if found.metadata.deletion_timestamp else None


def test_a_template_with_a_persistent_workspace_is_not_pooled(pools: Pools) -> None:
    pools.template("disk", workspace={"persistent": True})
    pools.pool("disk", "disk", 2)
    condition = wait_for(lambda: next(iter(pools.status(c.POOL_PLURAL, "disk").get("conditions") or []), None),
                         what="the pool's condition")
    assert condition["reason"] == "NotPoolable"
    assert pools.warm_pods("disk") == []


def test_a_sandbox_with_templateref_may_set_only_its_lifetime_and_suspension(pools: Pools) -> None:
    pools.template("strict")
    for extra, field in (({"image": "busybox"}, "image"), ({"resources": {"cpu": "2"}}, "resources"),
                         ({"command": ["sh"]}, "command"), ({"network": {"egress": {"mode": "Internet"}}}, "network")):
        error = api_error(lambda extra=extra: pools.sandbox("bad", "strict", **extra))
        assert error.status == 422, field
        assert "templateRef" in error.body
    pools.sandbox("good", "strict", lifetime={"ttlSeconds": 60}, suspended=True)
    error = api_error(lambda: pools.patch(c.PLURAL, "good", {"spec": {"templateRef": {"name": "other"}}}))
    assert "templateRef is immutable" in error.body


@pytest.fixture
def tenant_policy(cluster: Cluster, operator: OperatorProcess) -> Iterator[None]:
    install_tenant_policy(cluster)
    yield


def test_a_template_that_breaks_the_tenant_policy_cannot_be_used_to_escape_it(
    api: client.ApiClient, tenant_policy: None
) -> None:
    with tenant(api, limits={"cpu": "500m", "memory": "256Mi", "maxLifetimeSeconds": 3600}) as handle:
        pools = Pools(api, handle.namespace)
        hour = {"ttlSeconds": 3600}
        refused = {
            "image": api_error(lambda: pools.template("evil-image", image="evil.example/miner:1", lifetime=hour)),
            "cpu": api_error(lambda: pools.template("evil-cpu", resources={"cpu": "2", "memory": "64Mi"},
                                                    lifetime=hour)),
            "internet": api_error(lambda: pools.template("evil-net", network={"egress": {"mode": "Internet"}},
                                                         lifetime=hour)),
            "lifetime": api_error(lambda: pools.template("evil-life")),
        }
        for what, error in refused.items():
            assert error.status == 422, what
            assert "tenant " + handle.name in error.body, what
        assert "spec.image evil.example/miner:1 matches none of allowedImages" in refused["image"].body
        assert "spec.resources.cpu 2 exceeds limits.cpu 500m" in refused["cpu"].body
        assert "Internet is not allowed" in refused["internet"].body
        assert "spec.lifetime: set ttlSeconds or expiresAt" in refused["lifetime"].body
        # A Sandbox naming a refused template has nothing to run: it waits, it never runs the recipe.
        handle.create_sandbox({"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "escape"},
                               "spec": {"templateRef": {"name": "evil-cpu"}, "lifetime": {"ttlSeconds": 600}}})
        handle.wait_sandbox("escape", "False", "TemplateNotFound")
        # Its own lifetime is still held to the tenant's limit.
        pools.template("fine", lifetime={"ttlSeconds": 600})
        too_long = api_error(lambda: handle.create_sandbox({
            "apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "long"},
            "spec": {"templateRef": {"name": "fine"}, "lifetime": {"ttlSeconds": 7200}}}))
        assert "exceeds limits.maxLifetimeSeconds" in too_long.body
        handle.create_sandbox({"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "ok"},
                               "spec": {"templateRef": {"name": "fine"}}})
        handle.wait_sandbox("ok", "True", "PodReady", timeout=90)
