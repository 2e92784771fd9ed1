"""Pure functions from a SandboxPool and its template's recipe to its warm pods and its fence (a deny-all
NetworkPolicy), as plain dicts."""

from __future__ import annotations

from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults, PodRecipe
from sandbox_operator.k8s.manifest import bounded_name, child_metadata, owner_reference, with_spec_hash
from sandbox_operator.sandbox.render import recipe_hash, render_pod_spec


def member_labels(pool: str) -> dict[str, str]:
    """Labels every pod the pool made carries, warm or claimed: the fence selects on them."""
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_POOL: pool}


def warm_selector(pool: str) -> str:
    """Label selector of the pool's unclaimed pods (a claimed pod has the sandbox label): the scale subresource's."""
    return ",".join(f"{key}={value}" for key, value in member_labels(pool).items()) + f",!{c.LABEL_SANDBOX}"


def fence_name(pool: str) -> str:
    """Name of the pool's fence NetworkPolicy (a long pool name is cut and hashed, never merely cut)."""
    return bounded_name(pool, c.POOL_FENCE_SUFFIX)


def warm_pod_spec(recipe: PodRecipe, defaults: OperatorDefaults) -> dict[str, Any]:
    """The spec of the pool's warm pods: a Sandbox of the same recipe renders the same spec, so it may claim one."""
    return render_pod_spec(recipe, defaults)


def render_warm_pod(pool: str, namespace: str, uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One warm pod (named by the API server after the pool), owned by the pool until a Sandbox claims it."""
    labels = {c.LABEL_NAME: c.NAME, **member_labels(pool), c.LABEL_RECIPE_HASH: recipe_hash(spec)}
    metadata = child_metadata("", namespace, labels, owner_reference(c.POOL_KIND, pool, uid))
    del metadata["name"]
    metadata["generateName"] = f"{pool[:50]}-"
    return with_spec_hash({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})


def render_fence(pool: str, namespace: str, uid: str) -> dict[str, Any]:
    """The deny-all NetworkPolicy over every pod the pool made. A claimed pod keeps the pool label, so it is never
    without a policy: NetworkPolicies add up, this one allows nothing, its own Sandbox's allows what it asks."""
    metadata = child_metadata(fence_name(pool), namespace, {c.LABEL_NAME: c.NAME, c.LABEL_MANAGED_BY: c.MANAGED_BY,
                                                             c.LABEL_POOL: pool},
                              owner_reference(c.POOL_KIND, pool, uid))
    return with_spec_hash(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata,
            "spec": {"podSelector": {"matchLabels": member_labels(pool)}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [], "egress": []},
        }
    )
