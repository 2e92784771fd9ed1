"""The pure decision of the operator: (Sandbox, observed children, now) -> actions, new status, events, next wake-up.

Rules, in order:
- A body that fails validation gets Ready=False/InvalidSpec naming the field; nothing is created or deleted.
- A Sandbox being deleted is left to the garbage collector (owner references) and reported as Terminating.
- At the expiry deadline, onExpiry Delete deletes the Sandbox (the garbage collector removes its children);
  onExpiry Suspend behaves like `suspended: true` with Expired=True until the deadline moves later.
- Suspended: the pod is deleted; the PVC, NetworkPolicy and Service stay.
- Otherwise children are created in the order PVC, NetworkPolicy, Service, Pod, so the pod never runs unfenced (a new
  Sandbox's NetworkPolicy and pod are created together where the namespace fence stands in for the order:
  sandbox.fence).
  A child is compared field by field with its rendering (k8s.manifest.differences), not by a stored annotation:
  a NetworkPolicy or Service that differs is replaced with the rendering; a pod whose spec hash differs (the Sandbox
  changed) or whose owned fields differ (someone changed its image, labels, resources...) is deleted (pods are
  immutable) and recreated once gone. A child changed again soon after a repair is held back (``Observed.held``):
  two writers fighting over a field cost a few writes, not a storm.
  A child's name taken by an object this Sandbox does not own stops everything after it (the pod never runs without
  its own NetworkPolicy). A vanished pod is recreated. A failed pod (exited, OOMKilled, evicted, image unavailable) is
  left alone and reported, never recreated in a loop: deleting it, suspending/resuming or changing the spec starts a
  new one.
- ``decide_safely`` turns any exception of ``decide`` into Ready=False/ReconcileError, still honouring the deadline
  the last status announced: no value a user can write stops the operator from acting on a Sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import InvalidSandbox, SandboxObject, SandboxStatus, literal_values, on_expiry_of
from sandbox_operator.api.schema import format_time, next_condition, optional_time, read_status
from sandbox_operator.k8s.manifest import (
    ChildSummary,
    Packed,
    differences,
    packed_owned_view,
    rendered_hash,
    rendered_view,
)
from sandbox_operator.k8s.redaction import redact
from sandbox_operator.sandbox import render
from sandbox_operator.sandbox.expiry import Deadline, activity_times, expiry_deadline, future_times, last_activity

# Kubelet and API messages are shortened before they reach status and events.
MAX_DETAIL_LENGTH = 512
# Fields of each child where anything beside what the operator renders changes meaning: a NetworkPolicy's rules and
# selector, the labels other NetworkPolicies select pods on, a Service's selector. Elsewhere additions are allowed.
EXACT_FIELDS: Mapping[c.ChildKind, frozenset[str]] = {
    c.ChildKind.POD: frozenset({"metadata.labels"}),
    c.ChildKind.NETWORK_POLICY: frozenset({"spec"}),
    c.ChildKind.SERVICE: frozenset({"spec.selector"}),
    c.ChildKind.PVC: frozenset(),
}
# The pool of a claimed pod whose pool label was removed (not a valid label value, so never equal to one).
LOST_POOL = "<removed>"
# How many differing fields a message names.
MAX_NAMED_FIELDS = 5
# How many comparisons of a rendering with a live child are remembered (``tampered_fields``).
COMPARISONS_KEPT = 512


def _shorten(text: str, limit: int = MAX_DETAIL_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class PodSummary:
    """What the decision needs to know about the sandbox pod as the API server has it."""

    name: str
    phase: str = "Pending"
    ready: bool = False
    pod_ip: str | None = None
    started_at: datetime | None = None
    deletion_timestamp: datetime | None = None
    spec_hash: str | None = None
    reason: str | None = None
    message: str | None = None
    unschedulable_message: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    terminated_reason: str | None = None
    exit_code: int | None = None
    # The fields the operator owns, as the API server has them (k8s.manifest.owned_view); None: not known.
    owned: Mapping[str, Any] | None = None
    # The pool it was claimed from (its pool label), for a warm pod a Sandbox took over.
    pool: str | None = None

    @classmethod
    def from_body(cls, pod: Mapping[str, Any]) -> PodSummary:
        """Summarise a Pod body (as returned by the API server)."""
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        conditions = {cond.get("type"): cond for cond in status.get("conditions") or []}
        scheduled = conditions.get("PodScheduled") or {}
        container: Mapping[str, Any] = next(
            (cs for cs in status.get("containerStatuses") or [] if cs.get("name") == c.CONTAINER_NAME), {}
        )
        state = container.get("state") or {}
        waiting, running, terminated = state.get("waiting") or {}, state.get("running"), state.get("terminated")
        started = (running or {}).get("startedAt") or (terminated or {}).get("startedAt")
        return cls(
            name=str(meta.get("name", "")),
            phase=str(status.get("phase") or "Pending"),
            ready=(conditions.get("Ready") or {}).get("status") == "True",
            pod_ip=status.get("podIP") or None,
            started_at=optional_time(started),
            deletion_timestamp=optional_time(meta.get("deletionTimestamp")),
            spec_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
            reason=status.get("reason"),
            message=status.get("message"),
            unschedulable_message=scheduled.get("message") if scheduled.get("status") == "False" else None,
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message"),
            terminated_reason=(terminated or {}).get("reason"),
            exit_code=_int_or_none((terminated or {}).get("exitCode")),
            owned=packed_owned_view(_without_binding(pod)),
            pool=(meta.get("labels") or {}).get(c.LABEL_POOL) or None,
        )


def _without_binding(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod without ``spec.nodeName``: the scheduler's binding sets it, the operator never renders it (so no
    comparison reads it), and with it in the summary every pod's scheduling woke its Sandbox for a pass that found
    nothing to do."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping) or "nodeName" not in spec:
        return pod
    return {**pod, "spec": {key: value for key, value in spec.items() if key != "nodeName"}}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Observed:
    """The children as the API server has them (None: absent), why the last create was refused, if it was, and what
    the shell remembers: when it first saw each future activity time, and until when repairs of a kind are held."""

    pod: PodSummary | None = None
    network_policy: ChildSummary | None = None
    service: ChildSummary | None = None
    pvc: ChildSummary | None = None
    quota_error: str | None = None
    create_error: str | None = None
    name_conflict: str | None = None
    first_seen: Mapping[datetime, datetime] = field(default_factory=dict)
    held: Mapping[c.ChildKind, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateChild:
    """Create this manifest (an existing object of the same name counts as done)."""

    manifest: dict[str, Any]


@dataclass(frozen=True)
class UpdateChild:
    """Replace a mutable child (NetworkPolicy, Service) with its rendering; ``repair`` when it was tampered with
    (the Sandbox did not change)."""

    manifest: dict[str, Any]
    repair: bool = False


@dataclass(frozen=True)
class DeleteChild:
    """Delete a child by kind and name (absent counts as done); ``repair`` when it was tampered with."""

    kind: c.ChildKind
    name: str
    repair: bool = False


@dataclass(frozen=True)
class DeleteSandbox:
    """Delete the Sandbox itself; the garbage collector removes its children."""


Action = CreateChild | UpdateChild | DeleteChild | DeleteSandbox


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the Sandbox."""

    type: c.EventType
    reason: c.EventReason
    message: str


