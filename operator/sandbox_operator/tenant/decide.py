"""The pure decision for a Tenant: (Tenant, observed objects, now) -> actions, new status, when to look again.

Rules, in order:
- A body that fails validation gets Ready=False/InvalidSpec naming the field; nothing is created or changed.
- The namespace is created (never adopted): if it exists without this Tenant's owner reference, Ready=False
  /NamespaceConflict and nothing is touched. A terminating namespace is waited for.
- The ResourceQuota, LimitRange, default-deny NetworkPolicy and the admission policy binding are applied whenever
  missing, rendered from another spec (the spec hash annotation tells) or changed by someone else (their fields are
  compared with the rendering, k8s.manifest.differences).
- The RoleBinding that lets the tenant's subjects in is created only once the admission policy is in effect in the
  namespace (the API server refused the operator's dry-run probe: it loads bindings asynchronously) and the
  ResourceQuota's status shows every rendered limit and its usage: before the resourcequota controller has computed
  a quota, admission does not enforce it, so granting access earlier could over-admit. Once granted, access stays
  while later quota edits propagate (admission keeps enforcing the previous status meanwhile).
- The exec RoleBinding (the subjects when the Tenant sets execAccess, else none) is applied together with that
  first grant, never before it; once either binding exists it is kept current like the other objects, so turning
  execAccess on or off, or changing the subjects, reaches it at once.
- Status: Ready and usage against each limit, copied from the ResourceQuota's status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import next_condition, parse_quantity, read_status, seconds_after
from sandbox_operator.api.tenant import QUOTA_RESOURCES, InvalidTenant, TenantObject, TenantStatus
from sandbox_operator.k8s.manifest import ChildSummary, differences, owned_view, rendered_view
from sandbox_operator.tenant import render

WAIT_RETRY_SECONDS = 2.0
# Fields where an addition changes meaning: the default-deny policy's rules and selector, who the RoleBinding lets in,
# which namespace the admission policy binding covers. The API server treats each as atomic, so an apply replaces it.
TENANT_EXACT_FIELDS: Mapping[c.TenantChildKind, frozenset[str]] = {
    c.TenantChildKind.NAMESPACE: frozenset(),
    c.TenantChildKind.RESOURCE_QUOTA: frozenset(),
    c.TenantChildKind.LIMIT_RANGE: frozenset(),
    c.TenantChildKind.NETWORK_POLICY: frozenset({"spec"}),
    c.TenantChildKind.ROLE_BINDING: frozenset({"subjects"}),
    c.TenantChildKind.POLICY_BINDING: frozenset({"spec.matchResources.namespaceSelector"}),
}
CONFLICT_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class NamespaceSummary:
    """The tenant's namespace as the API server has it."""

    name: str
    owner_uids: tuple[str, ...] = ()
    terminating: bool = False
    spec_hash: str | None = None
    owned: Mapping[str, Any] | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NamespaceSummary:
        """Summarise a Namespace body."""
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            owner_uids=tuple(str(ref.get("uid")) for ref in meta.get("ownerReferences") or []),
            terminating=bool(meta.get("deletionTimestamp")) or (body.get("status") or {}).get("phase") == "Terminating",
            spec_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
            owned=owned_view(body),
        )


@dataclass(frozen=True)
class QuotaSummary:
    """The tenant's ResourceQuota: the hash it was rendered from and what the resourcequota controller computed."""

    spec_hash: str | None = None
    status_hard: Mapping[str, str] | None = None
    used: Mapping[str, str] | None = None
    owned: Mapping[str, Any] | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> QuotaSummary:
        """Summarise a ResourceQuota body."""
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        return cls(
            spec_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
            status_hard={str(k): str(v) for k, v in (status.get("hard") or {}).items()},
            used={str(k): str(v) for k, v in (status.get("used") or {}).items()},
            owned=owned_view(body),
        )


