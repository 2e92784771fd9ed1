"""The SandboxPool decision: warm pods kept at replicas, rolled to a new recipe without dropping below the ready pods
it had, fenced first, and emptied when its template is gone or cannot be pooled."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults, PodRecipe
from sandbox_operator.api.template import SandboxPoolSpec, SandboxPoolStatus
from sandbox_operator.k8s.manifest import ChildSummary, manifest_hash, owned_view
from sandbox_operator.pool import render
from sandbox_operator.pool.decide import (
    ApplyFence,
    CreateWarmPods,
    DeleteWarmPod,
    PoolObject,
    PoolObserved,
    PoolPlan,
    WarmPod,
    decide_pool,
    surge,
)
from sandbox_operator.sandbox.render import recipe_hash
from tests.unit.builders import at
from tests.unit.template_builders import NAMESPACE, POOL, POOL_UID, TEMPLATE, recipe

RECIPE = recipe()
CURRENT = recipe_hash(render.warm_pod_spec(RECIPE, OperatorDefaults()))
FENCE = render.render_fence(POOL, NAMESPACE, POOL_UID)
FENCED = ChildSummary(FENCE["metadata"]["name"], manifest_hash(FENCE), owned_view(FENCE))


def pool(replicas: int = 3, generation: int = 2) -> PoolObject:
    spec = SandboxPoolSpec.model_validate({"templateRef": {"name": TEMPLATE}, "replicas": replicas})
    return PoolObject(POOL, NAMESPACE, POOL_UID, generation, spec, SandboxPoolStatus())


def warm(name: str, *, ready: bool = True, recipe_hash: str | None = CURRENT, minute: int = 0, **flags: Any) -> WarmPod:
    return WarmPod(
        name,
        recipe_hash,
        ready=ready,
        created=f"2025-01-01T12:{minute:02d}:00Z",
        resource_version=f"rv-{name}",
        **flags,
    )


def decide(replicas: int, *pods: WarmPod, recipe: PodRecipe | None = RECIPE, **observed: Any) -> PoolPlan:
    return decide_pool(
        pool(replicas), PoolObserved(recipe, pods, **{"fence": FENCED, **observed}), OperatorDefaults(), at(60)
    )


def deleted(plan: PoolPlan) -> list[str]:
    return [action.name for action in plan.actions if isinstance(action, DeleteWarmPod)]


def created(plan: PoolPlan) -> int:
    return sum(action.count for action in plan.actions if isinstance(action, CreateWarmPods))


def ready_condition(plan: PoolPlan) -> tuple[str, str]:
    (condition,) = plan.status["conditions"]
    return condition["status"], condition["reason"]


# --- Examples --------------------------------------------------------------------------------------------------------


def test_empty_pool_creates_its_fence_then_all_replicas() -> None:
    plan = decide(3, fence=None)
    assert [type(action) for action in plan.actions] == [ApplyFence, CreateWarmPods]
    fence, create = plan.actions
    assert isinstance(fence, ApplyFence) and fence.replace is False and fence.manifest == FENCE
    assert isinstance(create, CreateWarmPods) and create.count == 3
    assert create.manifest["metadata"]["labels"][c.LABEL_RECIPE_HASH] == CURRENT
    assert ready_condition(plan) == ("False", "Filling")


def test_fence_that_differs_from_its_rendering_is_replaced() -> None:
    plan = decide(1, warm("a"), fence=ChildSummary(FENCED.name, "stale"))
    assert plan.actions == (ApplyFence(FENCE, replace=True),)


def test_full_pool_of_ready_pods_does_nothing_and_is_ready() -> None:
    plan = decide(2, warm("a"), warm("b"))
    assert plan.actions == ()
    assert ready_condition(plan) == ("True", "Filled")


def test_pods_being_created_are_not_created_twice() -> None:
    assert created(decide(3, warm("a"), starting=2)) == 0
    assert created(decide(3, warm("a"), starting=1)) == 1


def test_failed_warm_pod_is_deleted_and_replaced() -> None:
    plan = decide(2, warm("a"), warm("b", ready=False, done=True))
    assert (deleted(plan), created(plan)) == (["b"], 1)


def test_scale_down_deletes_unready_pods_first_then_the_newest() -> None:
    pods = [warm("old", minute=1), warm("new", minute=9), warm("mid", minute=5), warm("cold", ready=False, minute=2)]
    assert deleted(decide(2, *pods)) == ["cold", "new"]


def test_delete_is_guarded_by_the_resource_version_seen() -> None:
    (action,) = decide(0, warm("a")).actions
    assert action == DeleteWarmPod("a", "rv-a")


def test_pods_already_deleting_are_neither_deleted_again_nor_counted() -> None:
    plan = decide(1, warm("a", deleting=True))
    assert (deleted(plan), created(plan)) == ([], 1)


def test_recipe_change_surges_first_and_keeps_the_old_ready_pods() -> None:
    old = [warm(f"old{i}", recipe_hash="before") for i in range(4)]
    plan = decide(4, *old)
    assert (deleted(plan), created(plan)) == ([], surge(4))
    assert ready_condition(plan) == ("False", "Rolling")


def test_old_pod_goes_once_a_new_one_is_ready() -> None:
    old = [warm(f"old{i}", recipe_hash="before", minute=i) for i in range(4)]
    plan = decide(4, *old, warm("new"))
    assert (deleted(plan), created(plan)) == (["old3"], 1)


def test_unready_old_pods_go_at_once() -> None:
    plan = decide(2, warm("old", recipe_hash="before", ready=False), warm("older", recipe_hash=None, ready=False))
    assert (sorted(deleted(plan)), created(plan)) == (["old", "older"], 2)


def test_missing_template_empties_the_pool() -> None:
    plan = decide(3, warm("a"), warm("b", recipe_hash="before"), recipe=None, fence=None)
    assert (deleted(plan), created(plan)) == (["a", "b"], 0)
    assert not any(isinstance(action, ApplyFence) for action in plan.actions)
    assert ready_condition(plan) == ("False", "TemplateNotFound")
    assert TEMPLATE in plan.status["message"]
    assert (plan.status["replicas"], plan.status["readyReplicas"]) == (0, 0)
    assert "recipeHash" not in plan.status


def test_template_with_persistent_workspace_cannot_be_pooled() -> None:
    plan = decide(3, warm("a"), recipe=recipe(workspace={"persistent": True}))
    assert (deleted(plan), created(plan)) == (["a"], 0)
    assert ready_condition(plan) == ("False", "NotPoolable")


def test_quota_refusal_is_a_condition_and_the_create_is_tried_again() -> None:
    plan = decide(3, warm("a"), quota_error='pods "x" is forbidden: exceeded quota: compute')
    assert created(plan) == 2
    assert ready_condition(plan) == ("False", "QuotaExceeded")
    assert "exceeded quota" in plan.status["message"]


def test_quota_refusal_no_longer_matters_once_the_pool_is_full() -> None:
    plan = decide(1, warm("a"), quota_error="exceeded quota")
    assert ready_condition(plan) == ("True", "Filled")


def test_other_refusal_is_create_rejected() -> None:
    assert ready_condition(decide(1, create_error="admission webhook denied")) == ("False", "CreateRejected")


def test_status_counts_current_pods_and_selects_the_unclaimed_ones() -> None:
    plan = decide(3, warm("a"), warm("b", ready=False), warm("old", recipe_hash="before"))
    assert (plan.status["replicas"], plan.status["readyReplicas"]) == (2, 1)
    assert plan.status["recipeHash"] == CURRENT
    assert plan.status["observedGeneration"] == 2
    assert plan.status["selector"] == render.warm_selector(POOL)


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether a label selector of equality and not-exists terms selects these labels."""
    for term in selector.split(","):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        else:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