@dataclass(frozen=True)
class Plan:
    """What to do: actions in order, the complete new status, events, the expiry reason and when to look again."""

    actions: tuple[Action, ...]
    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    expiry_reason: c.Reason | None = None
    requeue_at: datetime | None = None
    # Activity times beyond now (plus skew): the shell remembers when it first saw each (Observed.first_seen).
    future_activity: frozenset[datetime] = frozenset()


@dataclass(frozen=True)
class _Ready:
    status: c.ConditionStatus
    reason: c.Reason
    message: str
    phase: c.SandboxPhase


def _not_ready(reason: c.Reason, message: str, phase: c.SandboxPhase = c.SandboxPhase.PENDING) -> _Ready:
    return _Ready(c.ConditionStatus.FALSE, reason, _shorten(message), phase)


def _failed(reason: c.Reason, message: str) -> _Ready:
    return _not_ready(reason, message, c.SandboxPhase.FAILED)


def pod_readiness(sandbox: SandboxObject, pod: PodSummary) -> _Ready:
    """Read the Ready condition and phase off the pod, failures first."""
    if pod.deletion_timestamp is not None:
        return _not_ready(c.Reason.POD_TERMINATING, f"pod {pod.name} is being deleted")
    if pod.terminated_reason == c.OOM_KILLED:
        return _failed(
            c.Reason.OOM_KILLED,
            f"container was killed for exceeding its memory limit ({sandbox.spec.resources.memory})",
        )
    if pod.exit_code is not None:
        # The container's own termination message is written by untrusted code: only the exit code is reported.
        return _failed(c.Reason.CONTAINER_EXITED, f"container exited with code {pod.exit_code}")
    if pod.phase in ("Failed", "Succeeded"):
        detail = ": ".join(part for part in (pod.reason, pod.message) if part)
        return _failed(c.Reason.POD_FAILED, f"pod {pod.name} {pod.phase.lower()}" + (f": {detail}" if detail else ""))
    if pod.waiting_reason in c.IMAGE_WAITING_REASONS:
        return _failed(
            c.Reason.IMAGE_UNAVAILABLE,
            f"image {sandbox.spec.image} is unavailable ({pod.waiting_reason}): {pod.waiting_message or ''}".rstrip(
                ": "
            ),
        )
    if pod.waiting_reason in c.CONFIG_WAITING_REASONS:
        return _failed(
            c.Reason.CONTAINER_CONFIG_ERROR,
            f"container cannot start ({pod.waiting_reason}): {pod.waiting_message or ''}".rstrip(": "),
        )
    if pod.phase == "Running" and pod.ready:
        return _Ready(c.ConditionStatus.TRUE, c.Reason.POD_READY, f"pod {pod.name} is ready", c.SandboxPhase.READY)
    if pod.phase == "Running":
        return _not_ready(c.Reason.POD_NOT_READY, f"pod {pod.name} is running but not ready")
    if pod.waiting_reason in ("ContainerCreating", "PodInitializing"):
        return _not_ready(c.Reason.CONTAINER_CREATING, f"pod {pod.name} is starting its container")
    why = pod.unschedulable_message or pod.waiting_reason
    return _not_ready(c.Reason.POD_PENDING, f"pod {pod.name} is pending" + (f": {why}" if why else ""))