@dataclass(frozen=True)
class TenantObserved:
    """The tenant's objects as the API server has them (None: absent), and why the last write failed, if it did."""

    namespace: NamespaceSummary | None = None
    quota: QuotaSummary | None = None
    limit_range: ChildSummary | None = None
    network_policy: ChildSummary | None = None
    policy_binding: ChildSummary | None = None
    role_binding: ChildSummary | None = None
    exec_role_binding: ChildSummary | None = None
    policy_enforced: bool = False
    apply_error: str | None = None
    # Kinds whose next repair must wait (another writer keeps changing them), and until when.
    held: Mapping[c.TenantChildKind, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateObject:
    """Create this object; one of that name existing already counts as done (the next pass looks at who owns it)."""

    manifest: dict[str, Any]


@dataclass(frozen=True)
class ApplyObject:
    """Server-side apply this object: created if missing, brought to the manifest otherwise; ``repair`` when someone
    else changed it (the Tenant did not change)."""

    manifest: dict[str, Any]
    repair: bool = False


TenantAction = CreateObject | ApplyObject


@dataclass(frozen=True)
class TenantPlan:
    """What to do for a Tenant, the status to write, and when to look again (None: only on the next event)."""

    actions: tuple[TenantAction, ...]
    status: dict[str, Any]
    requeue_at: datetime | None = None


def _hash(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH])


def _current(summary: ChildSummary | QuotaSummary | NamespaceSummary | None, manifest: Mapping[str, Any]) -> bool:
    """Whether the object exists, was rendered from this spec, and still says what it was rendered to say: a forced
    server-side apply brings back every field that differs (under the exact fields, lists and selectors that the API
    treats as atomic, it also drops what others added)."""
    if summary is None or summary.spec_hash != _hash(manifest):
        return False
    exact = TENANT_EXACT_FIELDS[c.TenantChildKind(manifest["kind"])]
    return summary.owned is None or not differences(rendered_view(manifest), summary.owned, exact)


def quota_computed(hard: Mapping[str, str], quota: QuotaSummary | None) -> bool:
    """Whether the resourcequota controller has computed this quota: its status holds every rendered limit, with the
    same value, and the usage of each. Only then does admission enforce it."""
    if quota is None or quota.status_hard is None or quota.used is None:
        return False
    for resource, value in hard.items():
        status_value = quota.status_hard.get(resource)
        if status_value is None or resource not in quota.used:
            return False
        if parse_quantity(status_value) != parse_quantity(value):
            return False
    return True


def usage(quota: QuotaSummary | None) -> dict[str, dict[str, str]] | None:
    """Use against each limit as the ResourceQuota's status reports it; None before the controller computed it."""
    if quota is None or not quota.status_hard:
        return None
    used = quota.used or {}
    return {
        row.field: {"used": used.get(row.resources[0], "0"), "hard": quota.status_hard[row.resources[0]]}
        for row in QUOTA_RESOURCES
        if row.resources[0] in quota.status_hard
    }


def _status(
    tenant: TenantObject | InvalidTenant,
    ready: bool,
    reason: c.TenantReason,
    message: str,
    now: datetime,
    observed: TenantObserved | None = None,
) -> dict[str, Any]:
    status = TenantStatus.model_validate(
        {
            "conditions": [
                next_condition(
                    tenant.status,
                    c.TenantConditionType.READY,
                    c.ConditionStatus.TRUE if ready else c.ConditionStatus.FALSE,
                    reason,
                    message,
                    tenant.generation,
                    now,
                )
            ],
            "observedGeneration": tenant.generation,
            "namespace": tenant.spec.namespace if isinstance(tenant, TenantObject) else tenant.status.namespace,
            "usage": usage(observed.quota) if observed else None,
        }
    )
    return status.to_dict()


