"""The namespace fence: one deny-all NetworkPolicy in each namespace with Sandboxes, over every sandbox pod, so a cold
pod and its own NetworkPolicy can be created together.

A Sandbox's pod never runs without a policy that denies what the Sandbox does not allow. Its own NetworkPolicy gives
that when it is created first, but then the pod waits one more API round trip: a sixth hop in series on the way to
Ready, about a fifth of a cold start in a burst (bench/fleet_hops.py). NetworkPolicies add up: a pod selected by the
fence is denied everything that no policy selecting it allows, so while its own policy is on its way the pod is
closed both ways, and once that is in, the fence changes nothing. So when the watch shows the namespace's fence as
rendered, a new Sandbox's pod is created together with its own policy (``fenced``).

If the pod's own policy is then refused (quota, admission, its name taken), the pod is deleted in the same pass
(sandbox.decide: no pod runs on the fence alone), and the Sandbox, which now has a status, goes policy-first from
then on. A policy create that fails for a while (the API server unreachable) leaves the pod behind the fence until a
retry makes the policy. The fence counts as the watch shows it: one deleted a moment before a pod is created still
counts for that pod.

The fence belongs to no Sandbox. The first new Sandbox in a namespace without it, or with it changed, makes or puts it
back in the background (``ensure``); that Sandbox's pod, and any created before the watch shows the fence, are
created after their own policy, as without a fence. Nothing waits for the fence, and nothing is less closed without
it: deleted, changed, refused by the API server or its name held by an object the operator does not manage, pods go
policy-first. It stays when the last Sandbox of its namespace goes (it selects only sandbox pods); deleting it by hand
is harmless, and the next new Sandbox there makes it again (once per ``SETTLE_SECONDS`` at most if another writer
keeps at it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.k8s import watch
from sandbox_operator.k8s.cache import Store
from sandbox_operator.k8s.client import Kube
from sandbox_operator.k8s.manifest import ChildSummary, with_spec_hash
from sandbox_operator.k8s.watch import Listener
from sandbox_operator.sandbox.decide import as_rendered

logger = logging.getLogger(__name__)

# After an attempt to make or put back a namespace's fence failed (refused, or its name held by an object the operator
# does not manage), the next waits this long; meanwhile that namespace's pods go policy-first.
RETRY_SECONDS = 60.0
# After one succeeded, the next waits this long: the watch shows the fence by then (a burst's passes that come before
# its event must not make it again, or take the 409 of their own fence for somebody else's object), and a writer that
# keeps changing or deleting it gets one put-back per this long at most.
SETTLE_SECONDS = 5.0


def pod_selector() -> dict[str, Any]:
    """Every sandbox pod, cold or claimed from a pool: the operator's label and a sandbox label."""
    return {
        "matchLabels": {c.LABEL_MANAGED_BY: c.MANAGED_BY},
        "matchExpressions": [{"key": c.LABEL_SANDBOX, "operator": "Exists"}],
    }


def render_fence(namespace: str) -> dict[str, Any]:
    """The namespace's fence: a NetworkPolicy over every sandbox pod there that allows nothing either way."""
    return with_spec_hash(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": c.NAMESPACE_FENCE_NAME,
                "namespace": namespace,
                "labels": {c.LABEL_NAME: c.NAME, c.LABEL_MANAGED_BY: c.MANAGED_BY},
                "annotations": {},
            },
            "spec": {"podSelector": pod_selector(), "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
        }
    )


# The fence of each namespace as the watch last showed it. The watch shows only the operator's objects (its label):
# an object of the fence's name without it is somebody else's, and never taken for the fence.
FENCES: Store[str, ChildSummary] = Store()


def is_fence(body: Mapping[str, Any]) -> bool:
    """The operator's NetworkPolicy of the fence's name."""
    return (body.get("metadata") or {}).get("name") == c.NAMESPACE_FENCE_NAME


