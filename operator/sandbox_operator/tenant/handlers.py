"""Wiring for Tenants: observe the tenant's objects, call the pure ``tenant.decide.decide_tenant``, apply.

Like the Sandbox side: no finalizers (deleting a Tenant never waits for the operator; owner references let the
garbage collector delete its namespace and policy binding). Tenants come from the operator's own stream (k8s.watch),
listed before any Sandbox's pass at a start, and kept current while this replica stands by: a Sandbox is never
decided without its Tenant's lifetime rules. Events of the objects rendered for a tenant (found by their owner
reference, else their tenant label; Kopf's handlers, and the NetworkPolicy stream) wake that Tenant, so a deleted
RoleBinding is put back and a ResourceQuota's new usage reaches the Tenant's status. Nothing here takes part in
admission: quota and policy are enforced by the API server, whether or not the operator runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import status_changed
from sandbox_operator.api.tenant import TenantLifetime, TenantObject, TenantStatus, load_tenant
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.cache import Store
from sandbox_operator.k8s.client import Kube, KubeError
from sandbox_operator.k8s.loop import ObjectState, PassResult, forget_unlisted, reconcile, record_repair, track
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.k8s.watch import Listener
from sandbox_operator.operator import Runtime
from sandbox_operator.tenant.decide import (
    ApplyObject,
    NamespaceSummary,
    QuotaSummary,
    TenantObserved,
    TenantPlan,
    decide_tenant,
    decide_tenant_safely,
)
from sandbox_operator.tenant.render import owning_tenant, policy_binding_name, render_admission_probe

logger = logging.getLogger(__name__)

# Each Tenant is looked at again this often, events or not: its objects' events come through Kopf's handlers
# (namespaces, quotas, LimitRanges, RoleBindings, policy bindings), and one missed (a watch that did not resume) must
# not leave a deleted policy binding or RoleBinding unrepaired for good. A pass that finds nothing to do only reads.
RESYNC_SECONDS = 300.0

WARNING_REASONS = frozenset(
    {
        c.TenantReason.NAMESPACE_CONFLICT,
        c.TenantReason.INVALID_SPEC,
        c.TenantReason.APPLY_FAILED,
        c.TenantReason.RECONCILE_ERROR,
    }
)


@dataclass
class TenantState(ObjectState):
    """What one Tenant's reconciliations share; kept in ``TENANTS`` and dropped with the Tenant."""


# Each Tenant's shared state by name, so that events of its objects can wake it; entries go with DELETED events (or
# a listing without the Tenant).
TENANTS: dict[str, TenantState] = {}
# Each tenant namespace's lifetime rules (default TTL, maximum), for ``sandbox.defaults.sandbox_defaults``, from the
# Tenants' stream: listed before any Sandbox's pass (the start-up gate), so no Sandbox is decided without them.
TENANT_LIFETIMES: Store[str, TenantLifetime] = Store()
# The process's runtime, for the streams' wake-ups (k8s.watch), which come without a Kopf memo.
RUNTIME: list[Runtime] = []
# Called with a tenant namespace whose lifetime rules changed (sandbox.handlers: its Sandboxes' deadlines follow).
LIFETIME_LISTENERS: list[Callable[[str], None]] = []


