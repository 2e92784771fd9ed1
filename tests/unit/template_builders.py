"""Builders for templated Sandboxes, warm pods as the API server hands them over, and the merge patch it applies."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import OperatorDefaults, PodRecipe, SandboxObject
from sandbox_operator.api.schema import format_time
from sandbox_operator.pool import render as pool_render
from tests.unit.builders import CREATED, body

TEMPLATE = "python"
POOL = "python-warm"
POOL_UID = "0f0e0d0c-0000-4000-8000-0000000000aa"
NAMESPACE = "tenant-a"


def recipe(**fields: Any) -> PodRecipe:
    """A template recipe: python:3.12-slim unless told otherwise."""
    return PodRecipe.model_validate({"image": "python:3.12-slim", **fields})


def templated_body(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """A Sandbox body naming the test template, with no image of its own."""
    raw = body({"templateRef": {"name": TEMPLATE}, **(spec or {})}, **meta)
    del raw["spec"]["image"]
    return raw


def templated(
    template: PodRecipe,
    spec: dict[str, Any] | None = None,
    defaults: OperatorDefaults | None = None,
    *,
    status: dict[str, Any] | None = None,
) -> SandboxObject:
    """A validated Sandbox made from ``template``, with, optionally, a previous status."""
    raw = templated_body(spec)
    if status is not None:
        raw["status"] = status
    return SandboxObject.from_body(raw, defaults, template)


def warm_pod_body(
    template: PodRecipe,
    *,
    suffix: str = "x7k2p",
    resource_version: str = "4711",
    defaults: OperatorDefaults | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    """A warm pod of the test pool as the API server returns it: named, versioned and, unless told otherwise, Ready."""
    spec = pool_render.warm_pod_spec(template, defaults or OperatorDefaults())
    pod = copy.deepcopy(pool_render.render_warm_pod(POOL, NAMESPACE, POOL_UID, spec))
    meta = pod["metadata"]
    meta.update(
        name=meta["generateName"] + suffix,
        uid="0f0e0d0c-0000-4000-8000-0000000000bb",
        resourceVersion=resource_version,
        creationTimestamp=format_time(CREATED),
    )
    started = {"running": {"startedAt": format_time(CREATED)}}
    pod["status"] = {
        "phase": "Running",
        "podIP": "10.244.0.9",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": c.CONTAINER_NAME, "state": started}],
    }
    return pod


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies one: null removes a key, objects merge, the rest
    replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
