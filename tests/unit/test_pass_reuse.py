"""A pass that created a Sandbox's children keeps the Sandbox as it loaded it and the children as it rendered them
for the next pass (the one at the pod's Ready), which decides on the same body: that pass neither loads nor renders
again. Any other input (a newer body, other defaults) loads afresh, and a pass that creates nothing keeps nothing.
And the passes around a child obtained otherwise than by a create: a claimed warm pod, a child found in place."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults
from sandbox_operator.k8s.client import KubeError
from sandbox_operator.k8s.loop import reconcile
from sandbox_operator.operator import Runtime
from sandbox_operator.pool.warm import WarmPod, claim_patch
from sandbox_operator.sandbox import handlers
from sandbox_operator.sandbox.handlers import SandboxState, _expect, _pass
from sandbox_operator.sandbox.render import render_network_policy, render_pod
from tests.unit.builders import body, sandbox
from tests.unit.template_builders import POOL, merge_patch, recipe, templated_body, warm_pod_body

SANDBOX = body()
KEY = (SANDBOX["metadata"]["namespace"], SANDBOX["metadata"]["name"])


class StoringKube:
    """Creates and status writes answered as the API server would store them."""

    def __init__(self, sandbox: dict[str, Any] = SANDBOX) -> None:
        self.sandbox = sandbox
        self.created: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.version = 10

    def _stored(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(manifest)
        stored["metadata"].update({"uid": f"uid-{manifest['kind']}", "resourceVersion": str(self.version)})
        return stored

    async def create(self, kind: c.ChildKind, manifest: dict[str, Any]) -> dict[str, Any] | None:
        stored = self._stored(manifest)
        self.created.append(stored)
        return stored

    async def patch_status(self, namespace: str, name: str, old: Any, new: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(new)
        return self._stored({**self.sandbox, "status": new})


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often a pass loaded the Sandbox and rendered its children."""
    counted = {"load": 0, "render": 0}

    def counting(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(handlers, "load_sandbox", counting("load", handlers.load_sandbox))
    monkeypatch.setattr(handlers, "render_children", counting("render", handlers.render_children))
    monkeypatch.setattr(handlers.fence, "fenced", lambda namespace: True)  # pod and policy made together
    monkeypatch.setattr(handlers.kopf, "event", lambda *args, **kwargs: None)  # no Kopf poster runs here
    yield counted


def make_ready(state: SandboxState, kube: StoringKube) -> None:
    """The pod the pass created, now running and Ready (as its watch event would show it)."""
    pod = next(child for child in kube.created if child["kind"] == "Pod")
    _expect(state, c.ChildKind.POD, {**pod, "status": {
        "phase": "Running", "podIP": "10.0.0.9", "startTime": "2025-01-01T12:00:05Z",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "sandbox", "ready": True, "state": {"running": {}}}]}})


def new_state(version: str = "5") -> SandboxState:
    state = SandboxState(uid=SANDBOX["metadata"]["uid"])
    state.remember({**SANDBOX, "metadata": {**SANDBOX["metadata"], "resourceVersion": version}})
    return state


def passes(state: SandboxState, runtime: Runtime, between: Any = None) -> None:
    async def both() -> None:
        await _pass(state, runtime, KEY)
        make_ready(state, runtime.kube)  # type: ignore[arg-type]
        if between is not None:
            between()
        await _pass(state, runtime, KEY)
    asyncio.run(both())


def test_the_pass_at_the_pods_ready_reuses_what_the_creating_pass_loaded_and_rendered(calls: dict[str, int]) -> None:
    kube, state = StoringKube(), new_state()
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]
    passes(state, runtime)
    assert sorted(child["kind"] for child in kube.created) == ["NetworkPolicy", "Pod"]
    assert [status["phase"] for status in kube.statuses] == [c.SandboxPhase.READY]  # one write: Ready
    assert calls == {"load": 1, "render": 1}
    assert state.loaded is None  # it created nothing: it keeps nothing


def test_a_newer_body_is_loaded_and_rendered_again(calls: dict[str, int]) -> None:
    kube, state = StoringKube(), new_state()
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]
    newer = {**SANDBOX, "metadata": {**SANDBOX["metadata"], "resourceVersion": "6",
                                     "annotations": {c.ANNOTATION_LAST_ACTIVITY: "2025-01-01T12:00:06Z"}}}
    passes(state, runtime, between=lambda: state.remember(newer))
    assert calls == {"load": 2, "render": 2}
    assert [status["phase"] for status in kube.statuses] == [c.SandboxPhase.READY]


def test_other_defaults_are_loaded_with(calls: dict[str, int]) -> None:
    kube, state = StoringKube(), new_state()
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]

    async def both() -> None:
        await _pass(state, runtime, KEY)
        make_ready(state, kube)
        await _pass(state, replace(runtime, defaults=OperatorDefaults(ttl_seconds=10**9)), KEY)

    asyncio.run(both())
    assert calls == {"load": 2, "render": 2}
    assert kube.statuses[-1]["expiresAt"]  # decided with the new default TTL


def test_a_refused_create_keeps_nothing(calls: dict[str, int]) -> None:
    class Refusing(StoringKube):
        async def create(self, kind: c.ChildKind, manifest: dict[str, Any]) -> dict[str, Any] | None:
            raise KubeError("create", kind, 422, "spec.containers: invalid")

    state = new_state()
    runtime = Runtime(kube=Refusing(), defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]
    asyncio.run(_pass(state, runtime, KEY))
    assert calls == {"load": 1, "render": 1}  # the refusal's own decision reuses them
    assert state.loaded is None


