"""Kopf wiring: watch Sandboxes and their children, call the pure ``reconcile.decide``, apply its plan.

No finalizers are used (only event and index handlers), so deleting a Sandbox never waits for the
operator; owner references let the garbage collector remove the children. Per-sandbox state lives
in Kopf's per-object ``memo``, which Kopf drops with the object: nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from sandbox_operator import constants as c
from sandbox_operator import metrics
from sandbox_operator.kube import Kube, KubeError
from sandbox_operator.models import OperatorDefaults, load_sandbox, parse_time
from sandbox_operator.reconcile import (
    ChildSummary,
    CreateChild,
    DeleteChild,
    DeleteSandbox,
    Observed,
    Plan,
    PodSummary,
    UpdateChild,
    decide,
    status_changed,
)
from sandbox_operator.settings import Settings
from sandbox_operator.tenant_models import sandbox_defaults

logger = logging.getLogger(__name__)

# Kopf selects the operator's children by label, so it never watches unrelated pods' events in full.
CHILD_LABELS: dict[str, Any] = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_SANDBOX: kopf.PRESENT}
MAX_RETRY_DELAY = 300.0
QUOTA_RETRY_DELAY = 15.0


@dataclass
class Runtime:
    """Operator-wide objects, shared by every handler through the global memo."""

    kube: Kube
    defaults: OperatorDefaults


@dataclass
class SandboxState:
    """What one Sandbox's reconciliations share; lives in the Sandbox's Kopf memo and dies with it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    body: dict[str, Any] | None = None
    wakeup: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    quota_error: str | None = None
    create_error: str | None = None
    failures: int = 0
    phase: str | None = None
    deleted: bool = False
    # Children we created that the watch has not shown yet: without this, a reconcile in that window
    # would create them again (a harmless but wasted 409).
    expected: dict[str, tuple[PodSummary | ChildSummary, float]] = field(default_factory=dict)
    indices: dict[str, Any] = field(default_factory=dict)


def _resource_version(body: Mapping[str, Any] | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


def _remember(state: SandboxState, body: Mapping[str, Any]) -> None:
    """Keep the newest body seen, whether it came from the watch or from our own status write."""
    if state.body is None or _resource_version(body) >= _resource_version(state.body):
        state.body = {key: body[key] for key in body}


def _state(memo: Any) -> SandboxState:
    state = memo.get("sandbox")
    if state is None:
        state = memo["sandbox"] = SandboxState()
    return state  # type: ignore[no-any-return]


# --- indices: the children as the API server has them, keyed by (namespace, sandbox name) ---------------


@kopf.index("sandbox-operator.io", "v1alpha1", "sandboxes")
def sandbox_states(namespace: str | None, name: str, memo: Any, **_: Any) -> dict[tuple[str, str], SandboxState]:
    """Each Sandbox's shared state, so that events of its children can wake it."""
    return {(namespace or "", name): _state(memo)}


@kopf.index("pods", labels=CHILD_LABELS)
def sandbox_pods(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Any, PodSummary]:
    """Sandbox pods, summarised."""
    return {(namespace or "", labels[c.LABEL_SANDBOX]): PodSummary.from_body(body)}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=CHILD_LABELS)
def sandbox_policies(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Any, ChildSummary]:
    """Sandbox NetworkPolicies."""
    return {(namespace or "", labels[c.LABEL_SANDBOX]): ChildSummary.from_body(body)}


@kopf.index("services", labels=CHILD_LABELS)
def sandbox_services(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Any, ChildSummary]:
    """Sandbox Services."""
    return {(namespace or "", labels[c.LABEL_SANDBOX]): ChildSummary.from_body(body)}


@kopf.index("persistentvolumeclaims", labels=CHILD_LABELS)
def sandbox_pvcs(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Any, ChildSummary]:
    """Sandbox workspace PVCs."""
    return {(namespace or "", labels[c.LABEL_SANDBOX]): ChildSummary.from_body(body)}


def _one(index: kopf.Index[Any, Any], key: tuple[str, str]) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


EXPECTATION_SECONDS = 30.0
INDEX_OF_KIND = {
    c.ChildKind.POD: "sandbox_pods",
    c.ChildKind.NETWORK_POLICY: "sandbox_policies",
    c.ChildKind.SERVICE: "sandbox_services",
    c.ChildKind.PVC: "sandbox_pvcs",
}


def _child(state: SandboxState, key: tuple[str, str], kind: c.ChildKind) -> Any:
    """The child as the index has it, else as we just created it (for a short while)."""
    seen = _one(state.indices[INDEX_OF_KIND[kind]], key)
    expected = state.expected.get(kind)
    if seen is not None or expected is None or time.monotonic() - expected[1] > EXPECTATION_SECONDS:
        state.expected.pop(kind, None)
        return seen
    return expected[0]


