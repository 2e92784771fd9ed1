"""Wiring for SandboxTemplates and SandboxPools: keep the templates and each pool's warm pods known (pool.warm), call
the pure ``pool.decide.decide_pool`` and apply its plan.

Pools, templates, and the pools' warm pods and fences come from the operator's own streams (k8s.watch: Kopf's
list+watch, kept current on a standby too, without Kopf's per-object workers), like Sandboxes; Kopf runs the
start-up. No finalizers: owner references let the garbage collector delete a pool's unclaimed pods and fence with it
(claimed pods are owned by their Sandboxes by then). A template's change wakes its pools (they roll) and the
Sandboxes waiting for it; it never touches a running Sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.schema import describe_validation_error, next_condition, read_status, status_changed
from sandbox_operator.api.template import SandboxPoolSpec, SandboxPoolStatus, SandboxTemplateSpec
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.cache import Store
from sandbox_operator.k8s.client import KubeError
from sandbox_operator.k8s.loop import ObjectState, PassResult, forget_unlisted, reconcile, resource_version, track
from sandbox_operator.k8s.manifest import ChildSummary, controller_name, owned_by
from sandbox_operator.k8s.watch import Listener
from sandbox_operator.operator import Runtime
from sandbox_operator.pool.decide import (
    ApplyFence,
    CreateWarmPods,
    DeleteWarmPod,
    PoolObject,
    PoolObserved,
    WarmPod,
    decide_pool,
)
from sandbox_operator.pool.warm import WARM, pool_of_member
from sandbox_operator.sandbox.handlers import EXPECTATION_SECONDS, QUOTA_RETRY_SECONDS, wake_template_users

logger = logging.getLogger(__name__)

# A fence name held by another object is looked at again this often (it is never adopted).
CONFLICT_RETRY_SECONDS = 60.0


@dataclass
class PoolState(ObjectState):
    """What one pool's reconciliations share; kept in ``POOLS`` and dropped with the pool."""

    # Pods created whose ADDED event has not come yet, and pods deleted whose DELETED has not: name -> when.
    creating: dict[str, float] = field(default_factory=dict)
    deleting: dict[str, float] = field(default_factory=dict)
    gathering: bool = False  # a wake-up is on its way (``_wake``)
    status_written: float = 0.0  # when the last status write went out (monotonic)


POOLS: dict[tuple[str, str], PoolState] = {}
FENCES: Store[tuple[str, str], ChildSummary] = Store()
RUNTIME: list[Runtime] = []  # the process's runtime, for wake-ups that come without a Kopf memo


# Wake-ups of a pool by its pods' events, claims and its template are gathered for this long: a burst of claims (or
# of warm pods starting) costs one pass, and the refill does not compete with the claims it follows.
WAKE_GATHER_SECONDS = 0.25
# While a pool fills or refills its ready count moves with every pod: its status is written at most this often,
# unless its condition or generation changed.
STATUS_INTERVAL_SECONDS = 1.0


def _wake(key: tuple[str, str], trigger: str) -> None:
    state = POOLS.get(key)
    if state is None or not RUNTIME or state.gathering:
        return
    state.gathering = True
    loop = asyncio.get_running_loop()

    def fire() -> None:
        state.gathering = False
        state.task = loop.create_task(reconcile_pool(state, RUNTIME[0], key, trigger))

    loop.call_later(WAKE_GATHER_SECONDS, fire)


def _recipe(body: Mapping[str, Any]) -> SandboxTemplateSpec | str:
    """The template's validated recipe, or why it does not validate (never an exception: no value a user writes may
    stop the operator's start-up, which reads every template)."""
    try:
        return SandboxTemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return describe_validation_error(error, "spec")
    except Exception as error:  # an input nobody foresaw: its text may quote the spec, its type does not
        return f"spec: could not be read ({type(error).__name__})"


def _member_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    pool = pool_of_member(body)
    return None if pool is None else (str(body["metadata"].get("namespace") or ""), pool)


def _fence_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    pool = controller_name(body, c.POOL_KIND)
    return None if pool is None else (str(body["metadata"].get("namespace") or ""), pool)


@kopf.on.startup()
async def fill_pool_caches(memo: Any, **_: Any) -> None:
    """Keep the runtime for the streams' wake-ups. Pools, templates, and the pools' warm pods and fences, come from
    the operator's own streams (k8s.watch), listed before any pass of a Sandbox or pool, and kept current while
    this replica stands by (``reconcile_pool``)."""
    runtime: Runtime = memo["runtime"]
    RUNTIME[:] = [runtime]
    WARM.on_claimed = lambda key: _wake(key, "claimed")


