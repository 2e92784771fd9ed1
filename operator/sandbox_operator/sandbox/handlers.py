"""Wiring: watch Sandboxes and their children, call the pure ``sandbox.decide.decide``, apply its plan.

Sandboxes and their children come from the operator's own streams (k8s.watch: Kopf's list+watch, kept current on a
standby too, without Kopf's per-object workers); Kopf runs the start-up, the peering and the Event poster. No
finalizers are used, so deleting a Sandbox never waits for the operator; owner references let the garbage collector
remove the children. Per-sandbox state lives in ``WATCHED``, dropped with the object's DELETED event (or a
re-listing without it): nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import (
    InvalidSandbox,
    OperatorDefaults,
    PodRecipe,
    SandboxObject,
    SandboxStatus,
    load_sandbox,
)
from sandbox_operator.api.schema import optional_time, seconds_after, status_changed
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.cache import Store
from sandbox_operator.k8s.client import KubeError
from sandbox_operator.k8s.loop import (
    ObjectState,
    PassResult,
    forget_unlisted,
    reconcile,
    record_repair,
    resource_version,
    track,
)
from sandbox_operator.k8s.manifest import ChildSummary, owned_by
from sandbox_operator.k8s.watch import Listener
from sandbox_operator.operator import Runtime
from sandbox_operator.pool.warm import WARM, claim
from sandbox_operator.sandbox import fence
from sandbox_operator.sandbox.decide import (
    Action,
    CreateChild,
    DeleteChild,
    DeleteSandbox,
    Event,
    Observed,
    Plan,
    PodSummary,
    UpdateChild,
    decide_safely,
    secret_values,
)
from sandbox_operator.sandbox.defaults import sandbox_defaults
from sandbox_operator.sandbox.render import Rendering, owning_sandbox, render_children
from sandbox_operator.tenant.handlers import LIFETIME_LISTENERS, TENANT_LIFETIMES

logger = logging.getLogger(__name__)

QUOTA_RETRY_SECONDS = 15.0


@dataclass
class Loaded:
    """A Sandbox as one pass loaded it, from its body at ``version`` with these defaults and template recipe, and its
    children as rendered for it (when it loaded valid)."""

    version: int
    defaults: OperatorDefaults
    recipe: PodRecipe | None
    sandbox: SandboxObject | InvalidSandbox
    rendering: Rendering | None = None

    def holds(self, version: int, defaults: OperatorDefaults, recipe: PodRecipe | None) -> bool:
        """Whether it was loaded from these inputs: loading them again would give the same."""
        return (self.version, self.defaults, self.recipe) == (version, defaults, recipe)


@dataclass
class SandboxState(ObjectState):
    """What one Sandbox's reconciliations share; kept in ``WATCHED.sandboxes`` and dropped with the Sandbox."""

    phase: str | None = None
    # Children we created that the watch has not shown yet: without this, a reconcile in that window
    # would create them again (a harmless but wasted 409).
    # (summary, when, read): ``read`` when it came from a GET of an object the watch may never show (its managed-by
    # label removed), so the pass that used it looks again soon (``READ_RECHECK_SECONDS``).
    expected: dict[str, tuple[PodSummary | ChildSummary, float, bool]] = field(default_factory=dict)
    # Activity times beyond now (plus skew) and when they were first seen: each counts as activity at that moment.
    first_seen: dict[datetime, datetime] = field(default_factory=dict)
    # When an in-progress status began to wait for the status that replaces it (``_settling``).
    settling_since: float | None = None
    # This pass found a child it was about to create (``_create``); it deleted a child the watch does not show.
    found: bool = False
    unwatched: bool = False
    # Kinds of child this Sandbox's pass is creating now, and the events of them that came before the create's answer
    # (``_own_echo``): the answer decides whether they were only its echo.
    creating: set[c.ChildKind] = field(default_factory=set)
    early_echoes: dict[c.ChildKind, Any] = field(default_factory=dict)
    # An early echo matched what its create returned: the pass's end wakes the Sandbox unless its status settles.
    echo_deferred: bool = False
    # When the running (or last) pass began (monotonic): what it observed was known by then.
    pass_started: float = 0.0
    # First seen in a listing, or while this replica stood by (another may have served it), not as a new object.
    listed: bool = False
    # Never served (no status, no template), first seen before every kind was listed: until they are, its passes do
    # not wait for that (each create reads first, or reads what a 409 says is there), and one more pass follows once
    # they are (``LISTED``). A templated one waits: its claim needs the pools' warm pods listed.
    unserved: bool = False
    # Kept from a pass that created a child for the next pass, which mostly decides on the same body when that child
    # is Ready: loading and rendering were a third of a pass. Dropped by any pass that creates nothing, so only the
    # Sandboxes being started hold one.
    loaded: Loaded | None = None