def test_behind_the_fence_the_pods_create_goes_out_before_its_policys(calls: dict[str, int]) -> None:
    """Created together, the pod's request first: the pod is on the way to Ready, its policy is not (the fence keeps
    the pod closed until the policy is in)."""
    kube, state = StoringKube(), new_state()
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]
    asyncio.run(_pass(state, runtime, KEY))
    assert [child["kind"] for child in kube.created] == ["Pod", "NetworkPolicy"]


def test_behind_the_fence_a_refused_policy_still_takes_the_pod_made_beside_it(calls: dict[str, int]) -> None:
    """The policy's create goes out second and is refused for good: the pod made beside it goes in the same pass (no
    pod runs on the fence alone), and the status says why."""
    class PolicyRefused(StoringKube):
        def __init__(self) -> None:
            super().__init__()
            self.deleted: list[tuple[str, str]] = []

        async def create(self, kind: c.ChildKind, manifest: dict[str, Any]) -> dict[str, Any] | None:
            if kind is c.ChildKind.NETWORK_POLICY:
                raise KubeError("create", kind, 403, "denied by an admission policy")
            return await super().create(kind, manifest)

        async def delete(self, kind: c.ChildKind, namespace: str, name: str) -> None:
            self.deleted.append((kind, name))

    kube, state = PolicyRefused(), new_state()
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]

    async def refused() -> None:
        await _pass(state, runtime, KEY)
        state.forget()  # no settle wake-up left behind

    asyncio.run(refused())
    pod = f"{c.CHILD_PREFIX}{KEY[1]}"
    assert [child["kind"] for child in kube.created] == ["Pod"]
    assert kube.deleted == [(c.ChildKind.POD, pod)]
    assert kube.statuses, "the refusal is written"
    ready = next(cond for cond in kube.statuses[-1]["conditions"] if cond["type"] == c.ConditionType.READY)
    assert (ready["status"], ready["reason"]) == ("False", "CreateRejected")
    assert f"pod {pod} is deleted" in ready["message"]


def test_a_claimed_warm_pod_is_decided_on_at_once_not_after_the_settle(
    calls: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's pass made its plan without the pod; the claimed pod's watch event is only the claim's echo, which
    starts no pass while the status settles. So another pass follows the claiming one at once, and Ready is the one
    status written, not one written after the settle time; the claiming pass's own Events (Created) are posted."""
    template = recipe()
    sandbox_body = templated_body()
    warm = warm_pod_body(template)
    kube = StoringKube(sandbox_body)

    async def claimed(kube_: Any, template_name: str, cold: dict[str, Any]) -> dict[str, Any]:
        patch = claim_patch(WarmPod.from_body(warm), cold, POOL)
        return merge_patch(warm, patch)  # type: ignore[no-any-return]

    posted: list[str] = []
    monkeypatch.setattr(handlers.kopf, "event", lambda body, **event: posted.append(event["reason"]))
    monkeypatch.setattr(handlers, "claim", claimed)
    monkeypatch.setattr(handlers.WARM, "recipe", lambda namespace, name: template)
    state = SandboxState(uid=sandbox_body["metadata"]["uid"])
    state.remember({**sandbox_body, "metadata": {**sandbox_body["metadata"], "resourceVersion": "5"}})
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0,  # type: ignore[arg-type]
                      progress_events=True)

    async def passes() -> None:
        await reconcile(state, lambda: _pass(state, runtime, KEY), what="sandbox", trigger="test")
        state.forget()  # no settle wake-up left behind

    asyncio.run(passes())
    assert [(status["phase"], status["launch"]) for status in kube.statuses] == [
        (c.SandboxPhase.READY, c.Launch.WARM)
    ]
    assert [child["kind"] for child in kube.created] == ["NetworkPolicy"]  # the pod was claimed, not created
    assert calls == {"load": 1, "render": 1}  # the second pass decided on what the first loaded
    assert posted == [c.EventReason.CREATED, c.EventReason.READY]


def test_a_repair_made_before_a_found_child_still_posts_its_event(
    calls: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass repairs a changed NetworkPolicy, then finds the pod it was about to create already there: it decides
    again with the pod, and the repair's Tampered Event is posted all the same (the next pass finds the policy as
    rendered and would never post it)."""
    sbx = sandbox()
    policy, pod = render_network_policy(sbx), render_pod(sbx)
    changed = copy.deepcopy(policy)
    changed["spec"]["egress"] = [{}]  # opened to everything, its spec hash kept

    class Finding(StoringKube):
        def __init__(self) -> None:
            super().__init__()
            self.replaced: list[str] = []

        async def create(self, kind: c.ChildKind, manifest: dict[str, Any]) -> dict[str, Any] | None:
            return None  # 409: the name is taken

        async def get_child(self, kind: c.ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
            return self._stored(pod) if kind is c.ChildKind.POD else None

        async def replace(self, kind: c.ChildKind, manifest: dict[str, Any]) -> None:
            self.replaced.append(kind)

    posted: list[str] = []
    monkeypatch.setattr(handlers.kopf, "event", lambda body, **event: posted.append(event["reason"]))
    monkeypatch.setattr(handlers.fence, "fenced", lambda namespace: False)
    monkeypatch.setattr(handlers.fence, "ensure", lambda kube, namespace: None)
    kube, state = Finding(), new_state()
    _expect(state, c.ChildKind.NETWORK_POLICY, kube._stored(changed))
    runtime = Runtime(kube=kube, defaults=OperatorDefaults(), status_settle_seconds=2.0)  # type: ignore[arg-type]
    asyncio.run(_pass(state, runtime, KEY))
    assert kube.replaced == [c.ChildKind.NETWORK_POLICY]
    assert state.dirty and kube.statuses == []  # it decides again, with the pod, before any status
    assert posted == [c.EventReason.TAMPERED]