def _changed(event_type: str | None, body: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    namespace = str(meta.get("namespace") or "")
    FENCES.record(event_type, namespace, str(meta.get("uid", "")), lambda: ChildSummary.from_body(body))
    _show(namespace)


def _relisted(namespace: str | None, uids: set[str]) -> None:
    for dropped in FENCES.retain(uids, lambda key: namespace is None or key == namespace):
        _show(dropped)


def _show(namespace: str) -> None:
    """The namespace's fence in ``sandbox_operator_namespace_fenced``, as the watch now shows it."""
    if FENCES.get(namespace) is None:
        with contextlib.suppress(KeyError):  # never shown, or shown gone already
            metrics.NAMESPACE_FENCED.remove(namespace)
    else:
        metrics.NAMESPACE_FENCED.labels(namespace).set(1.0 if fenced(namespace) else 0.0)


watch.FOLLOWED.listen(watch.NETWORK_POLICIES, Listener(wants=is_fence, changed=_changed, relisted=_relisted))


def fenced(namespace: str) -> bool:
    """Whether the watch shows the namespace's fence as rendered: a sandbox pod created there now is closed both ways
    until its own NetworkPolicy allows what its Sandbox asks."""
    return as_rendered(c.ChildKind.NETWORK_POLICY, render_fence(namespace), FENCES.get(namespace))


# namespace -> no attempt before this time.monotonic(): never while one runs, ``SETTLE_SECONDS`` after a write,
# ``RETRY_SECONDS`` after a failure. One entry per namespace that had Sandboxes.
_NEXT: dict[str, float] = {}


def ensure(kube: Kube, namespace: str) -> None:
    """Make or put back the namespace's fence in the background: one attempt at a time per namespace, none while the
    replica is paused or its NetworkPolicies are not listed (at a start they are listed last), none within
    ``SETTLE_SECONDS`` of a write or ``RETRY_SECONDS`` of a failure. Nothing waits for it."""
    now = time.monotonic()
    if now < _NEXT.get(namespace, now) or watch.paused() or not watch.kind_listed(watch.NETWORK_POLICIES):
        return  # (before the NetworkPolicies are listed, the fence is not known: most likely it is there)
    _NEXT[namespace] = math.inf
    watch.spawn(_ensure(kube, namespace))


async def _ensure(kube: Kube, namespace: str) -> None:
    rendered, live = render_fence(namespace), FENCES.items.get(namespace)
    where, wait = f"{namespace}/{c.NAMESPACE_FENCE_NAME}", SETTLE_SECONDS
    try:
        if watch.paused():
            return
        if live is not None:
            # Only the object the watch showed: one put in its place meanwhile fails the uid precondition.
            await kube.replace(c.ChildKind.NETWORK_POLICY, {**rendered, "metadata": {**rendered["metadata"],
                                                                                    "uid": live[0]}})
            logger.warning("the namespace fence NetworkPolicy %s was changed: put back", where)
        elif await kube.create(c.ChildKind.NETWORK_POLICY, rendered) is None:
            # Its name is taken by an object the watch does not show (yet): made by another replica a moment ago,
            # or somebody else's, without the operator's label.
            taken = await kube.get_child(c.ChildKind.NETWORK_POLICY, namespace, c.NAMESPACE_FENCE_NAME)
            labels = ((taken or {}).get("metadata") or {}).get("labels") or {}
            if taken is not None and labels.get(c.LABEL_MANAGED_BY) != c.MANAGED_BY:
                wait = RETRY_SECONDS
                logger.warning(
                    "NetworkPolicy %s exists and is not the operator's (no %s=%s label), so it is left alone: "
                    "Sandbox pods there are created after their own NetworkPolicy, one API round trip later", where,
                    c.LABEL_MANAGED_BY, c.MANAGED_BY,
                )
    except Exception as error:  # refused, unreachable, or a bug: the pods go policy-first, nothing waits on this
        wait = RETRY_SECONDS
        logger.warning(
            "cannot make the namespace fence NetworkPolicy %s (%s: %s); Sandbox pods there are created after their "
            "own NetworkPolicy; trying again in %.0f s", where, type(error).__name__, error, RETRY_SECONDS,
        )
    finally:
        _NEXT[namespace] = time.monotonic() + wait