# --- what the operator knows of each Sandbox's children, keyed by (namespace, sandbox name) ----------------------


def is_sandbox_child(body: Mapping[str, Any]) -> bool:
    """The object is a Sandbox's child, found by its owner reference or, failing that, its labels (a
    child whose labels were removed is still found, and put right)."""
    return owning_sandbox(body) is not None


def _body_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    owner = owning_sandbox(body)
    return None if owner is None else (str(body["metadata"].get("namespace") or ""), owner)


@dataclass
class Watched:
    """The Sandboxes' shared states (so a child's event can wake its Sandbox) and each kind of child as last seen;
    one per operator process, like Kopf's own handler registry. Entries go with their objects' DELETED events."""

    sandboxes: dict[tuple[str, str], SandboxState] = field(default_factory=dict)
    children: dict[c.ChildKind, Store[tuple[str, str], Any]] = field(
        default_factory=lambda: {kind: Store() for kind in c.ChildKind}
    )


WATCHED = Watched()


# The process's runtime, for the wake-ups of the children's streams (which come without a Kopf memo).
RUNTIME: list[Runtime] = []


@kopf.on.startup()
async def remember_runtime(memo: Any, **_: Any) -> None:
    """Keep the runtime for the children's streams (k8s.watch), which run outside Kopf's handlers. Runs after
    ``operator.start`` (registered first), which made the runtime and starts the streams."""
    RUNTIME[:] = [memo["runtime"]]


def _wake(key: tuple[str, str], trigger: str) -> None:
    """Reconcile the Sandbox ``key`` soon, if it is known (a child's event, or its going)."""
    state = WATCHED.sandboxes.get(key)
    if state is None or not RUNTIME:
        return
    if watch.put_off():  # standing by: no task per event; when this replica resumes, every Sandbox gets a pass
        return
    watch.spawn(reconcile_sandbox(state, RUNTIME[0], key, trigger=trigger))


def _child_listener(kind: c.ChildKind, trigger: str) -> Listener:
    """What a Sandbox child's stream does with each event: keep its summary, wake its Sandbox when that changed."""
    store = WATCHED.children[kind]

    def changed(event_type: str | None, body: Mapping[str, Any]) -> None:
        key, uid = _body_key(body), str(body["metadata"].get("uid", ""))
        if key is None:
            return
        if not store.record(event_type, key, uid, lambda: _summary(kind, body)):
            metrics.RECONCILES_SKIPPED.labels(kind).inc()  # nothing the decision reads has changed
        elif _own_echo(key, kind, event_type, store.get(key)):
            metrics.RECONCILES_SKIPPED.labels(kind).inc()
        elif event_type is not None or watch.listed():
            _wake(key, trigger)
        # else: the start-up listing; every Sandbox gets a pass once all is listed, which sees this child: waking
        # it now would only queue two more passes per Sandbox behind the gate (20,000 at 10,000 Sandboxes).

    def relisted(namespace: str | None, uids: set[str]) -> None:
        for key in store.retain(uids, lambda key: namespace is None or key[0] == namespace):
            _wake(key, "relisted")

    return Listener(wants=is_sandbox_child, changed=changed, relisted=relisted)


def _own_echo(key: tuple[str, str], kind: c.ChildKind, event_type: str | None, seen: Any) -> bool:
    """Whether the event may go without a pass: it shows the child exactly as the Sandbox's own create returned it (or
    its read found it), while the Sandbox's in-progress status waits (``_settling``). A pass is due by then anyway,
    and the one this event would start could only find the status one progress step on (pod missing -> pod pending),
    which waits too. Half the passes of a new Sandbox were these echoes: its pod's, its NetworkPolicy's.

    An event that comes while the create is still waiting for its answer is held for it (``_created``); one that
    comes while the pass that made the child is still running, for that pass's end (``_settle_echoes``)."""
    state = WATCHED.sandboxes.get(key)
    if event_type == "DELETED" or seen is None or state is None:
        return False
    if kind in state.creating:
        state.early_echoes[kind] = seen
        return True
    expected = state.expected.get(kind)
    if expected is None or expected[0] != seen:
        return False
    if state.lock.locked():
        # The pass running now decides with this child as its event shows it when it was known before the pass
        # began; otherwise (the pass made it) the pass's end decides whether another pass must look (_settle_echoes).
        if expected[1] >= state.pass_started:
            state.echo_deferred = True
        return True
    return state.settling_since is not None and state.wakeup is not None


