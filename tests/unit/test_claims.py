"""Warm pods and claims: a warm pod is exactly the pod a Sandbox of its template would start, a claim patch turns it
into that Sandbox's pod, and the Sandbox's decision then leaves it alone; a pod of an earlier template is kept."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import Lifetime, OperatorDefaults, PodRecipe, SandboxStatus, load_sandbox
from sandbox_operator.k8s.manifest import manifest_hash, owned_view
from sandbox_operator.pool import render as pool_render
from sandbox_operator.pool.decide import WarmPod
from sandbox_operator.pool.warm import Warm, claim_patch, pool_of_member
from sandbox_operator.sandbox.decide import DeleteChild, DeleteSandbox, Plan, PodSummary, decide
from sandbox_operator.sandbox.render import Claimed, owning_sandbox, recipe_hash, render_pod
from tests.unit import strategies
from tests.unit.builders import at, children, running_pod, sandbox
from tests.unit.template_builders import (
    NAMESPACE,
    POOL,
    merge_patch,
    recipe,
    templated,
    templated_body,
    warm_pod_body,
)

PLATFORM = OperatorDefaults(
    node_selector={"sandbox.example/pool": "untrusted"},
    tolerations=({"key": "untrusted", "operator": "Exists", "effect": "NoSchedule"},),
)
recipes = strategies.specs().map(
    lambda spec: PodRecipe.model_validate({k: v for k, v in spec.items() if k != "suspended"})
)


def ready(plan: Plan) -> dict[str, Any]:
    return next(cond for cond in plan.status["conditions"] if cond["type"] == c.ConditionType.READY)


@settings(max_examples=40, deadline=None)
@given(recipes, st.sampled_from([OperatorDefaults(), PLATFORM]))
def test_warm_pod_spec_is_the_spec_of_a_sandbox_of_the_template(
    template: PodRecipe, defaults: OperatorDefaults
) -> None:
    sandbox_spec = render_pod(templated(template, defaults=defaults))["spec"]
    warm_spec = pool_render.warm_pod_spec(template, defaults)
    if template.workspace.persistent:  # the sandbox mounts its own claim: no pool can serve it
        assert sandbox_spec != warm_spec and recipe_hash(sandbox_spec) != recipe_hash(warm_spec)
    else:
        assert sandbox_spec == warm_spec and recipe_hash(sandbox_spec) == recipe_hash(warm_spec)


def test_sandbox_lifetime_does_not_change_the_pod_it_may_claim() -> None:
    template = recipe(args=["-m", "http.server"])
    plain = render_pod(templated(template))["spec"]
    strict = render_pod(templated(template, {"lifetime": {"ttlSeconds": 60, "onExpiry": "Suspend"}}))["spec"]
    assert (
        recipe_hash(plain)
        == recipe_hash(strict)
        == recipe_hash(pool_render.warm_pod_spec(template, OperatorDefaults()))
    )


def test_warm_pod_carries_pool_labels_owner_and_recipe_hash() -> None:
    pod = warm_pod_body(recipe())
    meta = pod["metadata"]
    assert meta["labels"][c.LABEL_POOL] == POOL
    assert meta["labels"][c.LABEL_RECIPE_HASH] == recipe_hash(pod["spec"])
    assert c.LABEL_SANDBOX not in meta["labels"]
    assert [(ref["kind"], ref["name"], ref["controller"]) for ref in meta["ownerReferences"]] == [
        (c.POOL_KIND, POOL, True)
    ]
    assert pool_of_member(pod) == POOL
    assert owning_sandbox(pod) is None


def claim(
    template: PodRecipe, defaults: OperatorDefaults | None = None, **spec: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The Sandbox, the claim patch and the warm pod after the API server applied it."""
    sbx = templated(template, spec or None, defaults)
    warm_body = warm_pod_body(template, defaults=defaults)
    warm = WarmPod.from_body(warm_body)
    patch = claim_patch(warm, render_pod(sbx), POOL)
    return sbx, patch, merge_patch(warm_body, patch)


def test_claim_patch_is_guarded_drops_the_recipe_hash_and_hands_the_pod_over() -> None:
    sbx, patch, _ = claim(recipe())
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "4711"
    assert meta["labels"][c.LABEL_RECIPE_HASH] is None
    assert meta["labels"][c.LABEL_POOL] == POOL
    assert meta["labels"][c.LABEL_SANDBOX] == sbx.name
    assert [(ref["kind"], ref["name"], ref["uid"]) for ref in meta["ownerReferences"]] == [(c.KIND, sbx.name, sbx.uid)]
    claimed = render_pod(sbx, Claimed("python-warm-x7k2p", POOL))
    assert meta["annotations"] == {c.ANNOTATION_SPEC_HASH: manifest_hash(claimed)}
    assert "spec" not in patch  # a pod's spec is immutable: the claim only relabels