def _is_true(status: SandboxStatus, kind: c.ConditionType) -> bool:
    condition = status.condition(kind)
    return condition is not None and condition.status == c.ConditionStatus.TRUE


def _events(old: SandboxStatus, new: SandboxStatus, created: bool) -> tuple[Event, ...]:
    """Events for the transitions between two statuses; none when nothing changed."""
    events = []
    ready, old_ready = new.condition(c.ConditionType.READY), old.condition(c.ConditionType.READY)
    if created:
        events.append(Event(c.EventType.NORMAL, c.EventReason.CREATED, "created the sandbox's children"))
    if ready and ready.status == c.ConditionStatus.TRUE and not _is_true(old, c.ConditionType.READY):
        events.append(Event(c.EventType.NORMAL, c.EventReason.READY, ready.message))
    if (
        ready
        and new.phase is c.SandboxPhase.FAILED
        and (old.phase is not c.SandboxPhase.FAILED or old_ready is None or old_ready.reason != ready.reason)
    ):
        events.append(Event(c.EventType.WARNING, c.EventReason.FAILED, f"{ready.reason}: {ready.message}"))
    expired = new.condition(c.ConditionType.EXPIRED)
    if expired and expired.status == c.ConditionStatus.TRUE and not _is_true(old, c.ConditionType.EXPIRED):
        events.append(Event(c.EventType.NORMAL, c.EventReason.EXPIRED, expired.message))
    suspended = new.condition(c.ConditionType.SUSPENDED)
    if suspended and suspended.status == c.ConditionStatus.TRUE and not _is_true(old, c.ConditionType.SUSPENDED):
        events.append(Event(c.EventType.NORMAL, c.EventReason.SUSPENDED, suspended.message))
    if suspended and suspended.status == c.ConditionStatus.FALSE and _is_true(old, c.ConditionType.SUSPENDED):
        events.append(Event(c.EventType.NORMAL, c.EventReason.RESUMED, "the sandbox was resumed"))
    return tuple(events)


