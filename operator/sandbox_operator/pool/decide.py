"""The pure decision for a SandboxPool: (pool, its template's recipe, its warm pods, its fence, now) -> actions and
the new status.

Rules, in order:
- A pool whose template is missing, or whose recipe cannot be pooled (a persistent workspace: its claim is named after
  the Sandbox), keeps no warm pods: every unclaimed pod is deleted and Ready=False says why.
- The fence, a deny-all NetworkPolicy over every pod the pool made, is created before any warm pod, and put back when
  it differs from its rendering. Claimed pods keep its label: they are never without a policy.
- Warm pods of the current recipe (their recipe-hash label) are kept at ``replicas``: missing ones are created, a
  pod that failed or finished is deleted (it is replaced), extra ones are deleted (not ready first, then newest).
- A recipe change (the template was edited) rolls the pool: pods of the new recipe are created first, at most
  ``surge`` beyond ``replicas``; a pod of an older recipe is deleted only while the ready pods left stay at least
  ``replicas`` (unready old pods go at once). Claimed pods are the Sandboxes' and never touched.
- A create refused by the quota is reported (Ready=False/QuotaExceeded) and tried again later; no error is raised.
  Refusals may quote the pod spec: the template's literal env values are redacted from them.
- A fence name taken by an object the pool does not own stops it: no warm pod runs without the fence
  (Ready=False/FenceConflict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults, PodRecipe, literal_values
from sandbox_operator.api.schema import next_condition
from sandbox_operator.api.template import SandboxPoolSpec, SandboxPoolStatus
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.k8s.redaction import redact
from sandbox_operator.pool import render
from sandbox_operator.sandbox.decide import as_rendered
from sandbox_operator.sandbox.render import recipe_hash


@dataclass(frozen=True)
class WarmPod:
    """What the pool needs to know of one of its unclaimed pods."""

    name: str
    recipe_hash: str | None
    ready: bool = False
    done: bool = False  # failed or finished: it will never serve
    deleting: bool = False
    created: str = ""  # creationTimestamp, RFC 3339: sorts in time order
    resource_version: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WarmPod:
        """Summarise a warm pod's body."""
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        conditions = {cond.get("type"): cond.get("status") for cond in status.get("conditions") or []}
        return cls(
            name=str(meta.get("name", "")),
            recipe_hash=(meta.get("labels") or {}).get(c.LABEL_RECIPE_HASH),
            ready=status.get("phase") == "Running" and conditions.get("Ready") == "True",
            done=status.get("phase") in ("Failed", "Succeeded"),
            deleting=bool(meta.get("deletionTimestamp")),
            created=str(meta.get("creationTimestamp") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class PoolObject:
    """A SandboxPool as the operator sees it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: SandboxPoolSpec
    status: SandboxPoolStatus


@dataclass(frozen=True)
class PoolObserved:
    """The pool's template (its recipe; None: missing), its unclaimed pods, its fence, and why the last create of a
    warm pod was refused, if it was. ``starting``: pods created whose event has not come yet."""

    recipe: PodRecipe | None
    pods: Sequence[WarmPod] = ()
    fence: ChildSummary | None = None
    starting: int = 0
    quota_error: str | None = None
    create_error: str | None = None
    fence_conflict: str | None = None


@dataclass(frozen=True)
class CreateWarmPods:
    """Create ``count`` warm pods from this manifest (the API server names each)."""

    manifest: dict[str, Any]
    count: int


@dataclass(frozen=True)
class DeleteWarmPod:
    """Delete one unclaimed pod; ``resource_version`` guards against deleting a pod claimed meanwhile."""

    name: str
    resource_version: str


@dataclass(frozen=True)
class ApplyFence:
    """Create (or replace) the fence NetworkPolicy."""

    manifest: dict[str, Any]
    replace: bool


PoolAction = ApplyFence | CreateWarmPods | DeleteWarmPod


@dataclass(frozen=True)
class PoolPlan:
    """The actions in order and the complete new status."""

    actions: tuple[PoolAction, ...]
    status: dict[str, Any]


def surge(replicas: int) -> int:
    """How many pods of a new recipe may exist beyond ``replicas`` while the pool rolls: a quarter, at least one."""
    return max(1, replicas // 4)


def _newest_last(pods: Sequence[WarmPod]) -> list[WarmPod]:
    """Pods in the order they should go: not ready first, then the newest."""
    return sorted(pods, key=lambda pod: (pod.ready, _reverse(pod.created)))


def _reverse(text: str) -> tuple[int, ...]:
    return tuple(-ord(char) for char in text)


def decide_pool(pool: PoolObject, observed: PoolObserved, defaults: OperatorDefaults, now: datetime) -> PoolPlan:
    """Decide the pool's actions and status; pure and deterministic."""
    replicas, recipe = pool.spec.replicas, observed.recipe
    live = [pod for pod in observed.pods if not pod.deleting]
    actions: list[PoolAction] = []
    selector = render.warm_selector(pool.name)
    current_hash: str | None = None
    if recipe is None:
        reason, message = c.PoolReason.TEMPLATE_NOT_FOUND, f"SandboxTemplate {pool.spec.template_ref.name} not found"
        actions += [DeleteWarmPod(pod.name, pod.resource_version) for pod in live]
        current: list[WarmPod] = []
    elif recipe.workspace.persistent:
        reason = c.PoolReason.NOT_POOLABLE
        message = "a template with a persistent workspace cannot be pooled: its claim is named after each Sandbox"
        actions += [DeleteWarmPod(pod.name, pod.resource_version) for pod in live]
        current = []
    elif observed.fence_conflict is not None:
        reason, message = c.PoolReason.FENCE_CONFLICT, observed.fence_conflict
        current = []
    else:
        spec = render.warm_pod_spec(recipe, defaults)
        current_hash = recipe_hash(spec)
        fence = render.render_fence(pool.name, pool.namespace, pool.uid)
        if not as_rendered(c.ChildKind.NETWORK_POLICY, fence, observed.fence):
            actions.append(ApplyFence(fence, replace=observed.fence is not None))
        current = [pod for pod in live if pod.recipe_hash == current_hash and not pod.done]
        done = [pod for pod in live if pod.done]
        old = [pod for pod in live if pod.recipe_hash != current_hash and not pod.done]
        actions += [DeleteWarmPod(pod.name, pod.resource_version) for pod in done]
        # Scale down: the extra current pods, least useful first.
        extra = _newest_last(current)[: max(0, len(current) - replicas)]
        actions += [DeleteWarmPod(pod.name, pod.resource_version) for pod in extra]
        current = [pod for pod in current if pod not in extra]
        # Roll: old pods go while enough ready pods stay.
        ready_left = sum(pod.ready for pod in current) + sum(pod.ready for pod in old)
        kept_old = []
        for pod in _newest_last(old):
            if not pod.ready:
                actions.append(DeleteWarmPod(pod.name, pod.resource_version))
            elif ready_left - 1 >= replicas:
                actions.append(DeleteWarmPod(pod.name, pod.resource_version))
                ready_left -= 1
            else:
                kept_old.append(pod)
        have = len(current) + observed.starting
        room = replicas + (surge(replicas) if kept_old else 0) - have - len(kept_old)
        wanted = min(replicas - have, room)
        if wanted > 0:
            actions.append(CreateWarmPods(render.render_warm_pod(pool.name, pool.namespace, pool.uid, spec), wanted))
        ready = sum(pod.ready for pod in current)
        secrets = literal_values(recipe)
        if observed.quota_error and wanted > 0:
            reason = c.PoolReason.QUOTA_EXCEEDED
            message = f"cannot create warm pods: {redact(observed.quota_error, secrets)}"
        elif observed.create_error and wanted > 0:
            reason = c.PoolReason.CREATE_REJECTED
            message = f"the API server refused a warm pod: {redact(observed.create_error, secrets)}"
        elif kept_old or any(pod.recipe_hash != current_hash for pod in live if not pod.done):
            reason, message = c.PoolReason.ROLLING, f"replacing pods of an earlier template: {ready}/{replicas} ready"
        elif ready >= replicas:
            reason, message = c.PoolReason.FILLED, f"{ready}/{replicas} warm pods ready"
        else:
            reason, message = c.PoolReason.FILLING, f"{ready}/{replicas} warm pods ready"
    ready = sum(pod.ready for pod in current)
    status = c.ConditionStatus.TRUE if reason is c.PoolReason.FILLED else c.ConditionStatus.FALSE
    condition = next_condition(pool.status, c.ConditionType.READY, status, reason, message, pool.generation, now)
    new = SandboxPoolStatus(
        replicas=len(current),
        ready_replicas=ready,
        selector=selector,
        recipe_hash=current_hash,
        observed_generation=pool.generation,
        conditions=[condition],
        message=message,
    )
    return PoolPlan(actions=tuple(actions), status=new.to_dict())