def test_claimed_pod_is_the_sandboxs_and_no_longer_the_pools() -> None:
    sbx, _, pod = claim(recipe())
    assert c.LABEL_RECIPE_HASH not in pod["metadata"]["labels"]
    assert owning_sandbox(pod) == sbx.name
    assert pool_of_member(pod) is None
    assert pod["metadata"]["name"] == "python-warm-x7k2p"


# Templates whose lifetime leaves the sandbox running at the moment decided at, and that a pool may serve.
poolable = recipes.filter(lambda template: not template.workspace.persistent).map(
    lambda template: template.model_copy(update={"lifetime": Lifetime()})
)


@settings(max_examples=15, deadline=None)
@given(poolable, st.sampled_from([OperatorDefaults(), PLATFORM]))
def test_claimed_pod_needs_nothing_more_and_is_ready_warm(template: PodRecipe, defaults: OperatorDefaults) -> None:
    sbx, _, pod = claim(template, defaults)
    plan = decide(sbx, children(sbx, PodSummary.from_body(pod)), at(10))
    assert plan.actions == ()
    assert (plan.status["phase"], plan.status["launch"], plan.status["podName"]) == (
        "Ready",
        "Warm",
        "python-warm-x7k2p",
    )
    assert plan.status["templateHash"] == recipe_hash(pool_render.warm_pod_spec(template, defaults))


def test_relabelled_claimed_pod_is_replaced_as_tampered() -> None:
    sbx, _, pod = claim(recipe())
    pod["metadata"]["labels"]["team"] = "other"
    plan = decide(sbx, children(sbx, PodSummary.from_body(pod)), at(10))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, "python-warm-x7k2p", repair=True),)
    assert ready(plan)["reason"] == c.Reason.POD_TAMPERED


def test_pod_made_cold_reports_launch_cold() -> None:
    sbx = templated(recipe())
    plan = decide(sbx, children(sbx, running_pod(sbx)), at(10))
    assert (plan.actions, plan.status["launch"]) == ((), "Cold")
    assert plan.status["templateHash"] == recipe_hash(render_pod(sbx)["spec"])


def test_sandbox_written_out_in_full_reports_no_template_hash() -> None:
    sbx = sandbox()
    plan = decide(sbx, children(sbx, running_pod(sbx)), at(10))
    assert "templateHash" not in plan.status and plan.status["launch"] == "Cold"


# --- A pod made from an earlier version of the template --------------------------------------------------------------

OLD, NEW = recipe(image="python:3.12-slim"), recipe(image="python:3.13-slim")


def pod_of_old_template() -> tuple[Any, PodSummary, str]:
    """The Sandbox as it reads after its template was edited, its pod made from the earlier version, and the hash of
    that version's recipe (which the status recorded then)."""
    before = templated(OLD)
    old_hash = recipe_hash(render_pod(before)["spec"])
    return templated(NEW, status={"templateHash": old_hash}), running_pod(before), old_hash


def test_template_edit_keeps_the_running_pod_and_its_template_hash() -> None:
    after, pod, old_hash = pod_of_old_template()
    plan = decide(after, children(after, pod), at(10))
    assert plan.actions == ()
    assert plan.status["phase"] == "Ready"
    assert plan.status["templateHash"] == old_hash != recipe_hash(render_pod(after)["spec"])


def test_pod_of_old_template_is_still_replaced_when_relabelled() -> None:
    after, pod, _ = pod_of_old_template()
    manifest = render_pod(templated(OLD))
    manifest["metadata"]["labels"][c.LABEL_SANDBOX] = "someone-else"
    plan = decide(after, children(after, replace(pod, owned=owned_view(manifest))), at(10))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, pod.name, repair=True),)


def test_pod_of_old_template_is_replaced_once_the_sandbox_resumes() -> None:
    after, pod, _ = pod_of_old_template()
    suspended = templated(NEW, {"suspended": True})
    assert decide(suspended, children(suspended, pod), at(10)).actions == (DeleteChild(c.ChildKind.POD, pod.name),)
    resumed = decide(after, children(after, None), at(20))
    assert [action.manifest["spec"]["containers"][0]["image"] for action in resumed.actions] == ["python:3.13-slim"]


def test_sandbox_written_out_in_full_still_replaces_its_pod_on_a_spec_change() -> None:
    pod = running_pod(sandbox())
    changed = sandbox({"image": "python:3.13-slim"})
    assert decide(changed, children(changed, pod), at(10)).actions == (DeleteChild(c.ChildKind.POD, pod.name),)


# --- The template goes away ------------------------------------------------------------------------------------------