# Recent comparisons: (kind, the rendering's spec hash, its top-level keys, the live child's packed owned view) ->
# the differing fields. A Sandbox's pod is compared on each of its events (scheduled, started, Ready) and its
# NetworkPolicy on every pass, mostly with the same two inputs as the pass before: each comparison was the largest
# part of a pass. The key holds no parsed manifest (functools.lru_cache would keep one per entry, 10-20 KiB each).
_COMPARED: dict[tuple[c.ChildKind, str, tuple[str, ...], bytes], list[str]] = {}


def tampered_fields(kind: c.ChildKind, desired: Mapping[str, Any], owned: Mapping[str, Any] | None) -> list[str]:
    """The owned fields of a live child (``owned``: its k8s.manifest.owned_view) that differ from its rendering."""
    if owned is None:
        return []
    if not isinstance(owned, Packed):
        return differences(rendered_view(desired), owned, EXACT_FIELDS[kind])
    # A rendering is named by its spec hash (and, for the labels-and-owner-only comparison, its keys): the same
    # hash that already tells a changed spec from an unchanged one.
    key = (kind, rendered_hash(desired), tuple(desired), owned.data)
    fields = _COMPARED.pop(key, None)
    if fields is None:
        fields = differences(rendered_view(desired), owned, EXACT_FIELDS[kind])
        while len(_COMPARED) >= COMPARISONS_KEPT:
            del _COMPARED[next(iter(_COMPARED))]  # the least recently used
    _COMPARED[key] = fields
    return list(fields)


def as_rendered(kind: c.ChildKind, desired: Mapping[str, Any], live: ChildSummary | None) -> bool:
    """Whether a live child (its summary) is its rendering: made from it, and nothing it owns changed since."""
    return live is not None and live.spec_hash == rendered_hash(desired) and not tampered_fields(
        kind, desired, live.owned
    )


def _tamper_event(kind: c.ChildKind, name: str, fields: list[str], remedy: str) -> Event:
    named = ", ".join(fields[:MAX_NAMED_FIELDS]) + (", ..." if len(fields) > MAX_NAMED_FIELDS else "")
    return Event(c.EventType.WARNING, c.EventReason.TAMPERED, f"{kind} {name} was changed ({named}): {remedy}")


def _sync_child(
    kind: c.ChildKind,
    desired: dict[str, Any] | None,
    observed: ChildSummary | None,
    held: Mapping[c.ChildKind, datetime],
    *,
    mutable: bool,
) -> tuple[list[Action], list[Event]]:
    """Create a missing child, replace a changed or tampered mutable one, delete one no longer wanted."""
    if desired is None:
        return ([DeleteChild(kind, observed.name)] if observed is not None else []), []
    if observed is None:
        return [CreateChild(desired)], []
    if not mutable:
        return [], []
    if observed.spec_hash != rendered_hash(desired):
        return [UpdateChild(desired)], []
    fields = tampered_fields(kind, desired, observed.owned)
    if not fields or kind in held:
        return [], []
    return [UpdateChild(desired, repair=True)], [_tamper_event(kind, observed.name, fields, "restored")]


def _decide_invalid(sandbox: InvalidSandbox, observed: Observed, now: datetime) -> Plan:
    old = sandbox.status
    if sandbox.reason is c.Reason.TEMPLATE_NOT_FOUND and old.expires_at is not None:
        # Started from a template since deleted: its pod keeps running, and the deadline it announced still holds
        # (deleted then, or with its own onExpiry Suspend, its pod deleted).
        plan = _fallback_plan_for(old, sandbox.generation, c.Reason.TEMPLATE_NOT_FOUND,
                                  f"{sandbox.error}; the running pod is kept", sandbox.on_expiry, now)
        pod = observed.pod
        if now >= old.expires_at and not plan.actions and pod is not None and pod.deletion_timestamp is None:
            plan = replace(plan, actions=(DeleteChild(c.ChildKind.POD, pod.name),))
        return plan
    ready = next_condition(
        old, c.ConditionType.READY, c.ConditionStatus.FALSE, sandbox.reason, sandbox.error, sandbox.generation, now,
    )
    others = [cond for cond in old.conditions if cond.type != c.ConditionType.READY]
    waiting = sandbox.reason is c.Reason.TEMPLATE_NOT_FOUND
    new = old.model_copy(
        update={
            "phase": c.SandboxPhase.PENDING if waiting else c.SandboxPhase.FAILED,
            "conditions": [ready, *others],
            "observed_generation": sandbox.generation,
            "message": ready.message,
        }
    )
    return Plan(actions=(), status=new.to_dict(), events=_events(old, new, created=False))