def _template_key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def template_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """A template changed, appeared or went: its pools roll (or empty), and Sandboxes waiting for it go on.

    Templates come through the operator's own stream, not a Kopf handler: a standby that took over once waited for a
    template Kopf's watcher never delivered after the resume (tests/integration/test_standby.py, the claims test),
    while the operator's streams, listed before any pass, always were."""
    key, uid = _template_key(body), str(body["metadata"].get("uid", ""))
    if event_type == "DELETED":
        if not WARM.templates.remove(key, uid):
            return
        logger.info("SandboxTemplate %s/%s gone", *key)
    else:
        recipe, before = _recipe(body), WARM.templates.items.get(key)
        WARM.templates.put(key, uid, recipe)
        if before == (uid, recipe):
            return
        logger.info("SandboxTemplate %s/%s %s", *key, "seen" if before is None else "changed")
    _template_moved(key)


def _template_moved(key: tuple[str, str]) -> None:
    for pool in WARM.pools_of(*key):
        _wake((key[0], pool), "template")
    if RUNTIME:
        watch.spawn(wake_template_users(key, RUNTIME[0]))


def _templates_relisted(namespace: str | None, uids: set[str]) -> None:
    for key in WARM.templates.retain(uids, lambda key: namespace is None or key[0] == namespace):
        _template_moved(key)


watch.FOLLOWED.listen(watch.TEMPLATES, Listener(wants=lambda body: True, changed=template_changed,
                                                relisted=_templates_relisted))


def pool_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """Any change to a pool (its replicas, through scale too), from the operator's own stream: reconcile it. The echo
    of our own status write is skipped, like a Sandbox's.

    Pools come through that stream, not a Kopf handler, for the reason templates do (``template_changed``): listed
    before any pass at a start, and kept current while this replica stands by."""
    meta = body["metadata"]
    key, uid = (str(meta.get("namespace") or ""), str(meta["name"])), str(meta.get("uid") or "")
    state = track(POOLS, key, uid, event_type, lambda uid: PoolState(uid=uid), _forget)
    if state is None:
        return
    template = ((body.get("spec") or {}).get("templateRef") or {}).get("name")
    if isinstance(template, str):
        WARM.pool_templates[key] = template
    if state.packed is not None and resource_version(body) <= state.version:
        metrics.RECONCILES_SKIPPED.labels("pool").inc()
        return
    state.remember(body)
    if not RUNTIME:
        return
    watch.spawn(reconcile_pool(state, RUNTIME[0], key, trigger="listing" if event_type is None else "pool"))


def _forget(key: tuple[str, str], state: PoolState) -> None:
    """The pool is gone: no more passes; drop what was kept for it."""
    state.forget()
    del POOLS[key]
    WARM.pool_templates.pop(key, None)
    for kind in ("desired", "current", "ready"):
        metrics.POOL_PODS.remove(key[0], key[1], kind)


def _pools_resumed() -> None:
    """This replica resumed after a pause (a takeover): every pool gets a pass."""
    for key in list(POOLS):
        _wake(key, "resumed")


watch.FOLLOWED.on_resume(_pools_resumed)


def _pools_relisted(namespace: str | None, uids: set[str]) -> None:
    """A (re)listing: forget the pools it did not find (deleted while the stream was broken)."""
    forget_unlisted(POOLS, uids, lambda key: namespace is None or key[0] == namespace, _forget)


watch.FOLLOWED.listen(watch.POOLS, Listener(wants=lambda body: True, changed=pool_changed, relisted=_pools_relisted))


def is_pool_pod(body: Mapping[str, Any]) -> bool:
    """A pod a pool made (warm, or claimed since: it then leaves the pool's count)."""
    return bool((body.get("metadata", {}).get("labels") or {}).get(c.LABEL_POOL))


def pool_pod_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """A warm pod started, became ready, failed, went, or was claimed: its pool refills or rolls on."""
    meta = body["metadata"]
    pool = meta.get("labels", {}).get(c.LABEL_POOL)
    key = (str(meta.get("namespace") or ""), str(pool))
    state = POOLS.get(key)
    name = str(meta.get("name"))
    member = _member_key(body) == key
    if event_type == "DELETED" or not member:
        if state is not None:
            state.deleting.pop(name, None)
        if not WARM.remove_member(key, name):
            return  # a claimed pod's own events are its Sandbox's business
    else:
        summary = WarmPod.from_body(body)
        before = (WARM.members.get(key) or {}).get(name)
        WARM.put_member(key, str(meta.get("uid", "")), summary)
        if state is not None:
            state.creating.pop(name, None)
        if before is not None and before[1] == summary:
            return
    _wake(key, "pool-pod")