def test_selector_selects_warm_pods_not_claimed_ones_nor_other_pools() -> None:
    (create,) = [action for action in decide(1).actions if isinstance(action, CreateWarmPods)]
    labels = create.manifest["metadata"]["labels"]
    selector = render.warm_selector(POOL)
    assert matches(selector, labels)
    assert not matches(selector, {**labels, c.LABEL_SANDBOX: "demo"})
    assert not matches(selector, {**labels, c.LABEL_POOL: "other"})


def test_surge_is_a_quarter_and_at_least_one() -> None:
    assert [surge(n) for n in (0, 1, 4, 7, 8, 100)] == [1, 1, 1, 1, 2, 25]


# --- Properties over any set of warm pods ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    replicas: int
    pods: tuple[WarmPod, ...]
    starting: int
    fence: ChildSummary | None


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    """A pool of any size with warm pods of the current or earlier recipes, starting, ready, finished or going."""
    states = st.sampled_from(["starting", "ready", "ready", "done"])
    hashes = st.sampled_from([CURRENT, CURRENT, "before", "long-before", None])
    count = draw(st.integers(0, 12))
    pods = tuple(
        warm(
            f"p{i}",
            recipe_hash=draw(hashes),
            minute=draw(st.integers(0, 59)),
            ready=(state := draw(states)) == "ready",
            done=state == "done",
            deleting=draw(st.booleans()) and draw(st.booleans()),
        )
        for i in range(count)
    )
    fence = draw(st.sampled_from([FENCED, None, ChildSummary(FENCED.name, "stale")]))
    return Scene(draw(st.integers(0, 10)), pods, draw(st.integers(0, 3)), fence)