def decide(
    sandbox: SandboxObject | InvalidSandbox, observed: Observed, now: datetime,
    rendering: render.Rendering | None = None,
) -> Plan:
    """Decide the actions, complete status, events and next wake-up for one Sandbox; pure and deterministic.
    ``rendering``: ``render.render_children(sandbox)``, when the caller has it already."""
    if isinstance(sandbox, InvalidSandbox):
        return _decide_invalid(sandbox, observed, now)
    rendering = rendering or render.render_children(sandbox)
    secrets = secret_values(sandbox)
    observed = replace(  # refusals may quote the spec: redacted before any message is made of them
        observed,
        quota_error=redact(observed.quota_error, secrets) if observed.quota_error else None,
        create_error=redact(observed.create_error, secrets) if observed.create_error else None,
        name_conflict=redact(observed.name_conflict, secrets) if observed.name_conflict else None,
    )
    spec, old, pod = sandbox.spec, sandbox.status, observed.pod
    started_at = (pod.started_at if pod else None) or old.started_at
    deadline: Deadline | None = expiry_deadline(sandbox, started_at, now, observed.first_seen)
    expired = deadline is not None and now >= deadline.at
    expired_reason = deadline.reason if deadline is not None and expired else None
    suspend_on_expiry = expired and spec.lifetime.on_expiry is c.OnExpiry.SUSPEND
    suspended = spec.suspended or suspend_on_expiry

    # A pod named otherwise than its own was claimed from a pool. One that lost its pool label left the fence: the
    # rendering names a pool no label can hold, so its labels differ and it is replaced as tampered.
    claimed = pod is not None and pod.name != render.pod_name(sandbox)
    pod_manifest = rendering.pod
    if pod is not None and claimed:
        pod_manifest = render.as_claimed(pod_manifest, render.Claimed(pod.name, pod.pool or LOST_POOL))
    service_manifest = rendering.service
    actions: list[Action] = []
    events: list[Event] = []
    if sandbox.deletion_timestamp is not None:
        ready = _not_ready(c.Reason.DELETING, "the sandbox is being deleted", c.SandboxPhase.TERMINATING)
    elif deadline is not None and expired and not suspend_on_expiry:
        actions.append(DeleteSandbox())
        ready = _not_ready(deadline.reason, f"expired: {deadline.message}; deleting", c.SandboxPhase.EXPIRED)
    else:
        for kind, manifest, child, mutable in (
            (c.ChildKind.PVC, rendering.pvc, observed.pvc, False),
            (c.ChildKind.NETWORK_POLICY, rendering.network_policy, observed.network_policy, True),
            (c.ChildKind.SERVICE, service_manifest, observed.service, True),
        ):
            child_actions, child_events = _sync_child(kind, manifest, child, observed.held, mutable=mutable)
            actions += child_actions
            events += child_events
        pod_actions, pod_events, ready = _pod_plan(
            sandbox, observed, pod_manifest, suspended, deadline if expired else None
        )
        actions += pod_actions
        events += pod_events

    if suspend_on_expiry and deadline is not None:
        suspension = (c.ConditionStatus.TRUE, deadline.reason, "suspended when the lifetime ran out")
    elif spec.suspended:
        suspension = (c.ConditionStatus.TRUE, c.Reason.USER_REQUESTED, "suspended by spec.suspended")
    else:
        suspension = (c.ConditionStatus.FALSE, c.Reason.NOT_SUSPENDED, "")
    if deadline is not None and expired:
        expiry = (c.ConditionStatus.TRUE, deadline.reason, deadline.message)
    else:
        expiry = (c.ConditionStatus.FALSE, c.Reason.NOT_EXPIRED, "")
    message = _shorten(redact(ready.message, secrets), c.MAX_MESSAGE_LENGTH)
    wanted = [
        (c.ConditionType.READY, ready.status, ready.reason, message),
        (c.ConditionType.SUSPENDED, *suspension),
        (c.ConditionType.EXPIRED, *expiry),
    ]
    generation = sandbox.generation
    conditions = [
        next_condition(old, kind, status, reason, text, generation, now) for kind, status, reason, text in wanted
    ]

    pod_exists = pod is not None and pod.deletion_timestamp is None
    launch: c.Launch | None
    if pod_exists and pod:
        launch = c.Launch.WARM if claimed else c.Launch.COLD
        current_recipe = pod.spec_hash == rendered_hash(pod_manifest)
        template_hash = (render.recipe_hash(pod_manifest["spec"]) if current_recipe else old.template_hash) \
            if spec.template_ref is not None else None
    else:
        launch, template_hash = old.launch, old.template_hash if spec.template_ref is not None else None
    new = SandboxStatus(
        phase=ready.phase,
        conditions=conditions,
        observed_generation=generation,
        pod_name=pod.name if pod_exists and pod else None,
        pod_ip=pod.pod_ip if pod_exists and pod else None,
        service_name=render.service_name(sandbox) if service_manifest is not None else None,
        started_at=started_at,
        expires_at=deadline.at if deadline else None,
        last_activity_at=last_activity(sandbox, started_at, now, observed.first_seen),
        message=message,
        launch=launch,
        template_hash=template_hash,
    )
    created = not old.conditions and any(isinstance(action, CreateChild) for action in actions)
    wake = [*observed.held.values(), *([deadline.at] if deadline is not None and not expired else [])]
    return Plan(
        actions=tuple(actions),
        status=new.to_dict(),
        events=(*events, *_events(old, new, created)),
        expiry_reason=expired_reason,
        requeue_at=min(wake, default=None),
        future_activity=frozenset(future_times(activity_times(sandbox, started_at), now)),
    )


