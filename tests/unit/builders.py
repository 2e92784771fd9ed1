"""Small builders of Sandbox bodies and observed children for the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox_operator.api.sandbox import SandboxObject
from sandbox_operator.api.schema import format_time
from sandbox_operator.k8s.manifest import ChildSummary, manifest_hash, owned_view
from sandbox_operator.sandbox.decide import Observed, PodSummary, decide
from sandbox_operator.sandbox.render import render_network_policy, render_pod, render_pvc, render_service

CREATED = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def body(spec: dict[str, Any] | None = None, *, name: str = "demo", generation: int = 1, **meta: Any) -> dict[str, Any]:
    """A Sandbox body as the API server would hand it over."""
    metadata = {
        "name": name,
        "namespace": "tenant-a",
        "uid": "0f0e0d0c-0000-4000-8000-000000000001",
        "generation": generation,
        "creationTimestamp": format_time(CREATED),
        **meta,
    }
    return {
        "apiVersion": "sandbox-operator.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": metadata,
        "spec": {"image": "python:3.12-slim", **(spec or {})},
    }


def sandbox(spec: dict[str, Any] | None = None, *, status: dict[str, Any] | None = None, **meta: Any) -> SandboxObject:
    """A validated Sandbox with the given spec fields and, optionally, a previous status."""
    raw = body(spec, **meta)
    if status is not None:
        raw["status"] = status
    return SandboxObject.from_body(raw)


def at(seconds: float) -> datetime:
    """A moment `seconds` after the test sandbox was created."""
    return CREATED + timedelta(seconds=seconds)


def running_pod(sbx: SandboxObject, *, ready: bool = True, started: float = 5) -> PodSummary:
    """The sandbox's current pod, running (and ready unless told otherwise)."""
    pod = render_pod(sbx)
    return PodSummary(
        name=pod["metadata"]["name"],
        phase="Running",
        ready=ready,
        pod_ip="10.244.0.7",
        started_at=at(started),
        spec_hash=manifest_hash(pod),
        owned=owned_view(pod),
    )


def children(sbx: SandboxObject, pod: PodSummary | None = None, **extra: Any) -> Observed:
    """Observed children matching the spec (NetworkPolicy, and Service/PVC when wanted) plus the given pod."""
    summaries: dict[str, ChildSummary | None] = {}
    for key, manifest in (
        ("network_policy", render_network_policy(sbx)),
        ("service", render_service(sbx)),
        ("pvc", render_pvc(sbx)),
    ):
        summaries[key] = (
            ChildSummary(manifest["metadata"]["name"], manifest_hash(manifest), owned_view(manifest))
            if manifest is not None
            else None
        )
    return Observed(pod=pod, **summaries, **extra)  # type: ignore[arg-type]


def with_status(sbx: SandboxObject, observed: Observed, now: datetime) -> SandboxObject:
    """The sandbox after the shell wrote the status `decide` returned."""
    plan = decide(sbx, observed, now)
    raw = body(
        sbx.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        name=sbx.name,
        generation=sbx.generation,
        annotations=dict(sbx.annotations),
    )
    raw["status"] = plan.status
    return SandboxObject.from_body(raw)