def plan_of(scene: Scene) -> PoolPlan:
    observed = PoolObserved(RECIPE, scene.pods, fence=scene.fence, starting=scene.starting)
    return decide_pool(pool(scene.replicas), observed, OperatorDefaults(), at(60))


def left(scene: Scene, plan: PoolPlan) -> list[WarmPod]:
    gone = set(deleted(plan))
    return [pod for pod in scene.pods if not pod.deleting and pod.name not in gone]


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_ready_pods_never_drop_below_what_the_pool_needs_and_had(scene: Scene) -> None:
    plan = plan_of(scene)
    before = sum(pod.ready for pod in scene.pods if not pod.deleting)
    after = sum(pod.ready for pod in left(scene, plan))
    assert after >= min(scene.replicas, before)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_creates_only_below_replicas_and_never_beyond_the_surge(scene: Scene) -> None:
    plan = plan_of(scene)
    count = created(plan)
    if count == 0:
        return
    remaining = left(scene, plan)
    current = sum(pod.recipe_hash == CURRENT for pod in remaining)
    assert current + scene.starting < scene.replicas
    assert current + scene.starting + count <= scene.replicas
    assert len(remaining) + scene.starting + count <= scene.replicas + surge(scene.replicas)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_deletes_each_pod_at_most_once_and_never_one_already_going(scene: Scene) -> None:
    names = deleted(plan_of(scene))
    assert not [name for name, times in Counter(names).items() if times > 1]
    going = {pod.name for pod in scene.pods if pod.deleting}
    assert going.isdisjoint(names)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_fence_comes_first_whenever_it_is_missing_or_stale(scene: Scene) -> None:
    actions = plan_of(scene).actions
    fences = [index for index, action in enumerate(actions) if isinstance(action, ApplyFence)]
    assert fences == ([0] if scene.fence is not FENCED else [])
    if fences:
        first = actions[0]
        assert isinstance(first, ApplyFence) and first.replace == (scene.fence is not None)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_pool_at_rest_is_full_or_waiting_for_a_pod_to_become_ready(scene: Scene) -> None:
    plan = plan_of(scene)
    if any(not isinstance(action, ApplyFence) for action in plan.actions):
        return
    live = [pod for pod in scene.pods if not pod.deleting]
    current = [pod for pod in live if pod.recipe_hash == CURRENT]
    settled = len(current) == scene.replicas and len(live) == len(current) and all(pod.ready for pod in current)
    waiting = scene.starting > 0 or any(not pod.ready for pod in current)
    assert settled or waiting, scene
    assert (ready_condition(plan) == ("True", "Filled")) == settled


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_status_counts_the_current_pods_left(scene: Scene) -> None:
    plan = plan_of(scene)
    current = [pod for pod in left(scene, plan) if pod.recipe_hash == CURRENT and not pod.done]
    assert plan.status["replicas"] == len(current) <= scene.replicas
    assert plan.status["readyReplicas"] == sum(pod.ready for pod in current)
    assert plan.status["selector"] == render.warm_selector(POOL)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_missing_template_deletes_every_live_pod_and_creates_nothing(scene: Scene) -> None:
    observed = PoolObserved(None, scene.pods, fence=scene.fence, starting=scene.starting)
    plan = decide_pool(pool(scene.replicas), observed, OperatorDefaults(), at(60))
    assert sorted(deleted(plan)) == sorted(pod.name for pod in scene.pods if not pod.deleting)
    assert len(plan.actions) == len(deleted(plan))
    assert ready_condition(plan) == ("False", "TemplateNotFound")