def _created(state: SandboxState, kind: c.ChildKind) -> None:
    """The create of a child answered (or failed): an event of it that came before is settled now. Only the echo of
    this create waits for the pass's end (``_settle_echoes``); anything else wakes the Sandbox as its event would."""
    state.creating.discard(kind)
    early = state.early_echoes.pop(kind, None)
    if early is None:
        return
    expected = state.expected.get(kind)
    if expected is not None and expected[0] == early:
        state.echo_deferred = True
    else:
        state.dirty = True


def _settle_echoes(state: SandboxState) -> None:
    """At a pass's end: the echoes held for it need a pass after all when its status does not wait."""
    if state.echo_deferred and state.settling_since is None:
        state.dirty = True
    state.echo_deferred = False


for _kind, _stream, _trigger in (
    (c.ChildKind.POD, watch.PODS, "pod"),
    (c.ChildKind.NETWORK_POLICY, watch.NETWORK_POLICIES, "networkpolicy"),
    (c.ChildKind.SERVICE, watch.SERVICES, "service"),
    (c.ChildKind.PVC, watch.PVCS, "pvc"),
):
    watch.FOLLOWED.listen(_stream, _child_listener(_kind, _trigger))

# A Sandbox created while no replica served it (or during a start) is served once the Sandboxes and pods are listed:
# its first pass reads each child before creating it, and its Ready comes with its pod's events. Its NetworkPolicy,
# Service and claim are only confirmed, by passes that wait for every listing anyway. Listed after the others, they
# leave the event loop to the listings it waits for: next to 10,000 Sandboxes (a 15 MB listing of NetworkPolicies), it
# was Ready about half a second sooner.
watch.FOLLOWED.list_later(watch.NETWORK_POLICIES, watch.SERVICES, watch.PVCS)


def _tenant_rules_changed(namespace: str) -> None:
    """A Tenant's lifetime rules changed (a lower maximum, another default TTL): its Sandboxes look again, and their
    deadlines follow at once, not at their next event."""
    for key in [key for key in WATCHED.sandboxes if key[0] == namespace]:
        _wake(key, "tenant")


LIFETIME_LISTENERS.append(_tenant_rules_changed)


EXPECTATION_SECONDS = 30.0
# A child known only from a read (the watch does not show it, e.g. its label was removed) is looked at again this
# often: its deletion would never come as an event.
READ_RECHECK_SECONDS = 1.0


def _child(state: SandboxState, key: tuple[str, str], kind: c.ChildKind) -> Any:
    """The child as the watch has it, else as we just created (or found) it (for a short while)."""
    seen = WATCHED.children[kind].get(key)
    expected = state.expected.get(kind)
    if seen is not None or expected is None or time.monotonic() - expected[1] > EXPECTATION_SECONDS:
        state.expected.pop(kind, None)
        return seen
    return expected[0]


def _summary(kind: c.ChildKind, body: Mapping[str, Any]) -> PodSummary | ChildSummary:
    return PodSummary.from_body(body) if kind is c.ChildKind.POD else ChildSummary.from_body(body)


def _expect(state: SandboxState, kind: c.ChildKind, body: Mapping[str, Any], *, read: bool = False) -> None:
    state.expected[kind] = (_summary(kind, body), time.monotonic(), read)


def _observe(state: SandboxState, key: tuple[str, str], now: datetime) -> Observed:
    return Observed(
        pod=_child(state, key, c.ChildKind.POD),
        network_policy=_child(state, key, c.ChildKind.NETWORK_POLICY),
        service=_child(state, key, c.ChildKind.SERVICE),
        pvc=_child(state, key, c.ChildKind.PVC),
        first_seen=dict(state.first_seen),
        held={c.ChildKind(kind): until for kind, until in state.repairs.held(now).items()},
    )


# --- templates -------------------------------------------------------------------------------------------------

# The Sandboxes made from each template, by (namespace, template): the template's events wake them (one waiting for
# it goes on; a running one's NetworkPolicy and Service follow its network section; its pod is kept). Entries go
# with the Sandboxes' DELETED events.
TEMPLATE_USERS: dict[tuple[str, str], set[str]] = {}


def _stop_using(key: tuple[str, str], template: str) -> None:
    users = TEMPLATE_USERS.get((key[0], template))
    if users is not None:
        users.discard(key[1])
        if not users:
            del TEMPLATE_USERS[(key[0], template)]