def secret_values(sandbox: SandboxObject) -> list[str]:
    """The literal env values of the Sandbox: no message the operator writes may repeat one."""
    return literal_values(sandbox.spec)


def _pod_plan(
    sandbox: SandboxObject,
    observed: Observed,
    manifest: dict[str, Any],
    suspended: bool,
    expired: Deadline | None,
) -> tuple[list[Action], list[Event], _Ready]:
    """The pod's action (create, delete or none), events, and the Ready condition that follows from it."""
    pod, name = observed.pod, render.pod_name(sandbox)
    if suspended:
        actions: list[Action] = []
        if pod is not None and pod.deletion_timestamp is None:
            actions.append(DeleteChild(c.ChildKind.POD, pod.name))
        if expired is not None:
            ready = _not_ready(expired.reason, f"expired: {expired.message}; suspended", c.SandboxPhase.EXPIRED)
            return actions, [], ready
        return actions, [], _not_ready(c.Reason.SUSPENDED, "suspended: no pod runs", c.SandboxPhase.SUSPENDED)
    if observed.name_conflict:
        # Whatever holds a child's name is not this Sandbox's: no pod runs without its own NetworkPolicy.
        stop: list[Action] = [DeleteChild(c.ChildKind.POD, pod.name)] if pod and not pod.deletion_timestamp else []
        return stop, [], _failed(c.Reason.NAME_CONFLICT, observed.name_conflict)
    if pod is not None and pod.deletion_timestamp is None and observed.network_policy is None and (
        observed.quota_error or observed.create_error
    ):
        # Its own NetworkPolicy was refused (after it was created together with the pod behind the namespace fence,
        # or deleted since): no pod runs on the fence alone, or on nothing.
        gone = f"pod {pod.name} is deleted: no pod runs without its own NetworkPolicy"
        if observed.quota_error:
            ready = _not_ready(c.Reason.QUOTA_EXCEEDED, f"{observed.quota_error}; {gone}")
        else:
            ready = _failed(c.Reason.CREATE_REJECTED, f"the API server refused: {observed.create_error}; {gone}")
        return [DeleteChild(c.ChildKind.POD, pod.name)], [], ready
    if pod is None:
        if observed.quota_error:
            return [], [], _not_ready(c.Reason.QUOTA_EXCEEDED, f"cannot create pod {name}: {observed.quota_error}")
        if observed.create_error:
            message = f"the API server refused pod {name}: {observed.create_error}"
            return [], [], _failed(c.Reason.CREATE_REJECTED, message)
        return [CreateChild(manifest)], [], _not_ready(c.Reason.POD_MISSING, f"creating pod {name}")
    if pod.deletion_timestamp is not None:
        return [], [], pod_readiness(sandbox, pod)
    if pod.spec_hash != rendered_hash(manifest):
        if sandbox.spec.template_ref is None:
            changed = _not_ready(c.Reason.SPEC_CHANGED, f"the spec changed: replacing pod {pod.name}")
            return [DeleteChild(c.ChildKind.POD, pod.name)], [], changed
        # Made from an earlier version of the template: a running sandbox keeps what it started with. Only what
        # other NetworkPolicies and the garbage collector go by (labels, owner) is still held to the rendering.
        manifest = {"metadata": manifest["metadata"]}
    fields = tampered_fields(c.ChildKind.POD, manifest, pod.owned)
    if not fields:
        return [], [], pod_readiness(sandbox, pod)
    named = ", ".join(fields[:MAX_NAMED_FIELDS])
    held = observed.held.get(c.ChildKind.POD)
    if held is not None:
        message = (
            f"pod {pod.name} was changed ({named}) again soon after it was replaced: another writer is fighting the "
            f"operator; replacing it at {format_time(held)}"
        )
        return [], [], _not_ready(c.Reason.POD_TAMPERED, message)
    event = _tamper_event(c.ChildKind.POD, pod.name, fields, "deleted; a new pod replaces it")
    tampered = _not_ready(c.Reason.POD_TAMPERED, f"pod {pod.name} was changed ({named}): replacing it")
    return [DeleteChild(c.ChildKind.POD, pod.name, repair=True)], [event], tampered


