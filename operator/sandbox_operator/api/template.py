"""The SandboxTemplate and SandboxPool resources: their spec and status models (the CRDs are generated from them).
Imports no Kopf and no Kubernetes client.

A SandboxTemplate is a pod recipe a platform team writes once (``api.sandbox.PodRecipe``: the same fields, with the
same names, as a Sandbox written out in full, so the tenant admission policy checks a template with the very rules it
checks a Sandbox with). A Sandbox names it in ``templateRef``. A SandboxPool keeps ``replicas`` warm pods of a template
running, fenced by a deny-all NetworkPolicy; a new Sandbox of that template claims one of them instead of starting a
pod of its own.
"""

from __future__ import annotations

from pydantic import Field

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import PodRecipe, TemplateRef
from sandbox_operator.api.schema import Condition, SpecModel, StatusModel


class SandboxTemplateSpec(PodRecipe):
    """A sandbox recipe: image, command, env, resources, network, workspace and lifetime defaults. Sandboxes name it
    in templateRef; its lifetime is the longest a Sandbox made from it may live. Editing it replaces its pools' warm
    pods; sandboxes already running keep the pod they started with."""


class SandboxPoolSpec(SpecModel):
    """How many warm pods of which template to keep ready for new Sandboxes."""

    template_ref: TemplateRef = Field(
        alias="templateRef", description="The SandboxTemplate (same namespace) whose pods this pool keeps warm."
    )
    replicas: int = Field(
        1,
        description=(
            "Warm pods to keep. They use real capacity and count against the namespace's ResourceQuota; "
            "`kubectl scale` and a HorizontalPodAutoscaler set this through the scale subresource."
        ),
        ge=0,
        le=c.MAX_POOL_REPLICAS,
    )


class SandboxPoolStatus(StatusModel):
    """Observed state of a SandboxPool, written by the operator only."""

    replicas: int = Field(0, description="Warm pods of the current recipe, ready or starting.", ge=0)
    ready_replicas: int = Field(0, alias="readyReplicas", description="Warm pods ready to be claimed.", ge=0)
    selector: str | None = Field(
        None, description="Label selector of the pool's warm pods (for the scale subresource).", max_length=512
    )
    recipe_hash: str | None = Field(
        None, alias="recipeHash", description="Hash of the template recipe the warm pods are made from.", max_length=64
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec this status reflects.", ge=0
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="The Ready condition: all replicas warm and ready, or why not.",
        max_length=c.MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    message: str | None = Field(None, description="Summary for humans.", max_length=c.MAX_MESSAGE_LENGTH)