def decide_tenant(tenant: TenantObject | InvalidTenant, observed: TenantObserved, now: datetime) -> TenantPlan:
    """The actions that bring the tenant's objects to its spec, and its new status."""
    if isinstance(tenant, InvalidTenant):
        return TenantPlan((), _status(tenant, False, c.TenantReason.INVALID_SPEC, tenant.error, now))
    namespace = tenant.spec.namespace
    found = observed.namespace
    if found is not None and tenant.uid not in found.owner_uids:
        message = (
            f"namespace {namespace} already exists and does not belong to tenant {tenant.name}; "
            "an existing namespace is never adopted"
        )
        status = _status(tenant, False, c.TenantReason.NAMESPACE_CONFLICT, message, now)
        return TenantPlan((), status, seconds_after(now, CONFLICT_RETRY_SECONDS))
    if found is not None and found.terminating:
        message = f"namespace {namespace} is being deleted; it is created again once it is gone"
        status = _status(tenant, False, c.TenantReason.NAMESPACE_TERMINATING, message, now, observed)
        return TenantPlan((), status, seconds_after(now, WAIT_RETRY_SECONDS))
    if observed.apply_error:
        status = _status(tenant, False, c.TenantReason.APPLY_FAILED, observed.apply_error, now, observed)
        return TenantPlan((), status)

    ns_manifest = render.render_namespace(tenant)
    actions: list[TenantAction] = []
    held_until: list[datetime] = []

    def bring(manifest: dict[str, Any], summary: ChildSummary | QuotaSummary | NamespaceSummary | None) -> None:
        """Apply the manifest unless the object says it already; a repair of a held kind waits its turn."""
        if _current(summary, manifest):
            return
        repair = summary is not None and summary.spec_hash == _hash(manifest)
        until = observed.held.get(c.TenantChildKind(manifest["kind"]))
        if repair and until is not None:
            held_until.append(until)
        else:
            actions.append(ApplyObject(manifest, repair=repair))

    if found is None:
        actions.append(CreateObject(ns_manifest))
    else:
        bring(ns_manifest, found)
    quota = render.render_resource_quota(tenant)
    binding = render.render_policy_binding(tenant)
    bring(quota, observed.quota)
    bring(render.render_limit_range(tenant), observed.limit_range)
    bring(render.render_default_deny(tenant), observed.network_policy)
    bring(binding, observed.policy_binding)

    enforced = _current(observed.quota, quota) and quota_computed(quota["spec"]["hard"], observed.quota)
    role_binding = render.render_role_binding(tenant)
    granting = False
    if observed.role_binding is None:
        granting = enforced and _current(observed.policy_binding, binding) and observed.policy_enforced
        if granting:
            actions.append(ApplyObject(role_binding))
    else:
        bring(role_binding, observed.role_binding)
    if granting or observed.role_binding is not None or observed.exec_role_binding is not None:
        bring(render.render_exec_role_binding(tenant), observed.exec_role_binding)
    # With nothing to apply but held repairs, look again when the first may be made.
    first_held = min(held_until, default=None)

    if observed.role_binding is not None and found is not None:
        # Access is granted: changes being applied do not make the tenant unusable meanwhile.
        message = f"namespace {namespace} is ready; its subjects may manage Sandboxes there"
        if tenant.spec.exec_access:
            message += " and run commands in its pods"
        if actions:
            message += f"; applying changes to {', '.join(a.manifest['kind'] for a in actions)}"
        status = _status(tenant, True, c.TenantReason.PROVISIONED, message, now, observed)
        return TenantPlan(tuple(actions), status, seconds_after(now, WAIT_RETRY_SECONDS) if actions else first_held)
    if observed.role_binding is None and not enforced and found is not None:
        message = (
            f"waiting for the ResourceQuota {c.TENANT_QUOTA_NAME} in {namespace} to be computed before granting access"
        )
        reason = c.TenantReason.WAITING_FOR_QUOTA
    elif observed.role_binding is None and not observed.policy_enforced and found is not None:
        message = f"waiting for the API server to enforce the admission policy in {namespace} before granting access"
        reason = c.TenantReason.WAITING_FOR_POLICY
    else:
        message, reason = f"provisioning namespace {namespace}", c.TenantReason.PROVISIONING
    status = _status(tenant, False, reason, message, now, observed)
    return TenantPlan(tuple(actions), status, seconds_after(now, WAIT_RETRY_SECONDS))


def decide_tenant_safely(
    body: Mapping[str, Any], decide: Callable[[], TenantPlan], now: datetime
) -> tuple[TenantPlan, Exception | None]:
    """``decide()``; if it raises, a plan that only reports Ready=False/ReconcileError (naming the error's type, not
    its text, which may quote the spec), and the exception."""
    try:
        return decide(), None
    except Exception as error:  # a bug or an input nobody foresaw: report it, the shell retries with backoff
        old = read_status(TenantStatus, body)
        generation = (body.get("metadata") or {}).get("generation")
        message = f"the operator could not reconcile this tenant ({type(error).__name__}); retrying with backoff"
        condition = next_condition(
            old,
            c.TenantConditionType.READY,
            c.ConditionStatus.FALSE,
            c.TenantReason.RECONCILE_ERROR,
            message,
            generation if isinstance(generation, int) else 0,
            now,
        )
        status = old.model_copy(update={"conditions": [condition]})
        return TenantPlan((), status.to_dict()), error
