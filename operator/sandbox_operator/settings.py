"""Operator configuration from the environment (``SANDBOX_OPERATOR_*``), validated at start-up."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Toleration(BaseModel):
    """A pod toleration, as in the Pod API."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class Settings(BaseSettings):
    """Every knob of the operator; a bad value stops start-up with the variable's name."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_OPERATOR_", extra="ignore", frozen=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces to watch; empty means every namespace (cluster-wide).",
    )
    default_ttl_seconds: int | None = Field(
        default=None, ge=60, description="TTL applied to sandboxes that set no lifetime; unset means no default TTL."
    )
    default_allow_dns: bool = Field(
        default=True, description="Whether sandboxes may resolve DNS unless they say otherwise."
    )
    pod_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object: the nodeSelector of every sandbox pod, e.g. {"pool": "sandboxes"}.',
    )
    pod_tolerations: list[Toleration] = Field(
        default_factory=list,
        description="JSON list: tolerations of every sandbox pod (for a tainted node pool).",
    )
    forbidden_egress_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs no sandbox may reach, whatever its egress allows (e.g. the API server).",
    )
    metrics_port: int = Field(default=8080, ge=1, le=65535, description="Port of the Prometheus /metrics endpoint.")
    health_port: int = Field(default=8081, ge=1, le=65535, description="Port of Kopf's liveness endpoint /healthz.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="`json` for one JSON object per line.")
    peering_name: str = Field(
        default="sandbox-operator", description="Kopf peering object shared by replicas; one of them works at a time."
    )
    priority: int = Field(default=0, description="Kopf peering priority; the highest live replica is the active one.")
    standalone: bool = Field(default=False, description="Skip peering (a single replica, e.g. in tests).")
    peering_lifetime: int = Field(
        default=60, ge=10, le=3600,
        description="Seconds a replica's peering record stays valid without a keep-alive: after a crash, "
        "the worst-case time until a standby takes over.",
    )
    status_settle_seconds: float = Field(
        default=2.0, ge=0, le=60,
        description="How long a Sandbox's in-progress status (pod pending, container creating) may wait before it is "
        "written: a status that replaces it within that time (Ready, usually) is written instead, one write where "
        "there would be two or three. Failures, Ready, expiry and suspension are written at once. 0: every change "
        "at once.",
    )
    progress_events: bool = Field(
        default=False,
        description="Also post Normal Events for the normal path (Created, Ready); failures, expiry, suspension, "
        "resumption and repairs always get theirs.",
    )
    pod_name: str = Field(
        default="", description="This replica's pod name; when PRIORITY is unset, the priority is derived from it."
    )

    @field_validator("namespaces", "forbidden_egress_cidrs", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(NAMESPACE_PATTERN, name) or len(name) > 63]
        if bad:
            raise ValueError(f"not valid namespace names: {', '.join(bad)}")
        return value

    @property
    def peering_priority(self) -> int:
        """PRIORITY if set; else, in a pod, a number from its name, so replicas of one template differ."""
        if "priority" in self.model_fields_set or not self.pod_name:
            return self.priority
        # Kopf pauses every replica that sees a peer of equal priority; 31 bits make a tie very unlikely.
        return 1 + int.from_bytes(hashlib.sha256(self.pod_name.encode()).digest()[:4], "big") % (2**31 - 1)

    @field_validator("forbidden_egress_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        bad = []
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                bad.append(cidr)
        if bad:
            raise ValueError(f"not valid CIDRs (host bits must be zero): {', '.join(bad)}")
        return value

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]