def tenant_namespace(body: Mapping[str, Any]) -> str | None:
    """The namespace a Tenant's body names, if it names one."""
    namespace = (body.get("spec") or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def _lifetime(body: Mapping[str, Any]) -> TenantLifetime:
    return TenantLifetime.from_spec(body.get("spec") or {})


@kopf.on.startup()
async def remember_tenant_runtime(memo: Any, **_: Any) -> None:
    """Keep the runtime for the streams' wake-ups. Runs after ``operator.start`` (registered first), which made the
    runtime and starts the streams."""
    RUNTIME[:] = [memo["runtime"]]


# --- observe, decide, act -----------------------------------------------------------------------------------------


async def _observe(kube: Kube, tenant: TenantObject) -> TenantObserved:
    """Read the tenant's objects; those inside the namespace only when it exists."""
    name = tenant.spec.namespace
    namespace = await kube.get(c.TenantChildKind.NAMESPACE, None, name)
    binding = await kube.get(c.TenantChildKind.POLICY_BINDING, None, policy_binding_name(tenant))
    if namespace is None:
        return TenantObserved(policy_binding=ChildSummary.from_body(binding) if binding else None)
    quota, limit_range, policy, role_binding, exec_role_binding = await asyncio.gather(
        kube.get(c.TenantChildKind.RESOURCE_QUOTA, name, c.TENANT_QUOTA_NAME),
        kube.get(c.TenantChildKind.LIMIT_RANGE, name, c.TENANT_LIMIT_RANGE_NAME),
        kube.get(c.TenantChildKind.NETWORK_POLICY, name, c.TENANT_NETWORK_POLICY_NAME),
        kube.get(c.TenantChildKind.ROLE_BINDING, name, c.TENANT_ROLE_BINDING_NAME),
        kube.get(c.TenantChildKind.ROLE_BINDING, name, c.TENANT_EXEC_ROLE_BINDING_NAME),
    )
    enforced = False
    if role_binding is None and binding is not None:
        refusal = await kube.dry_run_sandbox(render_admission_probe(tenant))
        enforced = refusal is not None and c.ADMISSION_PROBE_MESSAGE in refusal.message
    return TenantObserved(
        policy_enforced=enforced,
        namespace=NamespaceSummary.from_body(namespace),
        quota=QuotaSummary.from_body(quota) if quota else None,
        limit_range=ChildSummary.from_body(limit_range) if limit_range else None,
        network_policy=ChildSummary.from_body(policy) if policy else None,
        policy_binding=ChildSummary.from_body(binding) if binding else None,
        role_binding=ChildSummary.from_body(role_binding) if role_binding else None,
        exec_role_binding=ChildSummary.from_body(exec_role_binding) if exec_role_binding else None,
    )


async def _apply(kube: Kube, state: TenantState, plan: TenantPlan, now: datetime) -> KubeError | None:
    """Carry out the plan in order; return the error if the API server refused a write for good."""
    for action in plan.actions:
        try:
            if isinstance(action, ApplyObject):
                kind = c.TenantChildKind(action.manifest["kind"])
                await kube.apply(kind, action.manifest)
                if action.repair:
                    record_repair(state, kind, now)
            else:
                await kube.create_object(c.TenantChildKind(action.manifest["kind"]), action.manifest)
        except KubeError as error:
            if error.transient:
                raise
            return error
    return None


def _post_event(body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """One Event per change of the Ready condition's reason."""
    def reason(status: Mapping[str, Any]) -> str | None:
        return next((cond.get("reason") for cond in status.get("conditions") or []), None)

    new_reason = reason(new)
    if new_reason is None or new_reason == reason(old):
        return
    kind = c.EventType.WARNING if new_reason in WARNING_REASONS else c.EventType.NORMAL
    message = next((cond.get("message", "") for cond in new.get("conditions") or []), "")
    kopf.event(body, type=kind.value, reason=new_reason, message=message)  # type: ignore[arg-type]


async def _pass(state: TenantState, runtime: Runtime) -> PassResult:
    """One pass for one Tenant: observe its objects, decide (pure), apply, write the status, post the Event."""
    body = state.body
    if body is None:
        return PassResult()
    name = body["metadata"]["name"]
    now = datetime.now(UTC)
    tenant = load_tenant(body)
    observed = await _observe(runtime.kube, tenant) if isinstance(tenant, TenantObject) else TenantObserved()
    held = {c.TenantChildKind(kind): until for kind, until in state.repairs.held(now).items()}
    observed = replace(observed, held=held)
    plan, error = decide_tenant_safely(body, lambda: decide_tenant(tenant, observed, now), now)
    failed = "decide" if error is not None else None
    refused = await _apply(runtime.kube, state, plan, now)
    if refused is not None:
        why = f"{refused.verb} {refused.resource}: {refused.status} {refused.message}"
        # Everything else observed still holds (the quota's usage stays in status while the write fails).
        refusal = replace(observed, apply_error=why)
        plan, _ = decide_tenant_safely(body, lambda: decide_tenant(tenant, refusal, now), now)
        failed = "rejected"
    old_status = body.get("status") or {}
    if status_changed(TenantStatus, old_status, plan.status):
        updated = await runtime.kube.patch_tenant_status(name, old_status, plan.status)
        _post_event(body, old_status, plan.status)
        if updated is not None:
            state.remember(updated)
    resync = now + timedelta(seconds=RESYNC_SECONDS)
    requeue_at = resync if plan.requeue_at is None else min(plan.requeue_at, resync)
    return PassResult(requeue_at=requeue_at, failed=failed, error=error)


async def reconcile_tenant(state: TenantState, runtime: Runtime, trigger: str) -> None:
    """Decide and act for one Tenant (one pass at a time, triggers folded, bounded backoff: k8s.loop); a burst of
    quota updates (fifty sandboxes created at once) costs a few passes, not fifty."""
    name = (state.body or {}).get("metadata", {}).get("name", "")
    await reconcile(state, lambda: _pass(state, runtime), what=f"tenant {name}", trigger=trigger)


def tenant_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """Any change to a Tenant, from the operator's own stream (k8s.watch): reconcile it. On deletion only stop: the
    garbage collector removes its objects.

    Tenants came through a Kopf handler before, and their lifetime rules from a LIST at start-up, trusted for two
    minutes: a standby paused for longer forgot them, and after taking over decided its Sandboxes without them (a
    later deadline) until Kopf's listing came through. The stream is listed before any Sandbox's pass."""
    meta = body["metadata"]
    name, uid, namespace = str(meta["name"]), str(meta.get("uid") or ""), tenant_namespace(body)
    state = track(TENANTS, name, uid, event_type, lambda uid: TenantState(uid=uid), _forget)
    if state is None:
        return
    if namespace is not None and TENANT_LIFETIMES.record(event_type, namespace, uid, lambda: _lifetime(body)) and (
        event_type is not None or watch.listed()
    ):
        for rules_changed in LIFETIME_LISTENERS:  # not at the start-up listing: every Sandbox's first pass follows
            rules_changed(namespace)
    state.remember(body)
    if RUNTIME:
        watch.spawn(reconcile_tenant(state, RUNTIME[0], trigger="listing" if event_type is None else "tenant"))


def _forget(name: str, state: TenantState) -> None:
    """The Tenant is gone: no more passes; drop its lifetime rules (the ones its namespace had from it)."""
    state.forget()
    del TENANTS[name]
    namespace = tenant_namespace(state.body or {})
    if namespace is not None:
        TENANT_LIFETIMES.remove(namespace, state.uid)


def _tenants_resumed() -> None:
    """This replica resumed after a pause (a takeover): every Tenant gets a pass."""
    if RUNTIME:
        for state in list(TENANTS.values()):
            watch.spawn(reconcile_tenant(state, RUNTIME[0], trigger="resumed"))


watch.FOLLOWED.on_resume(_tenants_resumed)


def _tenants_relisted(namespace: str | None, uids: set[str]) -> None:
    """A (re)listing: forget the Tenants it did not find (deleted while the stream was broken), and their rules."""
    forget_unlisted(TENANTS, uids, lambda name: True, _forget)


watch.FOLLOWED.listen(watch.TENANTS, Listener(wants=lambda body: True, changed=tenant_changed,
                                              relisted=_tenants_relisted))


def is_tenant_child(body: Mapping[str, Any], **_: Any) -> bool:
    """Kopf filter: the object was rendered for a Tenant (by owner reference, or failing that its labels)."""
    return owning_tenant(body) is not None


async def _child_changed(body: Mapping[str, Any], memo: Any, trigger: str) -> None:
    owner = owning_tenant(body)
    state = TENANTS.get(owner) if owner is not None else None
    if state is not None:
        await reconcile_tenant(state, memo["runtime"], trigger=trigger)


@kopf.on.event("namespaces", when=is_tenant_child)
async def tenant_namespace_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tenant namespace changed or is going away: reconcile its Tenant."""
    await _child_changed(body, memo, "tenant-namespace")


@kopf.on.event("resourcequotas", when=is_tenant_child)
async def tenant_quota_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tenant ResourceQuota changed (usually its usage): refresh the Tenant's status, grant access once computed."""
    await _child_changed(body, memo, "tenant-quota")


@kopf.on.event("limitranges", when=is_tenant_child)
async def tenant_limit_range_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tenant LimitRange changed or vanished: put it back."""
    await _child_changed(body, memo, "tenant-limitrange")


def tenant_policy_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """A tenant's default-deny NetworkPolicy changed or vanished: put it back (from the NetworkPolicy stream,
    k8s.watch, which the Sandboxes' and pools' policies share)."""
    if event_type is None or not RUNTIME:
        return  # the Tenants' own listing reconciles each anyway
    owner = owning_tenant(body)
    state = TENANTS.get(owner) if owner is not None else None
    if state is not None:
        watch.spawn(reconcile_tenant(state, RUNTIME[0], "tenant-networkpolicy"))


watch.FOLLOWED.listen(watch.NETWORK_POLICIES, Listener(wants=is_tenant_child, changed=tenant_policy_changed))


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", when=is_tenant_child)
async def tenant_role_binding_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tenant RoleBinding (access to Sandboxes, or exec) changed or vanished: put it back."""
    await _child_changed(body, memo, "tenant-rolebinding")


@kopf.on.event("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", when=is_tenant_child)
async def tenant_policy_binding_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A tenant's admission policy binding changed or vanished: put it back."""
    await _child_changed(body, memo, "tenant-policybinding")