def decide_safely(
    load: Callable[[], SandboxObject | InvalidSandbox], body: Mapping[str, Any], observed: Observed, now: datetime,
    rendering: Callable[[SandboxObject], render.Rendering] = render.render_children,
) -> tuple[Plan, BaseException | None]:
    """``decide`` on the loaded Sandbox and its ``rendering``; if loading, rendering or deciding raises, a plan that
    reports ReconcileError and still acts on the deadline the last status announced (deleting the Sandbox past it),
    and the exception."""
    try:
        sandbox = load()
        return decide(sandbox, observed, now, rendering(sandbox) if isinstance(sandbox, SandboxObject) else None), None
    except Exception as error:  # a bug or an input nobody foresaw: report it and keep the deadline
        return _fallback_plan(body, error, now), error


def _fallback_plan(body: Mapping[str, Any], error: Exception, now: datetime) -> Plan:
    """Ready=False/ReconcileError (with the error's type only: its text may quote the spec) and, past the deadline
    the stored status announced, the Sandbox's deletion; suspension on expiry is left to a pass that can decide."""
    old = read_status(SandboxStatus, body)
    generation = _int_or_none((body.get("metadata") or {}).get("generation")) or 0
    message = f"the operator could not reconcile this sandbox ({type(error).__name__}); retrying with backoff"
    return _fallback_plan_for(old, generation, c.Reason.RECONCILE_ERROR, message, on_expiry_of(body), now)


def _fallback_plan_for(
    old: SandboxStatus, generation: int, reason: c.Reason, message: str, on_expiry: Any, now: datetime
) -> Plan:
    """Ready=False with ``reason`` and, past the deadline the stored status announced, the Sandbox's deletion (unless
    ``on_expiry`` says Suspend); a Warning Event when the reason is new."""
    deadline = old.expires_at
    delete = deadline is not None and now >= deadline and on_expiry != c.OnExpiry.SUSPEND
    if delete:
        message += f"; deleting it: it expired at {format_time(deadline)}"  # type: ignore[arg-type]
    ready = next_condition(old, c.ConditionType.READY, c.ConditionStatus.FALSE, reason, message, generation, now)
    others = [cond for cond in old.conditions if cond.type != c.ConditionType.READY]
    new = old.model_copy(update={"conditions": [ready, *others], "message": message})
    previous = old.condition(c.ConditionType.READY)
    events = (
        ()
        if previous is not None and previous.reason == reason
        else (Event(c.EventType.WARNING, c.EventReason(reason.value), message),)
    )
    return Plan(
        actions=(DeleteSandbox(),) if delete else (),
        status=new.to_dict(),
        events=events,
        # A deadline already past with Suspend is not a wake-up (it would fire at once, forever).
        requeue_at=deadline if deadline is not None and now < deadline else None,
    )