def _expect(state: SandboxState, manifest: Mapping[str, Any]) -> None:
    meta = manifest["metadata"]
    digest = (meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH)
    kind = c.ChildKind(manifest["kind"])
    summary: PodSummary | ChildSummary = (
        PodSummary(meta["name"], spec_hash=digest) if kind is c.ChildKind.POD else ChildSummary(meta["name"], digest)
    )
    state.expected[kind] = (summary, time.monotonic())


def _observe(state: SandboxState, key: tuple[str, str]) -> Observed:
    return Observed(
        pod=_child(state, key, c.ChildKind.POD),
        network_policy=_child(state, key, c.ChildKind.NETWORK_POLICY),
        service=_child(state, key, c.ChildKind.SERVICE),
        pvc=_child(state, key, c.ChildKind.PVC),
        quota_error=state.quota_error,
        create_error=state.create_error,
    )


# --- the reconciliation ---------------------------------------------------------------------------------


async def _apply(
    runtime: Runtime, state: SandboxState, sandbox_key: tuple[str, str], uid: str, plan: Plan
) -> KubeError | None:
    """Carry out the plan's actions in order; return the error if the API server refused a create for good."""
    namespace, name = sandbox_key
    for action in plan.actions:
        if isinstance(action, CreateChild):
            try:
                await runtime.kube.create(c.ChildKind(action.manifest["kind"]), action.manifest)
            except KubeError as error:
                if error.transient:
                    raise
                return error
            _expect(state, action.manifest)
        elif isinstance(action, UpdateChild):
            await runtime.kube.replace(c.ChildKind(action.manifest["kind"]), action.manifest)
        elif isinstance(action, DeleteChild):
            state.expected.pop(action.kind, None)
            await runtime.kube.delete(action.kind, namespace, action.name)
        elif isinstance(action, DeleteSandbox):
            await runtime.kube.delete_sandbox(namespace, name, uid)
    return None


def _record(state: SandboxState, body: Mapping[str, Any], plan: Plan) -> None:
    """Update metrics and post Events for the transitions the plan reports."""
    namespace = body["metadata"]["namespace"]
    phase = None if state.deleted else plan.status.get("phase")
    if phase != state.phase:
        if state.phase is not None:
            metrics.SANDBOXES.labels(namespace, state.phase).dec()
        if phase is not None:
            metrics.SANDBOXES.labels(namespace, phase).inc()
        state.phase = phase
    old_status = body.get("status") or {}
    for event in plan.events:
        kopf.event(body, type=event.type.value, reason=event.reason.value, message=event.message)  # type: ignore[arg-type]
        if event.reason is c.EventReason.READY and not old_status.get("startedAt"):
            created = parse_time(body["metadata"]["creationTimestamp"])
            metrics.READY_LATENCY.observe((datetime.now(UTC) - created).total_seconds())
        if event.reason is c.EventReason.EXPIRED and plan.expiry_reason is not None:
            action = "delete" if any(isinstance(a, DeleteSandbox) for a in plan.actions) else "suspend"
            metrics.EXPIRATIONS.labels(plan.expiry_reason.value, action).inc()


def _schedule(
    state: SandboxState, runtime: Runtime, key: tuple[str, str], at: datetime | None, delay: float | None
) -> None:
    """Wake this sandbox again at ``at`` (a deadline) or after ``delay`` seconds (a retry), whichever is first."""
    if state.wakeup is not None:
        state.wakeup.cancel()
        state.wakeup = None
    if state.deleted:
        return
    delays = [d for d in (delay, (at - datetime.now(UTC)).total_seconds() if at else None) if d is not None]
    if not delays:
        return
    loop = asyncio.get_running_loop()

    def fire() -> None:
        state.task = loop.create_task(reconcile_sandbox(state, runtime, key, trigger="timer"))

    # +50ms: wake just after the deadline, never a hair before it.
    state.wakeup = loop.call_later(max(0.0, min(delays)) + 0.05, fire)