def _pool_pods_relisted(namespace: str | None, uids: set[str]) -> None:
    for key in WARM.retain(uids, lambda key: namespace is None or key[0] == namespace):
        _wake(key, "relisted")


def is_pool_fence(body: Mapping[str, Any]) -> bool:
    """A pool's fence NetworkPolicy."""
    return _fence_key(body) is not None


def fence_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """A pool's fence changed or went: put it back."""
    key, uid = _fence_key(body), str(body["metadata"].get("uid", ""))
    if key is None:
        return
    if FENCES.record(event_type, key, uid, lambda: ChildSummary.from_body(body)):
        _wake(key, "fence")


def _fences_relisted(namespace: str | None, uids: set[str]) -> None:
    for key in FENCES.retain(uids, lambda key: namespace is None or key[0] == namespace):
        _wake(key, "relisted")


watch.FOLLOWED.listen(watch.PODS, Listener(wants=is_pool_pod, changed=pool_pod_changed, relisted=_pool_pods_relisted))
watch.FOLLOWED.listen(watch.NETWORK_POLICIES, Listener(wants=is_pool_fence, changed=fence_changed,
                                                       relisted=_fences_relisted))


# --- the reconciliation ---------------------------------------------------------------------------------------------


def _load(body: Mapping[str, Any]) -> PoolObject | str:
    meta = body.get("metadata") or {}
    try:
        spec = SandboxPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return describe_validation_error(error, "spec")
    return PoolObject(name=str(meta.get("name")), namespace=str(meta.get("namespace")), uid=str(meta.get("uid")),
                      generation=int(meta.get("generation") or 0), spec=spec,
                      status=read_status(SandboxPoolStatus, body))


def _forget_old(expected: dict[str, float]) -> None:
    for name, at in list(expected.items()):
        if time.monotonic() - at > EXPECTATION_SECONDS:
            del expected[name]


async def _pool_pass(state: PoolState, runtime: Runtime, key: tuple[str, str]) -> PassResult:
    """One pass for one pool: observe, decide (pure), act, write the status."""
    body = state.body
    if body is None:
        return PassResult()
    now = datetime.now(UTC)
    pool = _load(body)
    if isinstance(pool, str):
        return await _report_invalid(runtime, body, pool, now)
    _forget_old(state.creating)
    _forget_old(state.deleting)
    observed = PoolObserved(
        recipe=WARM.recipe(pool.namespace, pool.spec.template_ref.name),
        pods=[pod for pod in WARM.pods(key) if pod.name not in state.deleting],
        fence=FENCES.get(key),
        starting=len(state.creating),
    )
    plan = decide_pool(pool, observed, runtime.defaults, now)
    refusal: KubeError | None = None
    for action in plan.actions:
        if isinstance(action, ApplyFence):
            conflict = await _apply_fence(runtime, pool, action)
            if conflict is not None:
                observed = replace(observed, fence_conflict=conflict)
                plan = decide_pool(pool, observed, runtime.defaults, now)
                break
        elif isinstance(action, DeleteWarmPod):
            deleted = await runtime.kube.delete_unclaimed(pool.namespace, action.name, action.resource_version)
            if deleted:
                state.deleting[action.name] = time.monotonic()
            elif deleted is None:
                WARM.remove_member(key, action.name)  # gone already (no event will say so)
        elif isinstance(action, CreateWarmPods):
            refusal = await _create_warm_pods(state, runtime, action)
    requeue_at = now + timedelta(seconds=CONFLICT_RETRY_SECONDS) if observed.fence_conflict else None
    if refusal is not None:
        plan = decide_pool(pool, replace(
            observed, quota_error=refusal.message if refusal.quota_exceeded else None,
            create_error=None if refusal.quota_exceeded else refusal.message,
        ), runtime.defaults, now)
        requeue_at = now + timedelta(seconds=QUOTA_RETRY_SECONDS)
    if state.creating:
        requeue_at = now + timedelta(seconds=EXPECTATION_SECONDS) if requeue_at is None else requeue_at
    if status_changed(SandboxPoolStatus, body.get("status"), plan.status):
        wait = state.status_written + STATUS_INTERVAL_SECONDS - time.monotonic()
        if wait > 0 and not _news(body.get("status") or {}, plan.status):
            later = now + timedelta(seconds=wait)
            requeue_at = later if requeue_at is None else min(requeue_at, later)
        else:
            updated = await runtime.kube.patch_pool_status(pool.namespace, pool.name, body.get("status") or {},
                                                           plan.status)
            state.status_written = time.monotonic()
            if updated is not None:
                state.remember(updated)
    if not state.deleted:  # a pool gone while this pass ran keeps no gauges (``_forget`` removed them)
        metrics.POOL_PODS.labels(pool.namespace, pool.name, "desired").set(pool.spec.replicas)
        metrics.POOL_PODS.labels(pool.namespace, pool.name, "current").set(plan.status.get("replicas", 0))
        metrics.POOL_PODS.labels(pool.namespace, pool.name, "ready").set(plan.status.get("readyReplicas", 0))
    return PassResult(requeue_at=requeue_at, failed="rejected" if refusal and not refusal.quota_exceeded else None)