def missing_template(status: dict[str, Any] | None = None, **spec: Any) -> Any:
    raw = templated_body(spec or None)
    if status is not None:
        raw["status"] = status
    return load_sandbox(raw, template=None)


def test_sandbox_waits_for_a_template_that_does_not_exist_yet() -> None:
    plan = decide(missing_template(), children(templated(recipe())), at(0))
    assert plan.actions == ()
    assert plan.status["phase"] == "Pending"
    assert (ready(plan)["status"], ready(plan)["reason"]) == ("False", "TemplateNotFound")


def test_running_sandbox_whose_template_was_deleted_keeps_its_pod_until_its_deadline() -> None:
    deadline = at(600)
    status = SandboxStatus(phase=c.SandboxPhase.READY, expires_at=deadline, pod_name="sbx-demo").to_dict()
    before = decide(missing_template(status), children(templated(recipe())), at(300))
    assert before.actions == ()
    assert before.requeue_at == deadline
    assert "the running pod is kept" in ready(before)["message"]
    after = decide(missing_template(status), children(templated(recipe())), at(601))
    assert after.actions == (DeleteSandbox(),)


def test_template_gone_past_deadline_does_not_delete_a_sandbox_that_suspends_on_expiry() -> None:
    status = SandboxStatus(phase=c.SandboxPhase.READY, expires_at=at(600)).to_dict()
    sbx = missing_template(status, lifetime={"ttlSeconds": 600, "onExpiry": "Suspend"})
    plan = decide(sbx, children(templated(recipe())), at(601))
    assert DeleteSandbox() not in plan.actions


# --- The pods a claim may take ---------------------------------------------------------------------------------------


def test_pods_being_claimed_are_not_offered_again() -> None:
    warm = Warm()
    key = (NAMESPACE, POOL)
    for name in ("a", "b"):
        warm.put_member(key, f"uid-{name}", WarmPod(name, "h", ready=True))
    warm.claiming.add((NAMESPACE, "a"))
    assert [pod.name for pod in warm.pods(key)] == ["b"]
    warm.claiming.clear()
    warm.remove_member(key, "a")
    warm.remove_member(key, "b")
    assert warm.pods(key) == [] and key not in warm.members


def test_only_valid_templates_have_a_recipe_and_pools_are_found_by_template() -> None:
    warm = Warm()
    warm.templates.put((NAMESPACE, "python"), "uid-1", recipe())
    warm.templates.put((NAMESPACE, "broken"), "uid-2", "spec.image: Field required")
    warm.pool_templates.update({(NAMESPACE, "b"): "python", (NAMESPACE, "a"): "python", ("other", "c"): "python"})
    assert warm.recipe(NAMESPACE, "python") == recipe()
    assert warm.recipe(NAMESPACE, "broken") is None
    assert warm.pools_of(NAMESPACE, "python") == ["a", "b"]


def test_pod_with_pool_label_but_another_controller_is_no_member() -> None:
    pod = warm_pod_body(recipe())
    pod["metadata"]["labels"][c.LABEL_POOL] = "another-pool"
    assert pool_of_member(pod) is None


def test_claimed_pod_whose_pool_label_was_removed_is_still_its_child_and_is_replaced() -> None:
    sbx, _, pod = claim(recipe())
    assert owning_sandbox(pod) == "demo"
    del pod["metadata"]["labels"][c.LABEL_POOL]  # it left the fence: it must not be lost from sight
    assert owning_sandbox(pod) == "demo"
    plan = decide(sbx, children(sbx, PodSummary.from_body(pod)), at(10))
    assert plan.actions == (DeleteChild(c.ChildKind.POD, "python-warm-x7k2p", repair=True),)
    assert ready(plan)["reason"] == c.Reason.POD_TAMPERED


def test_an_object_other_than_a_pod_named_otherwise_is_no_sandboxs_child() -> None:
    _, _, pod = claim(recipe())
    policy = {"metadata": {**pod["metadata"], "name": "someone-elses"}, "spec": {"podSelector": {}}}
    assert owning_sandbox(policy) is None


def test_warm_pod_summary_reads_readiness_failure_and_deletion() -> None:
    pod = warm_pod_body(recipe())
    assert WarmPod.from_body(pod) == WarmPod(
        name="python-warm-x7k2p",
        recipe_hash=recipe_hash(pod["spec"]),
        ready=True,
        created="2025-01-01T12:00:00Z",
        resource_version="4711",
    )
    assert not WarmPod.from_body(warm_pod_body(recipe(), ready=False)).ready
    pod["status"]["phase"] = "Failed"
    assert (WarmPod.from_body(pod).ready, WarmPod.from_body(pod).done) == (False, True)
    pod["metadata"]["deletionTimestamp"] = "2025-01-01T12:01:00Z"
    assert WarmPod.from_body(pod).deleting