async def reconcile_sandbox(state: SandboxState, runtime: Runtime, key: tuple[str, str], trigger: str) -> None:
    """Decide and act for one Sandbox; serialised per Sandbox by its lock, retried with bounded backoff."""
    async with state.lock:
        body = state.body
        if body is None or not state.indices or state.deleted:
            return
        metrics.RECONCILES.labels(trigger).inc()
        defaults = sandbox_defaults(state.indices["tenant_ttl_defaults"], key[0], runtime.defaults)
        sandbox = load_sandbox(body, defaults)
        retry: float | None = None
        try:
            plan = decide(sandbox, _observe(state, key), datetime.now(UTC))
            refused = await _apply(runtime, state, key, body["metadata"]["uid"], plan)
            if refused is not None:
                # Report why, then retry later: quota frees up, and a refused spec may be fixed by a new generation.
                state.failures += 1
                if refused.quota_exceeded:
                    state.quota_error, retry = refused.message, QUOTA_RETRY_DELAY
                else:
                    state.create_error = refused.message
                    retry = min(MAX_RETRY_DELAY, 2.0**state.failures)
                    metrics.RECONCILE_ERRORS.labels("rejected").inc()
                plan = decide(sandbox, _observe(state, key), datetime.now(UTC))
            state.quota_error = state.create_error = None  # the next pass tries afresh
            if status_changed(body.get("status"), plan.status):
                updated = await runtime.kube.patch_status(key[0], key[1], body.get("status") or {}, plan.status)
                if updated is not None:
                    _remember(state, updated)
            _record(state, body, plan)
            if refused is None:
                state.failures = 0
        except KubeError as error:
            kind = "temporary" if error.transient else "rejected"
            metrics.RECONCILE_ERRORS.labels(kind).inc()
            state.failures += 1
            retry = min(MAX_RETRY_DELAY, 2.0 ** state.failures)
            logger.warning("sandbox %s/%s: %s; retrying in %.0fs", key[0], key[1], error, retry)
            plan = None
        except Exception:
            metrics.RECONCILE_ERRORS.labels("unexpected").inc()
            state.failures += 1
            retry = min(MAX_RETRY_DELAY, 2.0 ** state.failures)
            logger.exception("sandbox %s/%s: reconcile failed; retrying in %.0fs", key[0], key[1], retry)
            plan = None
        _schedule(state, runtime, key, plan.requeue_at if plan else None, retry)


@kopf.on.event("sandbox-operator.io", "v1alpha1", "sandboxes")
async def sandbox_changed(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, memo: Any, **kwargs: Any
) -> None:
    """Any change to a Sandbox (including its activity annotation): reconcile it."""
    state, namespace = _state(memo), namespace or ""
    if event["type"] == "DELETED":
        state.deleted = True
        if state.wakeup is not None:
            state.wakeup.cancel()
        if state.phase is not None:
            metrics.SANDBOXES.labels(namespace, state.phase).dec()
            state.phase = None
        return
    state.indices = {k: kwargs[k] for k in (*INDEX_OF_KIND.values(), "tenant_ttl_defaults")}
    _remember(state, body)
    await reconcile_sandbox(state, memo["runtime"], (namespace, name), trigger="sandbox")


async def _child_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, indices: Mapping[str, Any],
                         trigger: str) -> None:
    key = (namespace or "", labels[c.LABEL_SANDBOX])
    state = _one(indices["sandbox_states"], key)
    if state is not None:
        await reconcile_sandbox(state, memo["runtime"], key, trigger=trigger)


@kopf.on.event("pods", labels=CHILD_LABELS)
async def pod_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **kwargs: Any) -> None:
    """A sandbox pod changed (scheduled, started, ready, failed, gone): reconcile its Sandbox."""
    await _child_changed(namespace, labels, memo, kwargs, "pod")


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=CHILD_LABELS)
async def policy_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **kwargs: Any) -> None:
    """A sandbox NetworkPolicy changed or vanished: put it back."""
    await _child_changed(namespace, labels, memo, kwargs, "networkpolicy")


@kopf.on.event("services", labels=CHILD_LABELS)
async def service_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **kwargs: Any) -> None:
    """A sandbox Service changed or vanished: put it back."""
    await _child_changed(namespace, labels, memo, kwargs, "service")


@kopf.on.event("persistentvolumeclaims", labels=CHILD_LABELS)
async def pvc_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **kwargs: Any) -> None:
    """A sandbox workspace PVC changed or vanished."""
    await _child_changed(namespace, labels, memo, kwargs, "pvc")


# --- start-up and shutdown ------------------------------------------------------------------------------


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Connect to the API, serve metrics and tune Kopf (no finalizers, bounded retries, peering)."""
    config: Settings = memo["settings"]
    memo["runtime"] = Runtime(
        kube=await Kube.connect(),
        defaults=OperatorDefaults(
            allow_dns=config.default_allow_dns,
            ttl_seconds=config.default_ttl_seconds,
            node_selector=config.pod_node_selector,
            tolerations=tuple(t.model_dump(by_alias=True, exclude_none=True) for t in config.pod_tolerations),
            forbidden_egress=tuple(config.forbidden_egress_cidrs),
        ),
    )
    metrics.serve(config.metrics_port)
    settings.posting.level = logging.WARNING  # Events are posted explicitly, one per transition
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.peering.name = config.peering_name
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.stealth = True
    logger.info("sandbox-operator started; metrics on :%d", config.metrics_port)


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    """Close the API connection pool."""
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.kube.close()
