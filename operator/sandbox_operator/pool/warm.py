"""What the operator knows of templates and warm pods, and the claim: a new Sandbox of a template takes over a Ready
warm pod of one of the template's pools instead of creating its own.

A claim is one merge patch of the pod: the Sandbox's labels (the pool label stays: the pool's fence keeps selecting
it), its owner reference instead of the pool's, and the spec hash of the Sandbox's rendering. The patch carries the
resourceVersion the pod was seen at, so two claimers (two Sandboxes, or a Sandbox and the pool deleting the pod) can
never both win: the loser gets 409 and tries another pod, then falls back to a cold start. The Sandbox's own
NetworkPolicy is created before the claim (the plan orders it first), so the pod moves from one deny-all policy to
the union of that and its own, and is never unselected.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox_operator import metrics
from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import PodRecipe
from sandbox_operator.k8s.cache import Store
from sandbox_operator.k8s.client import Kube
from sandbox_operator.pool.decide import WarmPod
from sandbox_operator.sandbox.render import Claimed, as_claimed, recipe_hash

# A claim tries at most this many pods before falling back to a cold start: each try is one request.
MAX_CLAIM_TRIES = 3


@dataclass
class Warm:
    """Templates (their validated recipe, or why it did not validate), each pool's unclaimed pods and template, and
    the pods being claimed right now; one per operator process. Entries go with their objects' DELETED events."""

    templates: Store[tuple[str, str], PodRecipe | str] = field(default_factory=Store)
    members: dict[tuple[str, str], dict[str, tuple[str, WarmPod]]] = field(default_factory=dict)
    pool_templates: dict[tuple[str, str], str] = field(default_factory=dict)
    claiming: set[tuple[str, str]] = field(default_factory=set)
    # Called with (namespace, pool) when a claim took one of its pods: it refills.
    on_claimed: Callable[[tuple[str, str]], None] = lambda key: None

    def recipe(self, namespace: str, template: str) -> PodRecipe | None:
        """The template's recipe, if it exists and is valid."""
        found = self.templates.get((namespace, template))
        return found if isinstance(found, PodRecipe) else None

    def put_member(self, pool: tuple[str, str], uid: str, pod: WarmPod) -> None:
        """The watch saw an unclaimed pod of ``pool``."""
        self.members.setdefault(pool, {})[pod.name] = (uid, pod)

    def remove_member(self, pool: tuple[str, str], name: str) -> bool:
        """The pod left the pool (claimed, or deleted); True when it was a member until now."""
        pods = self.members.get(pool)
        if pods is None or pods.pop(name, None) is None:
            return False
        if not pods:
            del self.members[pool]
        return True

    def retain(self, uids: set[str], in_scope: Callable[[tuple[str, str]], bool]) -> list[tuple[str, str]]:
        """A new listing of pods found ``uids``: drop the pods in scope it did not find (deleted while the watch was
        broken); return the pools that lost some."""
        changed = []
        for pool, pods in list(self.members.items()):
            gone = [name for name, (uid, _) in pods.items() if in_scope(pool) and uid not in uids]
            for name in gone:
                del pods[name]
            if gone:
                changed.append(pool)
            if not pods:
                del self.members[pool]
        return changed

    def pods(self, pool: tuple[str, str]) -> list[WarmPod]:
        """The pool's unclaimed pods, less those being claimed right now."""
        return [pod for name, (_, pod) in (self.members.get(pool) or {}).items()
                if (pool[0], name) not in self.claiming]

    def pools_of(self, namespace: str, template: str) -> list[str]:
        """The pools in ``namespace`` keeping warm pods of ``template``."""
        return sorted(pool for (ns, pool), name in self.pool_templates.items() if ns == namespace and name == template)


WARM = Warm()


def pool_of_member(body: Mapping[str, Any]) -> str | None:
    """The pool whose unclaimed pod this is: its controller owner is that SandboxPool and it carries its label."""
    meta = body.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(c.LABEL_POOL)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == c.POOL_KIND and ref.get("name") == pool:
            return str(pool)
    return None


def claim_patch(pod: WarmPod, cold: Mapping[str, Any], pool: str) -> dict[str, Any]:
    """The merge patch that makes warm pod ``pod`` the Sandbox's: the rendering ``cold`` as that pod."""
    claimed = as_claimed(cold, Claimed(pod.name, pool))
    meta = claimed["metadata"]
    return {
        "metadata": {
            "resourceVersion": pod.resource_version,
            "labels": {**meta["labels"], c.LABEL_RECIPE_HASH: None},
            "ownerReferences": meta["ownerReferences"],
            "annotations": {c.ANNOTATION_SPEC_HASH: meta["annotations"][c.ANNOTATION_SPEC_HASH]},
        }
    }


async def claim(kube: Kube, template: str, cold: Mapping[str, Any]) -> dict[str, Any] | None:
    """Claim a Ready warm pod of one of ``template``'s pools for the Sandbox whose own pod would be ``cold``; return
    the claimed pod, or None when no pool has one to give (the caller starts the pod cold)."""
    namespace = cold["metadata"]["namespace"]
    wanted = recipe_hash(cold["spec"])
    tries = 0
    for pool in WARM.pools_of(namespace, template):
        key = (namespace, pool)
        candidates = [pod for pod in WARM.pods(key)
                      if pod.ready and not pod.deleting and not pod.done and pod.recipe_hash == wanted]
        random.shuffle(candidates)  # another claimer (a standby taking over) is unlikely to pick the same pod
        for pod in candidates:
            if tries >= MAX_CLAIM_TRIES:
                return None
            tries += 1
            WARM.claiming.add((namespace, pod.name))
            try:
                claimed = await kube.claim_pod(namespace, pod.name, claim_patch(pod, cold, pool))
            finally:
                WARM.claiming.discard((namespace, pod.name))
            WARM.remove_member(key, pod.name)  # claimed, or changed: the watch tells which
            WARM.on_claimed(key)
            if claimed is not None:
                return claimed
            metrics.CLAIMS_LOST.inc()
    return None