def _news(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status says more than new counts: another condition (full, quota, template) or generation."""
    def condition(status: Mapping[str, Any]) -> tuple[Any, ...]:
        found: Mapping[str, Any] = next(iter(status.get("conditions") or []), {})
        return (found.get("status"), found.get("reason"), status.get("observedGeneration"))

    return condition(old) != condition(new)


async def _apply_fence(runtime: Runtime, pool: PoolObject, action: ApplyFence) -> str | None:
    """Create or replace the fence; return why not when its name is held by an object the pool does not own."""
    if action.replace:
        await runtime.kube.replace(c.ChildKind.NETWORK_POLICY, action.manifest)
        return None
    if await runtime.kube.create(c.ChildKind.NETWORK_POLICY, action.manifest) is not None:
        return None
    name = action.manifest["metadata"]["name"]
    live = await runtime.kube.get_child(c.ChildKind.NETWORK_POLICY, pool.namespace, name)
    if live is None or owned_by(live, pool.uid):
        return None  # ours (the watch has not shown it yet), or gone again: the next pass looks again
    return f"NetworkPolicy {name} already exists and this pool does not own it; it is never adopted"


# Warm pods are created this many at a time: a pool of 50 fills in a few round trips, not fifty.
CREATE_CONCURRENCY = 10


async def _create_warm_pods(state: PoolState, runtime: Runtime, action: CreateWarmPods) -> KubeError | None:
    """Create the warm pods, a few at once; return the first refusal (quota, admission), if any."""
    refusals: list[KubeError] = []

    async def create_one() -> None:
        try:
            created = await runtime.kube.create_warm_pod(action.manifest)
        except KubeError as error:
            if error.transient:
                raise
            refusals.append(error)
            return
        name = str((created.get("metadata") or {}).get("name") or "")
        if name and name not in (WARM.members.get(_key(action.manifest)) or {}):
            state.creating[name] = time.monotonic()

    remaining = action.count
    while remaining > 0 and not refusals:
        batch = min(CREATE_CONCURRENCY, remaining)
        await asyncio.gather(*(create_one() for _ in range(batch)))
        remaining -= batch
    return refusals[0] if refusals else None


def _key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    meta = manifest["metadata"]
    return (meta["namespace"], meta["labels"][c.LABEL_POOL])


async def _report_invalid(runtime: Runtime, body: Mapping[str, Any], error: str, now: datetime) -> PassResult:
    """A pool whose spec does not validate: say so in its status; nothing is created or deleted."""
    meta = body.get("metadata") or {}
    old = read_status(SandboxPoolStatus, body)
    generation = int(meta.get("generation") or 0)
    condition = next_condition(old, c.ConditionType.READY, c.ConditionStatus.FALSE, c.PoolReason.INVALID_SPEC,
                               error, generation, now)
    new = old.model_copy(update={"conditions": [condition], "message": condition.message,
                                 "observed_generation": generation}).to_dict()
    if status_changed(SandboxPoolStatus, body.get("status"), new):
        await runtime.kube.patch_pool_status(str(meta.get("namespace")), str(meta.get("name")),
                                             body.get("status") or {}, new)
    return PassResult(failed="rejected")


async def reconcile_pool(state: PoolState, runtime: Runtime, key: tuple[str, str], trigger: str) -> None:
    """Decide and act for one pool (one pass at a time, triggers folded, bounded backoff: k8s.loop), once its pods,
    fence and template have a current listing: at a start, and again after a 410 re-listing (a pass on the stores as
    they were before it would make warm pods again that were made meanwhile: their names are the API server's, so
    no 409 would say so). A standby's stores stay current while it is paused, and its pools' passes after the resume
    come ``WAKE_GATHER_SECONDS`` later (``_pools_resumed``), time for the last events of the replica that handed over
    to arrive."""
    await watch.wait_listed()
    for kind in (watch.PODS, watch.NETWORK_POLICIES, watch.TEMPLATES):
        await watch.wait_kind_listed(kind)
    await reconcile(state, lambda: _pool_pass(state, runtime, key), what=f"pool {key[0]}/{key[1]}", trigger=trigger)