def _template_name(body: Mapping[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("templateRef")
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) and name else None


async def wake_template_users(template: tuple[str, str], runtime: Runtime) -> None:
    """The template appeared, changed or went: reconcile the Sandboxes made from it."""
    for name in sorted(TEMPLATE_USERS.get(template, ())):
        state = WATCHED.sandboxes.get((template[0], name))
        if state is not None:
            state.task = asyncio.get_running_loop().create_task(
                reconcile_sandbox(state, runtime, (template[0], name), trigger="template")
            )


# --- the reconciliation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why the plan stopped at a create, in the Observed fields the decision reads it from."""

    quota_error: str | None = None
    create_error: str | None = None
    name_conflict: str | None = None


async def _create(
    runtime: Runtime, state: SandboxState, uid: str, manifest: Mapping[str, Any], *, look_first: bool,
    template: str | None = None, known_pod: str | None = None,
) -> Refusal | None:
    """Create a child; if its name is taken, look: ours is observed as it is (and ``state.found`` set: the plan was
    made without it), another object's is a conflict. ``look_first``: read before creating, for a Sandbox that had
    its children before (after a takeover the watch may not have shown them yet; a read is no write), including the
    pod its status names (``known_pod``). The pod of a Sandbox made from a ``template`` is claimed from one of its
    pools when one has a Ready pod (pool.warm)."""
    kind, meta = c.ChildKind(manifest["kind"]), manifest["metadata"]
    if kind is c.ChildKind.POD and look_first and template is not None:
        # Its pod may be one it claimed (named after the pool), claimed or made by a replica that died before it
        # wrote the status: look for any pod of this Sandbox before making another. (A Sandbox without a template
        # only ever has ``sbx-<name>``, read by name below: a LIST by label costs the API server a scan of the
        # namespace's pods, and a start that finds thousands of never-served Sandboxes would make thousands.)
        live = await _own_pod(runtime, meta["namespace"], meta["labels"][c.LABEL_SANDBOX], uid, known_pod)
        if live is not None:
            _expect(state, kind, live, read=True)
            state.found = True
            return None
    if kind is c.ChildKind.POD and template is not None:
        claimed = await claim(runtime.kube, template, manifest)
        if claimed is not None:
            metrics.LAUNCHES.labels(c.Launch.WARM).inc()
            _expect(state, kind, claimed)
            # Ready already, mostly, and this pass decided without it: one more pass follows this one at once. Its
            # watch event is only the echo of the claim, which starts no pass of its own while the status settles
            # (_own_echo), so without this its Ready would wait for the settle time.
            state.dirty = True
            return None
    live = await runtime.kube.get_child(kind, meta["namespace"], meta["name"]) if look_first else None
    if live is None:
        state.creating.add(kind)
        try:
            created = await runtime.kube.create(kind, manifest)
            if created is not None:
                if kind is c.ChildKind.POD:
                    metrics.LAUNCHES.labels(c.Launch.COLD).inc()
                # As stored: its watch event (the echo of this create) then shows nothing new (_child_listener).
                _expect(state, kind, created)
                return None
        except KubeError as error:
            if error.transient:
                raise
            return Refusal(quota_error=error.message) if error.quota_exceeded else Refusal(create_error=error.message)
        finally:
            _created(state, kind)
        live = await runtime.kube.get_child(kind, meta["namespace"], meta["name"])
        if live is None:
            return None  # gone again meanwhile: the next pass creates it
    if not owned_by(live, uid):
        message = f"{kind} {meta['name']} already exists and this Sandbox does not own it; it is never adopted"
        return Refusal(name_conflict=message)
    _expect(state, kind, live, read=True)
    state.found = True
    return None


async def _own_pod(
    runtime: Runtime, namespace: str, sandbox: str, uid: str, known_pod: str | None
) -> dict[str, Any] | None:
    """A live pod this Sandbox owns, by its label (one LIST) or the name its status gives; None if there is none."""
    page = await runtime.kube.list_page(c.ChildKind.POD, namespace, label_selector=f"{c.LABEL_SANDBOX}={sandbox}")
    for pod in page.get("items") or []:
        if owned_by(pod, uid) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            return dict(pod)
    if known_pod is not None:
        live = await runtime.kube.get_child(c.ChildKind.POD, namespace, known_pod)
        if live is not None and owned_by(live, uid):
            return live
    return None


async def _apply(
    runtime: Runtime, state: SandboxState, sandbox_key: tuple[str, str], body: Mapping[str, Any], plan: Plan,
    now: datetime,
) -> Refusal | None:
    """Carry out the plan's actions in order; stop at a create the API server refused for good, or at a name taken
    by an object the Sandbox does not own, and return why (as Observed fields); stop too when a child to create was
    there already (``state.found``): the rest of the plan was made without it. The one exception to the order: a
    new Sandbox's NetworkPolicy and cold pod are created together when its namespace is fenced (sandbox.fence)."""
    # Read before creating for a Sandbox that may have children the stores do not show: one with a status, or one
    # first seen in a listing or while standing by (the last active replica may have died before its status write).
    established = bool((body.get("status") or {}).get("conditions")) or state.listed
    template = _template_name(body)
    creates = {c.ChildKind(action.manifest["kind"]): action for action in plan.actions
               if isinstance(action, CreateChild)}
    policy, pod = creates.get(c.ChildKind.NETWORK_POLICY), creates.get(c.ChildKind.POD)
    if policy is None or pod is None or template is not None:  # a claim keeps its pool's fence: see pool.warm
        return await _apply_in_order(runtime, state, sandbox_key, body, plan.actions, now, established)
    if established or not fence.fenced(sandbox_key[0]):
        if not established:
            fence.ensure(runtime.kube, sandbox_key[0])
        metrics.POD_CREATES.labels(sandbox_key[0], c.PodOrder.POLICY_FIRST).inc()
        return await _apply_in_order(runtime, state, sandbox_key, body, plan.actions, now, established)
    # A new Sandbox in a fenced namespace: its pod is closed both ways until its own policy is in (sandbox.fence),
    # so the two are created together, and the Sandbox is Ready one API round trip sooner.
    metrics.POD_CREATES.labels(sandbox_key[0], c.PodOrder.FENCED).inc()
    rest = tuple(action for action in plan.actions if action is not policy)
    # The pod's request goes out first: it is on the way to Ready, the policy is not (the fence closes the pod).
    pod_result, policy_result = await asyncio.gather(
        _apply_in_order(runtime, state, sandbox_key, body, rest, now, established),
        _create(runtime, state, body["metadata"]["uid"], policy.manifest, look_first=False),
        return_exceptions=True,
    )
    results = (policy_result, pod_result)  # the policy's failure or refusal first
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return next((result for result in results if isinstance(result, Refusal)), None)


async def _apply_in_order(
    runtime: Runtime, state: SandboxState, sandbox_key: tuple[str, str], body: Mapping[str, Any],
    actions: tuple[Action, ...], now: datetime, established: bool,
) -> Refusal | None:
    """``_apply``'s actions one after the other (``established``: read each child before creating it)."""
    namespace, name = sandbox_key
    uid, template, known_pod = body["metadata"]["uid"], _template_name(body), (body.get("status") or {}).get("podName")
    for action in actions:
        if isinstance(action, CreateChild):
            refusal = await _create(runtime, state, uid, action.manifest, look_first=established, template=template,
                                    known_pod=known_pod if isinstance(known_pod, str) else None)
            if refusal is not None or state.found:
                return refusal
        elif isinstance(action, UpdateChild):
            kind = c.ChildKind(action.manifest["kind"])
            await runtime.kube.replace(kind, action.manifest)
            _expect(state, kind, action.manifest)
            if action.repair:
                record_repair(state, kind, now)
        elif isinstance(action, DeleteChild):
            read = state.expected.pop(action.kind, (None, 0.0, False))[2]
            await runtime.kube.delete(action.kind, namespace, action.name)
            if read or WATCHED.children[action.kind].get(sandbox_key) is None:
                state.unwatched = True  # its going will not come as an event
            if action.repair:
                record_repair(state, action.kind, now)
        elif isinstance(action, DeleteSandbox):
            await runtime.kube.delete_sandbox(namespace, name, uid)
    return None


# Events of the normal path, posted only with Settings.progress_events (Kopf posts each as one more API write).
PROGRESS_EVENTS = frozenset({c.EventReason.CREATED, c.EventReason.READY})


def _post(runtime: Runtime, body: Mapping[str, Any], events: Iterable[Event]) -> None:
    """Post the Events (the normal path's only with Settings.progress_events)."""
    for event in events:
        if runtime.progress_events or event.reason not in PROGRESS_EVENTS:
            kopf.event(body, type=event.type.value, reason=event.reason.value, message=event.message)  # type: ignore[arg-type]


def _record(state: SandboxState, runtime: Runtime, body: Mapping[str, Any], plan: Plan) -> None:
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
    _post(runtime, body, plan.events)
    for event in plan.events:
        if event.reason is c.EventReason.READY and not old_status.get("startedAt"):
            created = optional_time(body["metadata"].get("creationTimestamp"))
            if created is not None:
                launch = plan.status.get("launch") or c.Launch.COLD
                metrics.READY_LATENCY.labels(launch).observe((datetime.now(UTC) - created).total_seconds())
        if event.reason is c.EventReason.EXPIRED and plan.expiry_reason is not None:
            action = "delete" if any(isinstance(a, DeleteSandbox) for a in plan.actions) else "suspend"
            metrics.EXPIRATIONS.labels(plan.expiry_reason.value, action).inc()


async def _pass(state: SandboxState, runtime: Runtime, key: tuple[str, str]) -> PassResult:
    """One pass for one Sandbox: observe, decide (pure), act, write the status, post the Events."""
    body, version = state.body, state.version
    if body is None:
        return PassResult()
    state.pass_started = time.monotonic()

    template = _template_name(body)
    if template is not None:
        TEMPLATE_USERS.setdefault((key[0], template), set()).add(key[1])

    def load() -> SandboxObject | InvalidSandbox:
        defaults = sandbox_defaults(TENANT_LIFETIMES.get, key[0], runtime.defaults)
        recipe = WARM.recipe(key[0], template) if template is not None else None
        if state.loaded is None or not state.loaded.holds(version, defaults, recipe):
            state.loaded = Loaded(version, defaults, recipe, load_sandbox(body, defaults, recipe))
        sandbox = state.loaded.sandbox
        state.secrets = secret_values(sandbox) if isinstance(sandbox, SandboxObject) else []
        return sandbox

    def rendering(sandbox: SandboxObject) -> Rendering:
        loaded = state.loaded
        if loaded is None or loaded.sandbox is not sandbox:
            return render_children(sandbox)
        if loaded.rendering is None:
            loaded.rendering = render_children(sandbox)
        return loaded.rendering

    now = datetime.now(UTC)
    observed = _observe(state, key, now)
    plan, error = decide_safely(load, body, observed, now, rendering)
    state.found = state.unwatched = False
    refused = await _apply(runtime, state, key, body, plan, now)
    creating = refused is None and any(isinstance(action, CreateChild) for action in plan.actions)
    if state.found and refused is None:
        # A child the plan would have made was there (the watch had not shown it yet): decide again with it, before
        # any status or Event comes of a plan made without it. The repairs made before it are done, though, and the
        # next pass finds those children as rendered: their Events go now, or never.
        _post(runtime, body, [event for event in plan.events if event.reason is c.EventReason.TAMPERED])
        state.dirty = True
        state.echo_deferred = False
        return PassResult()
    failed = "decide" if error is not None else None
    if refused is not None:
        # Report why, then look again: quota frees up, a refused spec may be fixed by a new generation. The children
        # as they are now (this pass may have made some), and what the refusal stops: a pod whose own NetworkPolicy
        # was refused, or whose name another object holds, goes now.
        plan, _ = decide_safely(load, body, replace(
            _observe(state, key, now),
            quota_error=refused.quota_error,
            create_error=refused.create_error,
            name_conflict=refused.name_conflict,
        ), now, rendering)
        stops = tuple(action for action in plan.actions if isinstance(action, DeleteChild))
        await _apply_in_order(runtime, state, key, body, stops, now, established=True)
        failed = None if refused.quota_error else "rejected"
    requeue_at = plan.requeue_at
    if refused is not None and refused.quota_error:
        quota_retry = seconds_after(now, QUOTA_RETRY_SECONDS)
        requeue_at = quota_retry if requeue_at is None else min(requeue_at, quota_retry)
    state.first_seen = {moment: state.first_seen.get(moment, now) for moment in plan.future_activity}
    if state.unwatched or any(read for _, _, read in state.expected.values()):
        recheck = now + timedelta(seconds=READ_RECHECK_SECONDS)
        requeue_at = recheck if requeue_at is None else min(requeue_at, recheck)
    changed = status_changed(SandboxStatus, body.get("status"), plan.status)
    if changed:
        settle_until = _settling(state, runtime, body.get("status") or {}, plan.status)
    else:
        settle_until = state.settling_since = None  # nothing waits to be written
    if settle_until is not None:
        wake = now + timedelta(seconds=settle_until - time.monotonic())
        requeue_at = wake if requeue_at is None else min(requeue_at, wake)
    elif changed:
        updated = await runtime.kube.patch_status(key[0], key[1], body.get("status") or {}, plan.status)
        if updated is not None:
            state.remember(updated)
            if _decision_inputs(updated) != _decision_inputs(body):
                # Changed by someone else since the body this pass decided on (an activity bump): the watch event of
                # that change is no newer than this answer and is skipped, so decide again now.
                state.dirty = True
    _record(state, runtime, body, plan)
    _settle_echoes(state)
    if not creating:
        state.loaded = None  # nothing was made whose readiness comes next: the next pass may be far off
    return PassResult(requeue_at=requeue_at, failed=failed, error=error)


def _decision_inputs(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Sandbox's body, besides its status, a decision reads."""
    meta = body.get("metadata") or {}
    return (body.get("spec"), meta.get("annotations"), meta.get("labels"), meta.get("deletionTimestamp"),
            meta.get("generation"))


# The Ready reasons of a sandbox on its way up: a status saying only this may wait for the one that replaces it.
PROGRESS_REASONS = frozenset({c.Reason.POD_MISSING, c.Reason.POD_PENDING, c.Reason.CONTAINER_CREATING,
                              c.Reason.POD_NOT_READY})


def _settling(state: SandboxState, runtime: Runtime, old: Mapping[str, Any], new: Mapping[str, Any]) -> float | None:
    """When the changed status ``new`` may still wait (a monotonic time), or None to write it now.

    A new Sandbox goes Pending (creating its pod), then pod pending, container creating, Ready within a second or
    two: written as it happens that is three status writes, each echoed back by the watch. Only a status that says
    "still on the way up" after one that said the same (or nothing) waits, at most ``status_settle_seconds`` from
    the first such change; anything else (Ready, a failure, a lost pod, expiry, suspension) is written at once."""
    conditions = new.get("conditions") or []
    ready: Mapping[str, Any] = next((cond for cond in conditions if cond.get("type") == c.ConditionType.READY), {})
    on_the_way_up = (
        new.get("phase") == c.SandboxPhase.PENDING
        and ready.get("reason") in PROGRESS_REASONS
        and old.get("phase") in (None, c.SandboxPhase.PENDING)
    )
    if not on_the_way_up or runtime.status_settle_seconds <= 0:
        state.settling_since = None
        return None
    if state.settling_since is None:
        state.settling_since = time.monotonic()
    until = state.settling_since + runtime.status_settle_seconds
    if time.monotonic() >= until:
        state.settling_since = None
        return None
    return until


async def reconcile_sandbox(state: SandboxState, runtime: Runtime, key: tuple[str, str], trigger: str) -> None:
    """Decide and act for one Sandbox (one pass at a time, triggers folded, bounded backoff: k8s.loop), once its
    children have been listed (before, it would not see them); a Sandbox never served goes first (``unserved``).
    Every pass waits for a current listing of the Tenants (at a start; after a 410 re-listing, 10 s at most):
    without its Tenant's lifetime rules, or with rules changed meanwhile, a Sandbox's deadline would be wrong, and one
    past that wrong deadline would be deleted for it."""
    if not state.unserved:
        await watch.wait_listed()
    await watch.wait_kind_listed(watch.TENANTS)
    await reconcile(state, lambda: _pass(state, runtime, key), what=f"sandbox {key[0]}/{key[1]}", trigger=trigger)


def sandbox_changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    """Any change to a Sandbox (including its activity annotation), from the Sandboxes' stream (k8s.watch): reconcile
    it. The echo of our own status write (a body no newer than the one that write returned) changes nothing and is
    not looked at again."""
    meta = body["metadata"]
    key, uid = (str(meta.get("namespace") or ""), str(meta["name"])), str(meta.get("uid") or "")
    state = track(WATCHED.sandboxes, key, uid, event_type, lambda uid: SandboxState(uid=uid), _forget)
    if state is None:
        return
    if state.packed is not None and resource_version(body) <= state.version:
        metrics.RECONCILES_SKIPPED.labels("sandbox").inc()
        return
    new_here = state.packed is None  # first seen by this replica
    if new_here:
        state.listed = event_type is None or watch.paused()
        state.unserved = (not watch.listed() and not (body.get("status") or {}).get("conditions")
                          and _template_name(body) is None)  # a claim needs the pools' warm pods listed
    state.remember(body)
    if not RUNTIME:
        return
    if watch.put_off():  # standing by: when this replica resumes, every Sandbox gets a pass (``_resumed``)
        return
    if event_type is None and not _due(body):
        # A (re)listing (start-up, a 410): Sandboxes served before, a few at a time
        LISTED.put(state, key)
    else:
        watch.spawn(reconcile_sandbox(state, RUNTIME[0], key, trigger="listing" if event_type is None else "sandbox"))
        if new_here and state.unserved:
            LISTED.put(state, key)  # once more when everything is listed: that pass sees every child


@dataclass
class ListedPasses:
    """The Sandboxes a (re)listing or a resume found that were served before: each gets a pass (it confirms them,
    and finds what changed while no replica was active), a few at a time, in order, once every kind is listed. A
    queue and a few workers, not a task per Sandbox: 10,000 waiting tasks cost CPU and memory at each start."""

    workers: int = 4
    queue: deque[tuple[SandboxState, tuple[str, str]]] = field(default_factory=deque)
    queued: set[int] = field(default_factory=set)  # id() of each state in the queue: one pass each is enough
    running: int = 0

    def put(self, state: SandboxState, key: tuple[str, str]) -> None:
        if id(state) in self.queued:
            return
        self.queued.add(id(state))
        self.queue.append((state, key))
        if self.running < self.workers:
            self.running += 1
            watch.spawn(self._work())

    async def _work(self) -> None:
        try:
            await watch.wait_listed()
            while self.queue and RUNTIME:
                state, key = self.queue.popleft()
                self.queued.discard(id(state))
                try:
                    if not state.deleted:
                        await reconcile_sandbox(state, RUNTIME[0], key, trigger="listing")
                except Exception as error:  # the rest of the queue must still be confirmed
                    logger.error("sandbox %s/%s: listed pass failed (%s)\n%s", key[0], key[1], type(error).__name__,
                                 "".join(traceback.format_tb(error.__traceback__)))
                # A pass that writes nothing never suspends: without this, one worker would hold the event loop
                # until the queue is empty, and a new Sandbox's pass would wait for all of them.
                await asyncio.sleep(0)
        finally:
            self.running -= 1


LISTED = ListedPasses()


def _forget(key: tuple[str, str], state: SandboxState) -> None:
    """The Sandbox is gone: no more passes; drop what was kept for it."""
    state.forget()
    del WATCHED.sandboxes[key]
    template = _template_name(state.body or {})
    if template is not None:
        _stop_using(key, template)
    if state.phase is not None:
        metrics.SANDBOXES.labels(key[0], state.phase).dec()
        state.phase = None


def _resumed() -> None:
    """This replica resumed after a pause (a takeover): every Sandbox gets a pass, as at a start, without a listing
    (the streams went on while paused). The replica ran no pass meanwhile, so none has a deadline timer here: the
    ones waiting for the operator (never served, or past their deadline) go at once, the others are confirmed a few
    at a time (``LISTED``), the nearest deadlines first: a deadline gets its timer from its Sandbox's pass."""
    if not RUNTIME:
        return
    confirm: list[tuple[float, SandboxState, tuple[str, str]]] = []
    for key, state in list(WATCHED.sandboxes.items()):
        body = state.body or {}
        if _due(body):
            watch.spawn(reconcile_sandbox(state, RUNTIME[0], key, trigger="resumed"))
            if not state.unserved or watch.listed():
                continue
            # resumed at a start, before every kind was listed: once more after, as sandbox_changed does
        expires = optional_time((body.get("status") or {}).get("expiresAt"))
        confirm.append((expires.timestamp() if expires is not None else math.inf, state, key))
    for _, state, key in sorted(confirm, key=lambda item: item[0]):  # the nearest deadlines first
        LISTED.put(state, key)


watch.FOLLOWED.on_resume(_resumed)


def _sandboxes_relisted(namespace: str | None, uids: set[str]) -> None:
    """A (re)listing: forget the Sandboxes it did not find (deleted while the stream was broken)."""
    forget_unlisted(WATCHED.sandboxes, uids, lambda key: namespace is None or key[0] == namespace, _forget)


watch.FOLLOWED.listen(watch.SANDBOXES, Listener(wants=lambda body: True, changed=sandbox_changed,
                                                relisted=_sandboxes_relisted))


def _due(body: Mapping[str, Any]) -> bool:
    """Whether a Sandbox found by the listing is waiting for the operator: never served (no status: created while
    no replica was active), or past the deadline its status announced. Such a pass does not queue behind the
    Sandboxes that are only confirmed."""
    status = body.get("status") or {}
    if not status.get("conditions"):
        return True
    expires = optional_time(status.get("expiresAt"))
    return expires is not None and expires <= datetime.now(UTC)
