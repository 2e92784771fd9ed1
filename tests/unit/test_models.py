"""The pydantic models: defaults, validation errors that name the field, and never echo values."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given

from sandbox_operator.api.sandbox import (
    InvalidSandbox,
    InvalidSandboxError,
    OperatorDefaults,
    SandboxObject,
    SandboxSpec,
    load_sandbox,
)
from sandbox_operator.api.schema import parse_quantity
from tests.unit import strategies
from tests.unit.builders import body


def invalid(spec: dict[str, object]) -> str:
    with pytest.raises(InvalidSandboxError) as raised:
        SandboxObject.from_body(body(spec))
    return str(raised.value)


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = SandboxSpec.model_validate({"image": "busybox"})
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.resources.limits() == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "2Gi"}
    assert spec.resources.effective_requests() == spec.resources.limits()
    assert spec.lifetime.on_expiry == "Delete"
    assert spec.network.egress.mode == "None"
    assert spec.workspace.mount_path == "/workspace"
    assert spec.workspace.persistent is False


def test_explicit_requests_lower_only_the_named_resource() -> None:
    spec = SandboxSpec.model_validate({"image": "busybox", "resources": {"cpu": "2", "requests": {"cpu": "250m"}}})
    assert spec.resources.effective_requests() == {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "2Gi"}


def test_request_above_limit_is_refused_naming_the_field() -> None:
    message = invalid({"resources": {"memory": "1Gi", "requests": {"memory": "2Gi"}}})
    assert "spec.resources" in message
    assert "requests.memory must not exceed memory" in message


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)), ("1.5G", Decimal("1.5e9")), ("1e3", 1000)],
)
def test_quantities_parse_like_kubernetes(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["1 Gi", "-1", "1GB", "one", "", "1.2.3"])
def test_malformed_quantity_is_refused(bad: str) -> None:
    assert "spec.resources.cpu" in invalid({"resources": {"cpu": bad}})


def test_env_needs_exactly_one_of_value_and_value_from_and_never_echoes_the_value() -> None:
    message = invalid(
        {"env": [{"name": "TOKEN", "value": "hunter2", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    )
    assert "spec.env.0" in message
    assert "exactly one of value and valueFrom" in message
    assert "hunter2" not in message


def test_env_field_ref_is_not_accepted() -> None:
    message = invalid({"env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]})
    assert "spec.env.0.valueFrom.fieldRef" in message


def test_ttl_and_expires_at_are_exclusive() -> None:
    message = invalid({"lifetime": {"ttlSeconds": 60, "expiresAt": "2030-01-01T00:00:00Z"}})
    assert "at most one of ttlSeconds and expiresAt" in message


def test_allow_list_mode_needs_rules_and_other_modes_refuse_them() -> None:
    assert "allow must list" in invalid({"network": {"egress": {"mode": "AllowList"}}})
    assert "allow must list" in invalid({"network": {"egress": {"mode": "None", "allow": [{"cidr": "10.0.0.0/8"}]}}})


@pytest.mark.parametrize("cidr", ["169.254.169.254/32", "169.254.0.0/16", "fe80::/64", "10.0.0.1/8", "10.0.0.0/33"])
def test_link_local_or_malformed_cidr_is_refused(cidr: str) -> None:
    message = invalid({"network": {"egress": {"mode": "AllowList", "allow": [{"cidr": cidr}]}}})
    assert "spec.network.egress.allow.0.cidr" in message


@pytest.mark.parametrize("port", [0, 65536])
def test_port_out_of_range_is_refused(port: int) -> None:
    assert "spec.network.ports.0.port" in invalid({"network": {"ports": [{"name": "http", "port": port}]}})


def test_duplicate_port_names_are_refused() -> None:
    ports = [{"name": "http", "port": 80}, {"name": "http", "port": 81}]
    assert "port names must be unique" in invalid({"network": {"ports": ports}})


@pytest.mark.parametrize("path", ["/tmp", "/tmp/x", "/proc", "/dev/shm", "relative", "/a/../b", "/"])
def test_workspace_mount_path_must_be_a_safe_absolute_path(path: str) -> None:
    assert "spec.workspace.mountPath" in invalid({"workspace": {"mountPath": path}})


def test_unknown_field_is_refused() -> None:
    assert "spec.privileged" in invalid({"privileged": True})


def test_sandbox_name_must_be_a_short_dns_label() -> None:
    with pytest.raises(InvalidSandboxError, match=r"metadata\.name"):
        SandboxObject.from_body(body(name="a" * 64))


def test_load_sandbox_returns_the_error_instead_of_raising() -> None:
    loaded = load_sandbox(body({"image": ""}))
    assert isinstance(loaded, InvalidSandbox)
    assert loaded.error.startswith("spec.image")


def test_operator_defaults_fill_only_unset_fields() -> None:
    defaults = OperatorDefaults(allow_dns=False, ttl_seconds=3600)
    unset = SandboxObject.from_body(body(), defaults)
    assert unset.spec.network.allow_dns is False
    assert unset.spec.lifetime.ttl_seconds == 3600
    explicit = SandboxObject.from_body(
        body({"network": {"allowDNS": True}, "lifetime": {"expiresAt": "2030-01-01T00:00:00Z"}}), defaults
    )
    assert explicit.spec.network.allow_dns is True
    assert explicit.spec.lifetime.ttl_seconds is None


def test_unreadable_status_is_rebuilt_rather_than_failing() -> None:
    raw = body()
    raw["status"] = {"conditions": "garbage", "kopf": {"progress": {}}}
    assert SandboxObject.from_body(raw).status.conditions == []


@given(strategies.specs())
def test_every_generated_spec_is_valid_and_round_trips(spec: dict[str, object]) -> None:
    parsed = SandboxSpec.model_validate(spec)
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert SandboxSpec.model_validate(dumped) == parsed
