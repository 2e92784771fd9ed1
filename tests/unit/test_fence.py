"""The namespace fence (sandbox.fence): it selects every sandbox pod, allows nothing, and counts only as the watch shows
it rendered; its name is no other object's of the operator's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.manifest import bounded_name
from sandbox_operator.pool.render import fence_name
from sandbox_operator.sandbox import fence
from sandbox_operator.sandbox.render import Claimed, child_name, render_network_policy, render_pod
from tests.unit import strategies
from tests.unit.builders import sandbox

NAMESPACE = "tenant-a"


@pytest.fixture(autouse=True)
def empty_store() -> Iterator[None]:
    fence.FENCES.items.clear()
    metrics.NAMESPACE_FENCED.clear()
    yield
    fence.FENCES.items.clear()
    metrics.NAMESPACE_FENCED.clear()


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector's meaning (matchLabels and the Exists / DoesNotExist / In / NotIn expressions)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        held = {"Exists": key in labels, "DoesNotExist": key not in labels,
                "In": labels.get(key) in values, "NotIn": labels.get(key) not in values}[operator]
        if not held:
            return False
    return True


def as_served(manifest: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """The manifest as the API server hands it back: empty rule lists left out, server fields added."""
    spec = {key: value for key, value in manifest["spec"].items() if value != []}
    metadata = {**manifest["metadata"], "uid": "f-1", "resourceVersion": "7", "generation": 1,
                "creationTimestamp": "2025-01-01T12:00:00Z"}
    return {**manifest, "metadata": metadata, "spec": {**spec, **changes}}


@settings(max_examples=60, deadline=None)
@given(spec=strategies.specs(), name=st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True))
def test_the_fence_selects_every_sandbox_pod_cold_or_claimed_and_whatever_its_own_policy_selects(
    spec: dict[str, Any], name: str
) -> None:
    sbx = sandbox(spec, name=name)
    selector = fence.render_fence(NAMESPACE)["spec"]["podSelector"]
    for pod in (render_pod(sbx), render_pod(sbx, Claimed(f"warm-{name}", "warm"))):
        assert selects(selector, pod["metadata"]["labels"])
    own = render_network_policy(sbx)["spec"]["podSelector"]["matchLabels"]
    assert selects(selector, own)  # every pod the sandbox's own policy could select


def test_the_fence_allows_nothing_either_way_and_selects_no_other_pod() -> None:
    spec = fence.render_fence(NAMESPACE)["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert not spec.get("ingress") and not spec.get("egress")
    selector = spec["podSelector"]
    assert not selects(selector, {})  # the operator's own pods, the MCP server's, the namespace's other workloads
    assert not selects(selector, {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_POOL: "warm"})  # a warm pod: its pool's
    assert not selects(selector, {c.LABEL_SANDBOX: "x"})  # not the operator's label


@given(name=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,250}[a-z0-9])?", fullmatch=True))
def test_no_other_object_of_the_operator_can_hold_the_fence_name(name: str) -> None:
    taken = {child_name(name), child_name(name, c.WORKSPACE_PVC_SUFFIX), fence_name(name),
             bounded_name(name, c.POOL_FENCE_SUFFIX), c.TENANT_NETWORK_POLICY_NAME}
    assert c.NAMESPACE_FENCE_NAME not in taken


def fence_listener() -> watch.Listener:
    return next(x for x in watch.FOLLOWED.listeners[watch.NETWORK_POLICIES] if x.wants is fence.is_fence)


def event(event_type: str | None, manifest: Mapping[str, Any]) -> None:
    listener = fence_listener()
    assert listener.wants(manifest)
    listener.changed(event_type, manifest)


def gauge(namespace: str) -> float | None:
    """``sandbox_operator_namespace_fenced`` of the namespace; None when it has no sample."""
    return metrics.REGISTRY.get_sample_value("sandbox_operator_namespace_fenced", {"namespace": namespace})


def test_a_namespace_is_fenced_only_while_the_watch_shows_the_fence_as_rendered_and_the_gauge_says_so() -> None:
    rendered = fence.render_fence(NAMESPACE)
    assert not fence.fenced(NAMESPACE) and gauge(NAMESPACE) is None
    event(None, as_served(rendered))  # a listing
    assert fence.fenced(NAMESPACE) and gauge(NAMESPACE) == 1
    assert not fence.fenced("tenant-b") and gauge("tenant-b") is None  # per namespace

    opened = as_served(rendered, ingress=[{}])  # an empty rule allows everything in
    event("MODIFIED", opened)
    assert not fence.fenced(NAMESPACE) and gauge(NAMESPACE) == 0
    event("MODIFIED", as_served(rendered, podSelector={"matchLabels": {c.LABEL_SANDBOX: "other"}}))
    assert not fence.fenced(NAMESPACE) and gauge(NAMESPACE) == 0
    event("MODIFIED", as_served(rendered))
    assert fence.fenced(NAMESPACE) and gauge(NAMESPACE) == 1

    event("MODIFIED", as_served(rendered))
    event("DELETED", as_served(rendered))
    assert not fence.fenced(NAMESPACE) and gauge(NAMESPACE) is None
    event("DELETED", as_served(rendered))  # its echo, or a DELETED after a relisting dropped it: nothing to remove
    assert gauge(NAMESPACE) is None


def test_a_relisting_without_the_fence_takes_it_out_of_the_gauge() -> None:
    event(None, as_served(fence.render_fence(NAMESPACE)))
    event(None, as_served(fence.render_fence("tenant-b")))
    assert gauge(NAMESPACE) == 1 and gauge("tenant-b") == 1
    fence_listener().relisted(NAMESPACE, set())  # deleted while the watch was broken: no DELETED event came
    assert not fence.fenced(NAMESPACE) and gauge(NAMESPACE) is None
    assert gauge("tenant-b") == 1  # out of that listing's scope


def test_another_namespaces_fence_does_not_count() -> None:
    event(None, as_served(fence.render_fence("tenant-b")))
    assert fence.fenced("tenant-b") and not fence.fenced(NAMESPACE)



def test_the_fence_is_not_made_before_the_network_policies_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """At a start the NetworkPolicies are listed last: until they are, the fence is not known (most likely it is
    there), and a new Sandbox's pod goes policy-first instead of the operator writing a fence blind."""
    followed = watch.Followed()
    followed.listen(watch.NETWORK_POLICIES, watch.Listener(wants=lambda body: True, changed=lambda kind, body: None))
    monkeypatch.setattr(watch, "FOLLOWED", followed)
    monkeypatch.setattr(fence, "_NEXT", {})
    spawned: list[Any] = []
    monkeypatch.setattr(watch, "spawn", lambda coro: spawned.append(coro.close()))

    async def scenario() -> None:
        fence.ensure(None, "team-a")  # type: ignore[arg-type]
        assert not spawned and not fence.fenced("team-a")
        watch._current(watch.NETWORK_POLICIES).set()  # listed
        fence.ensure(None, "team-a")  # type: ignore[arg-type]
        assert len(spawned) == 1

    asyncio.run(scenario())
