"""Tenant models: what a Tenant may say, and the image globs the admission policy applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox_operator.api.sandbox import OperatorDefaults
from sandbox_operator.api.tenant import (
    QUOTA_RESOURCES,
    InvalidTenant,
    TenantLifetime,
    TenantObject,
    TenantUsage,
    glob_to_regex,
    image_allowed,
    load_tenant,
)
from sandbox_operator.sandbox.defaults import sandbox_defaults, with_tenant_defaults
from tests.unit.tenant_builders import tenant_body


def error_of(spec: dict[str, Any]) -> str:
    loaded = load_tenant(tenant_body(spec))
    assert isinstance(loaded, InvalidTenant)
    return loaded.error


def test_a_full_tenant_loads() -> None:
    loaded = load_tenant(tenant_body())
    assert isinstance(loaded, TenantObject)
    assert loaded.spec.quota.max_sandboxes == 10
    assert loaded.spec.network.allow_internet is False


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"namespace": "kube-system"}, "spec.namespace"),
        ({"namespace": "default"}, "spec.namespace"),
        ({"namespace": "Team_A"}, "spec.namespace"),
        ({"allowedImages": []}, "spec.allowedImages"),
        ({"allowedImages": ["python:3.12?"]}, "spec.allowedImages.0"),
        ({"allowedImages": ["(evil|python)"]}, "spec.allowedImages.0"),
        ({"quota": {"maxSandboxes": -1}}, "spec.quota.maxSandboxes"),
        ({"quota": {}}, "spec.quota.maxSandboxes"),
        ({"quota": {"maxSandboxes": 1, "cpu": "lots"}}, "spec.quota.cpu"),
        ({"subjects": [{"kind": "ServiceAccount", "name": "ci"}]}, "spec.subjects.0"),
        ({"subjects": [{"kind": "User", "name": "ann", "namespace": "x"}]}, "spec.subjects.0"),
        ({"subjects": [{"kind": "Robot", "name": "r2"}]}, "spec.subjects.0.kind"),
        ({"network": {"allowedEgressCIDRs": ["10.0.0.1/8"]}}, "spec.network.allowedEgressCIDRs.0"),
        ({"limits": {"cpu": "1"}, "defaults": {"cpu": "2"}}, "defaults.cpu must not exceed limits.cpu"),
        (
            {"limits": {"maxLifetimeSeconds": 60}, "defaults": {"ttlSeconds": 61}},
            "defaults.ttlSeconds must not exceed limits.maxLifetimeSeconds",
        ),
    ],
)
def test_invalid_tenant_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in error_of(spec)


def test_defaults_equal_to_limits_are_accepted() -> None:
    spec = {"limits": {"cpu": "1", "maxLifetimeSeconds": 60}, "defaults": {"cpu": "1000m", "ttlSeconds": 60}}
    assert isinstance(load_tenant(tenant_body(spec)), TenantObject)


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        ("python:3.12", ["python:*"], True),
        ("python:3.12", ["python"], False),
        ("pythonx:3.12", ["python:*"], False),
        ("ghcr.io/acme/tools/shell:1", ["ghcr.io/acme/*"], True),
        ("ghcr.io/acmeevil/x:1", ["ghcr.io/acme/*"], False),
        ("ghcrxio/acme/x", ["ghcr.io/acme/*"], False),  # the dot is literal
        ("busybox", ["*"], True),
        ("busybox@sha256:0123", ["busybox@sha256:*"], True),
        ("evil.io/busybox", ["busybox*"], False),  # anchored at the start
        ("busybox:1-evil", ["busybox:1"], False),  # anchored at the end
    ],
)
def test_image_globs_are_anchored_and_only_star_is_special(image: str, patterns: list[str], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def test_glob_translation_escapes_dots() -> None:
    assert glob_to_regex("ghcr.io/*") == "^ghcr\\.io/.*$"


def test_tenant_default_ttl_replaces_the_operator_default_only_when_set() -> None:
    base = OperatorDefaults(allow_dns=False, ttl_seconds=600)
    assert with_tenant_defaults(base, None) is base
    assert with_tenant_defaults(base, TenantLifetime()) is base
    assert with_tenant_defaults(base, TenantLifetime(3600)) == OperatorDefaults(allow_dns=False, ttl_seconds=3600)
    assert with_tenant_defaults(base, TenantLifetime(max_lifetime_seconds=900)) == OperatorDefaults(
        allow_dns=False, ttl_seconds=600, max_lifetime_seconds=900
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"defaults": {"ttlSeconds": 600}, "limits": {"maxLifetimeSeconds": 900}}, TenantLifetime(600, 900)),
        ({"defaults": {"ttlSeconds": "600"}, "limits": {"maxLifetimeSeconds": True}}, TenantLifetime()),
        ({"defaults": None, "limits": [1]}, TenantLifetime()),
        ({"defaults": {"ttlSeconds": -5}}, TenantLifetime()),
        ({}, TenantLifetime()),
    ],
)
def test_a_tenants_lifetime_rules_are_read_from_any_spec_without_raising(
    spec: dict[str, object], expected: TenantLifetime
) -> None:
    assert TenantLifetime.from_spec(spec) == expected


def test_the_example_tenant_is_valid_and_allows_its_example_images() -> None:
    examples = Path(__file__).parents[2] / "examples"
    loaded = load_tenant(yaml.safe_load((examples / "tenant.yaml").read_text()))
    assert isinstance(loaded, TenantObject), loaded
    for sandbox in yaml.safe_load_all((examples / "tenant-sandboxes.yaml").read_text()):
        assert sandbox["metadata"]["namespace"] == loaded.spec.namespace
        assert image_allowed(sandbox["spec"]["image"], loaded.spec.allowed_images)


def test_a_sandbox_gets_the_default_ttl_of_the_tenant_owning_its_namespace() -> None:
    base = OperatorDefaults(ttl_seconds=None)
    lifetimes = {"team-a": TenantLifetime(600, 900), "team-b": TenantLifetime()}
    assert sandbox_defaults(lifetimes.get, "team-a", base).ttl_seconds == 600
    assert sandbox_defaults(lifetimes.get, "team-a", base).max_lifetime_seconds == 900
    assert sandbox_defaults(lifetimes.get, "team-b", base) is base
    assert sandbox_defaults(lifetimes.get, "elsewhere", base) is base


def test_the_usage_status_reports_exactly_the_quota_table() -> None:
    fields = {info.alias or name for name, info in TenantUsage.model_fields.items()}
    assert fields == {row.field for row in QUOTA_RESOURCES}
