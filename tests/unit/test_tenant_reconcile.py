"""The Tenant decision: create, keep current, grant access only once the quota is enforced, report usage."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import status_changed
from sandbox_operator.api.tenant import TenantStatus, load_tenant
from sandbox_operator.k8s.manifest import ChildSummary
from sandbox_operator.tenant.decide import (
    ApplyObject,
    CreateObject,
    NamespaceSummary,
    QuotaSummary,
    TenantObserved,
    TenantPlan,
    decide_tenant,
    decide_tenant_safely,
)
from sandbox_operator.tenant.render import (
    render_default_deny,
    render_namespace,
    render_resource_quota,
    render_role_binding,
)
from tests.unit.builders import CREATED
from tests.unit.tenant_builders import computed_quota, provisioned, tenant, tenant_body


def kinds(plan: TenantPlan) -> list[str]:
    return [action.manifest["kind"] for action in plan.actions]


def bindings(plan: TenantPlan) -> list[str]:
    return [action.manifest["metadata"]["name"] for action in plan.actions if action.manifest["kind"] == "RoleBinding"]


def ready(plan: TenantPlan) -> tuple[str, str]:
    [condition] = plan.status["conditions"]
    return condition["status"], condition["reason"]


def test_a_new_tenant_gets_everything_but_access_first() -> None:
    plan = decide_tenant(tenant(), TenantObserved(), CREATED)
    assert isinstance(plan.actions[0], CreateObject)
    assert kinds(plan) == [
        "Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "ValidatingAdmissionPolicyBinding"
    ]
    assert ready(plan) == ("False", c.TenantReason.PROVISIONING)
    assert plan.requeue_at is not None


def test_access_waits_for_the_quota_status() -> None:
    t = tenant()
    uncomputed = QuotaSummary.from_body(render_resource_quota(t))
    plan = decide_tenant(t, provisioned(t, quota=uncomputed, role_binding=None), CREATED)
    assert kinds(plan) == []
    assert ready(plan) == ("False", c.TenantReason.WAITING_FOR_QUOTA)


def test_access_waits_until_the_quota_controller_counted_sandboxes() -> None:
    t = tenant()
    quota = computed_quota(t)
    partial = QuotaSummary(quota.spec_hash, quota.status_hard, {k: v for k, v in (quota.used or {}).items()
                                                                 if k != c.QUOTA_SANDBOXES})
    assert kinds(decide_tenant(t, provisioned(t, quota=partial, role_binding=None), CREATED)) == []


def test_access_is_granted_once_the_quota_is_computed_and_the_policy_bound() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t, role_binding=None), CREATED)
    assert kinds(plan) == ["RoleBinding"]
    assert isinstance(plan.actions[0], ApplyObject)


def test_access_is_not_granted_before_the_policy_binding_exists() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t, role_binding=None, policy_binding=None), CREATED)
    assert kinds(plan) == ["ValidatingAdmissionPolicyBinding"]


def test_access_waits_until_the_api_server_enforces_the_policy() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t, role_binding=None, policy_enforced=False), CREATED)
    assert kinds(plan) == []
    assert ready(plan) == ("False", c.TenantReason.WAITING_FOR_POLICY)
    assert plan.requeue_at is not None


def test_exec_binding_is_applied_together_with_first_access() -> None:
    t = tenant({"execAccess": True})
    plan = decide_tenant(t, provisioned(t, role_binding=None, exec_role_binding=None), CREATED)
    assert bindings(plan) == [c.TENANT_ROLE_BINDING_NAME, c.TENANT_EXEC_ROLE_BINDING_NAME]
    assert plan.actions[-1].manifest["subjects"] == render_role_binding(t)["subjects"]


def test_exec_binding_waits_for_access_like_the_main_binding() -> None:
    t = tenant({"execAccess": True})
    uncomputed = QuotaSummary.from_body(render_resource_quota(t))
    for waiting in (provisioned(t, role_binding=None, exec_role_binding=None, policy_enforced=False),
                    provisioned(t, role_binding=None, exec_role_binding=None, quota=uncomputed)):
        assert bindings(decide_tenant(t, waiting, CREATED)) == []
    assert bindings(decide_tenant(t, TenantObserved(), CREATED)) == []


def test_a_tenant_with_access_but_no_exec_binding_gets_one() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t, exec_role_binding=None), CREATED)
    assert bindings(plan) == [c.TENANT_EXEC_ROLE_BINDING_NAME]
    assert plan.actions[0].manifest["subjects"] == []
    assert ready(plan) == ("True", c.TenantReason.PROVISIONED)


def test_turning_exec_access_on_and_off_updates_only_the_exec_binding() -> None:
    off, on = tenant(), tenant({"execAccess": True})
    granted = decide_tenant(on, provisioned(off, namespace=provisioned(on).namespace), CREATED)
    assert bindings(granted) == [c.TENANT_EXEC_ROLE_BINDING_NAME] and kinds(granted) == ["RoleBinding"]
    assert granted.actions[0].manifest["subjects"] == render_role_binding(on)["subjects"]
    assert "run commands in its pods" in granted.status["conditions"][0]["message"]
    revoked = decide_tenant(off, provisioned(on, namespace=provisioned(off).namespace), CREATED)
    assert bindings(revoked) == [c.TENANT_EXEC_ROLE_BINDING_NAME] and kinds(revoked) == ["RoleBinding"]
    assert revoked.actions[0].manifest["subjects"] == []


def test_turning_exec_access_off_is_not_held_back_while_the_main_binding_waits() -> None:
    off, on = tenant(), tenant({"execAccess": True})
    observed = provisioned(on, namespace=provisioned(off).namespace, role_binding=None, policy_enforced=False)
    plan = decide_tenant(off, observed, CREATED)
    assert bindings(plan) == [c.TENANT_EXEC_ROLE_BINDING_NAME]
    assert plan.actions[0].manifest["subjects"] == []


def test_a_subject_change_reaches_the_exec_binding_when_exec_access_is_on() -> None:
    before = tenant({"execAccess": True})
    after = tenant({"execAccess": True, "subjects": [{"kind": "User", "name": "ann"}]})
    plan = decide_tenant(after, provisioned(before, namespace=provisioned(after).namespace), CREATED)
    assert bindings(plan) == [c.TENANT_ROLE_BINDING_NAME, c.TENANT_EXEC_ROLE_BINDING_NAME]
    assert plan.actions[-1].manifest["subjects"] == [
        {"kind": "User", "name": "ann", "apiGroup": "rbac.authorization.k8s.io"}
    ]


def test_a_provisioned_tenant_needs_nothing_and_reports_usage() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t, quota=computed_quota(t, {c.QUOTA_SANDBOXES: "3", "limits.cpu": "1500m"})),
                         CREATED)
    assert plan.actions == () and plan.requeue_at is None
    assert ready(plan) == ("True", c.TenantReason.PROVISIONED)
    assert plan.status["usage"]["sandboxes"] == {"used": "3", "hard": "10"}
    assert plan.status["usage"]["cpu"] == {"used": "1500m", "hard": "8"}
    assert "gpus" not in plan.status["usage"]
    assert plan.status["namespace"] == "team-a" and plan.status["observedGeneration"] == 2


def test_a_quota_edit_is_applied_while_access_stays() -> None:
    before, after = tenant(), tenant({"quota": {"maxSandboxes": 20}})
    plan = decide_tenant(after, provisioned(before), CREATED)
    [action] = plan.actions
    assert action.manifest["spec"]["hard"][c.QUOTA_SANDBOXES] == "20"
    assert ready(plan) == ("True", c.TenantReason.PROVISIONED)


def test_a_deleted_role_binding_is_put_back() -> None:
    t = tenant()
    assert kinds(decide_tenant(t, provisioned(t, role_binding=None), CREATED)) == ["RoleBinding"]


def test_a_subject_change_updates_the_role_binding() -> None:
    before, after = tenant(), tenant({"subjects": [{"kind": "User", "name": "ann"}]})
    plan = decide_tenant(after, provisioned(before, namespace=provisioned(after).namespace), CREATED)
    assert kinds(plan) == ["RoleBinding"]


def test_a_namespace_of_someone_else_is_never_adopted() -> None:
    t = tenant()
    foreign = NamespaceSummary(name="team-a", owner_uids=())
    plan = decide_tenant(t, TenantObserved(namespace=foreign), CREATED)
    assert plan.actions == ()
    assert ready(plan) == ("False", c.TenantReason.NAMESPACE_CONFLICT)
    assert "never adopted" in plan.status["conditions"][0]["message"]


def test_a_terminating_namespace_is_waited_for() -> None:
    t = tenant()
    ns = NamespaceSummary.from_body({**render_namespace(t), "status": {"phase": "Terminating"}})
    plan = decide_tenant(t, TenantObserved(namespace=ns), CREATED)
    assert plan.actions == () and ready(plan) == ("False", c.TenantReason.NAMESPACE_TERMINATING)


def test_an_invalid_tenant_is_reported_and_nothing_is_done() -> None:
    loaded = load_tenant(tenant_body({"quota": {}}))
    plan = decide_tenant(loaded, TenantObserved(), CREATED)
    assert plan.actions == ()
    assert ready(plan) == ("False", c.TenantReason.INVALID_SPEC)
    assert "spec.quota.maxSandboxes" in plan.status["conditions"][0]["message"]


def test_a_refused_write_is_reported() -> None:
    plan = decide_tenant(tenant(), TenantObserved(apply_error="apply RoleBinding: 403 forbidden"), CREATED)
    assert ready(plan) == ("False", c.TenantReason.APPLY_FAILED)


def test_status_is_written_only_when_it_changed() -> None:
    t = tenant()
    plan = decide_tenant(t, provisioned(t), CREATED)
    assert not status_changed(TenantStatus, plan.status, plan.status)
    later = decide_tenant(load_tenant(tenant_body(status=plan.status)), provisioned(t), CREATED.replace(hour=13))
    assert later.status == plan.status  # the transition time is kept
    assert status_changed(TenantStatus, {}, plan.status)


def _tampered(manifest: dict[str, Any], change: Any) -> ChildSummary:
    body = copy.deepcopy(manifest)
    change(body)
    return ChildSummary.from_body(body)


def test_objects_someone_else_changed_are_applied_again_as_repairs() -> None:
    t = tenant()
    extra_subject = _tampered(render_role_binding(t), lambda b: b["subjects"].append(
        {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}))
    opened = _tampered(render_default_deny(t), lambda b: b["spec"].__setitem__("ingress", [{}]))
    namespace = copy.deepcopy(render_namespace(t))
    namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    plan = decide_tenant(
        t,
        provisioned(
            t, role_binding=extra_subject, network_policy=opened, namespace=NamespaceSummary.from_body(namespace)
        ),
        CREATED,
    )
    assert [(a.manifest["kind"], a.repair) for a in plan.actions if isinstance(a, ApplyObject)] == [
        ("Namespace", True), ("NetworkPolicy", True), ("RoleBinding", True)
    ]


def test_a_repair_made_moments_ago_waits_for_its_turn() -> None:
    t = tenant()
    opened = _tampered(render_default_deny(t), lambda b: b["spec"].__setitem__("egress", [{}]))
    observed = replace(provisioned(t, network_policy=opened),
                       held={c.TenantChildKind.NETWORK_POLICY: CREATED + timedelta(seconds=8)})
    plan = decide_tenant(t, observed, CREATED)
    assert plan.actions == ()
    assert plan.requeue_at == CREATED + timedelta(seconds=8)


def test_a_refused_apply_keeps_the_usage_in_status() -> None:
    t = tenant()
    observed = replace(provisioned(t), apply_error="apply ResourceQuota: 422 invalid")
    plan = decide_tenant(t, observed, CREATED)
    assert ready(plan) == ("False", c.TenantReason.APPLY_FAILED)
    assert plan.status["usage"] == decide_tenant(t, provisioned(t), CREATED).status["usage"]


def test_a_tenant_decision_that_raises_is_reported_not_swallowed() -> None:
    def broken() -> TenantPlan:
        raise KeyError("spec")

    plan, error = decide_tenant_safely(tenant_body(), broken, CREATED)
    assert isinstance(error, KeyError)
    assert ready(plan) == ("False", c.TenantReason.RECONCILE_ERROR)
    assert plan.actions == ()
