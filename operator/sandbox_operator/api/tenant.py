"""Pydantic models of the Tenant resource: the one schema its CRD is generated from and bodies are validated with.

A Tenant is cluster-scoped. It names one namespace that the operator creates and owns (an existing namespace is never
adopted), the quota of that namespace, per-sandbox limits and defaults, allowed images, network permissions, a
required runtime class, and the users, groups or service accounts that may manage Sandboxes there (and, if it says
so, run commands in its pods).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    Condition,
    Quantity,
    SpecModel,
    StatusModel,
    cel,
    describe_validation_error,
    name_error,
    parse_quantity,
    quantity_not_above,
    read_status,
)

# Glob patterns for images: `*` matches any run of characters (including `/` and `:`), everything else is literal.
# The character set leaves `.` as the only regex metacharacter, so the admission policy can turn a pattern into an
# anchored regex with two replace() calls (see tenant/admission.py and glob_to_regex below).
IMAGE_GLOB_PATTERN = r"^[a-zA-Z0-9._/:@*-]+$"
# Namespaces a Tenant may never claim: the cluster's own.
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def glob_to_regex(pattern: str) -> str:
    """The anchored regex the admission policy builds from an image glob (kept here so unit tests pin the same rule)."""
    return "^" + pattern.replace(".", "\\.").replace("*", ".*") + "$"


def image_allowed(image: str, patterns: list[str]) -> bool:
    """Whether an image matches one of the glob patterns, exactly as the admission policy decides it."""
    return any(re.match(glob_to_regex(pattern), image) for pattern in patterns)


def _check_namespace(value: str) -> str:
    if value in RESERVED_NAMESPACES or value.startswith("kube-"):
        raise ValueError("must not be default or a kube-* namespace")
    return value


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"must be a CIDR with no host bits set, such as 203.0.113.0/24: {error}") from None
    return value


class Subject(SpecModel):
    """A user, group or service account that may manage the tenant's Sandboxes (an RBAC subject)."""

    # `namespace` is a CEL keyword: rules spell the field __namespace__.
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)",
                "namespace is required for a ServiceAccount and not allowed otherwise",
            )
        )
    )

    kind: c.SubjectKind = Field(description="User, Group or ServiceAccount.")
    name: str = Field(description="Name of the user, group or service account.", min_length=1, max_length=253)
    namespace: str | None = Field(
        None, description="Namespace of a ServiceAccount.", max_length=63, pattern=DNS_LABEL_PATTERN
    )

    @model_validator(mode="after")
    def _namespace_iff_service_account(self) -> Subject:
        if (self.kind is c.SubjectKind.SERVICE_ACCOUNT) != (self.namespace is not None):
            raise ValueError("namespace is required for a ServiceAccount and not allowed otherwise")
        return self


class TenantQuota(SpecModel):
    """Totals for the whole tenant, enforced atomically by the API server through a ResourceQuota. An unset amount is
    not limited."""

    max_sandboxes: int = Field(
        alias="maxSandboxes",
        description="Most Sandboxes that may exist at once; creating one more fails with the API server's quota error.",
        ge=0,
        le=100000,
    )
    cpu: Quantity | None = Field(None, description="Total CPU of all sandbox pods (limits and requests), e.g. 8.")
    memory: Quantity | None = Field(None, description="Total memory of all sandbox pods (limits and requests).")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeralStorage", description="Total local disk of all sandbox pods (limits and requests)."
    )
    storage: Quantity | None = Field(
        None, description="Total size requested by the PersistentVolumeClaims of persistent workspaces."
    )
    persistent_volume_claims: int | None = Field(
        None, alias="persistentVolumeClaims", description="Most PersistentVolumeClaims (persistent workspaces).", ge=0,
        le=100000,
    )
    gpus: int | None = Field(None, description=f"Most GPUs ({c.GPU_RESOURCE}) requested at once.", ge=0, le=100000)


class TenantLimits(SpecModel):
    """Most any single Sandbox may ask for; a Sandbox above a limit is refused at admission, naming the field."""

    cpu: Quantity | None = Field(None, description="Largest spec.resources.cpu.")
    memory: Quantity | None = Field(None, description="Largest spec.resources.memory.")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeralStorage", description="Largest spec.resources.ephemeralStorage."
    )
    workspace_size: Quantity | None = Field(None, alias="workspaceSize", description="Largest spec.workspace.size.")
    max_lifetime_seconds: int | None = Field(
        None,
        alias="maxLifetimeSeconds",
        description=(
            "Longest lifetime: a Sandbox must set lifetime.ttlSeconds at most this, or lifetime.expiresAt at most "
            "this long after its creation, unless defaults.ttlSeconds gives it one."
        ),
        ge=1,
        le=31536000,
    )


class TenantDefaults(SpecModel):
    """Values for what a Sandbox leaves unset."""

    cpu: Quantity | None = Field(
        None, description="Default CPU limit and request of a container that sets none (LimitRange default)."
    )
    memory: Quantity | None = Field(
        None, description="Default memory limit and request of a container that sets none (LimitRange default)."
    )
    ephemeral_storage: Quantity | None = Field(
        None,
        alias="ephemeralStorage",
        description="Default local-disk limit and request of a container that sets none (LimitRange default).",
    )
    ttl_seconds: int | None = Field(
        None,
        alias="ttlSeconds",
        description="TTL the operator gives a Sandbox that sets neither lifetime.ttlSeconds nor lifetime.expiresAt.",
        ge=1,
        le=31536000,
    )


Cidr = Annotated[
    str,
    AfterValidator(_check_cidr),
    Field(
        max_length=64,
        json_schema_extra=cel(
            ("isCIDR(self)", "must be a CIDR such as 203.0.113.0/24"),
            ("!isCIDR(self) || cidr(self) == cidr(self).masked()", "must have no host bits set"),
        ),
    ),
]


class TenantNetwork(SpecModel):
    """Network permissions of the tenant's Sandboxes."""

    allow_internet: bool = Field(False, alias="allowInternet", description="Whether egress mode Internet is allowed.")
    allow_exposed_ports: bool = Field(
        False, alias="allowExposedPorts", description="Whether Sandboxes may expose ports (network.ports)."
    )
    allowed_egress_cidrs: list[Cidr] = Field(
        default_factory=list,
        alias="allowedEgressCIDRs",
        description=(
            "Ranges egress allow-lists may name: every network.egress.allow[].cidr must lie within one of them. "
            "Empty forbids egress mode AllowList."
        ),
        max_length=c.MAX_TENANT_CIDRS,
    )


ImagePattern = Annotated[
    str, Field(min_length=1, max_length=c.MAX_IMAGE_PATTERN_LENGTH, pattern=IMAGE_GLOB_PATTERN)
]


class TenantSpec(SpecModel):
    """What a tenant gets: an owned namespace with quota, limits, policy and access for its subjects."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            quantity_not_above("defaults.cpu", "limits.cpu"),
            quantity_not_above("defaults.memory", "limits.memory"),
            quantity_not_above("defaults.ephemeralStorage", "limits.ephemeralStorage"),
            (
                "!has(self.defaults) || !has(self.defaults.ttlSeconds) || !has(self.limits) || "
                "!has(self.limits.maxLifetimeSeconds) || self.defaults.ttlSeconds <= self.limits.maxLifetimeSeconds",
                "defaults.ttlSeconds must not exceed limits.maxLifetimeSeconds",
            ),
        )
    )

    namespace: Annotated[str, AfterValidator(_check_namespace)] = Field(
        description=(
            "Namespace the operator creates and owns for this tenant; it must not exist yet (an existing namespace is "
            "never adopted) and is deleted, with every Sandbox and volume in it, when the Tenant is deleted. Immutable."
        ),
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        json_schema_extra=cel(
            ("self == oldSelf", "namespace is immutable"),
            (
                f"!(self in [{', '.join(repr(name) for name in RESERVED_NAMESPACES)}]) && !self.startsWith('kube-')",
                "must not be default or a kube-* namespace",
            ),
        ),
    )
    subjects: list[Subject] = Field(
        default_factory=list,
        description=f"Who may manage Sandboxes in the namespace (bound to the ClusterRole {c.TENANT_CLUSTER_ROLE}).",
        max_length=c.MAX_TENANT_SUBJECTS,
    )
    quota: TenantQuota = Field(description="Totals for the whole tenant (a ResourceQuota).")
    limits: TenantLimits = Field(
        default_factory=TenantLimits,
        description="Most a single Sandbox may ask for, checked at admission.",
        json_schema_extra={"default": {}},
    )
    defaults: TenantDefaults = Field(
        default_factory=TenantDefaults,
        description="Values for what a Sandbox leaves unset.",
        json_schema_extra={"default": {}},
    )
    allowed_images: list[ImagePattern] = Field(
        alias="allowedImages",
        description=(
            "Glob patterns of the images Sandboxes may run, matched against spec.image as written (no registry or "
            "tag is implied): `*` matches any characters including `/` and `:`, everything else is literal. "
            "[\"*\"] allows every image."
        ),
        min_length=1,
        max_length=c.MAX_IMAGE_PATTERNS,
    )
    network: TenantNetwork = Field(
        default_factory=TenantNetwork,
        description="Network permissions of the tenant's Sandboxes.",
        json_schema_extra={"default": {}},
    )
    runtime_class_name: str | None = Field(
        None,
        alias="runtimeClassName",
        description="RuntimeClass every Sandbox must set as spec.runtimeClassName (e.g. gvisor); unset means any.",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    require_image_pull_always: bool = Field(
        False,
        alias="requireImagePullAlways",
        description=(
            "Every Sandbox must set imagePullPolicy Always, so the registry checks the tenant's right to each image "
            "on every start: otherwise a private image another tenant pulled onto a node could be run from its cache."
        ),
    )
    exec_access: bool = Field(
        False,
        alias="execAccess",
        description=(
            "When true, the tenant's subjects may also run commands in the namespace's pods and read their logs "
            "(pods get/list/watch, pods/exec and pods/log in this namespace only; bound to the ClusterRole "
            f"{c.TENANT_EXEC_CLUSTER_ROLE}), as the Python SDK, the CLI and the MCP server need."
        ),
    )

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> TenantSpec:
        for name in ("cpu", "memory", "ephemeral_storage"):
            default, limit = getattr(self.defaults, name), getattr(self.limits, name)
            if default is not None and limit is not None and parse_quantity(default) > parse_quantity(limit):
                alias = TenantLimits.model_fields[name].alias or name
                raise ValueError(f"defaults.{alias} must not exceed limits.{alias}")
        ttl, longest = self.defaults.ttl_seconds, self.limits.max_lifetime_seconds
        if ttl is not None and longest is not None and ttl > longest:
            raise ValueError("defaults.ttlSeconds must not exceed limits.maxLifetimeSeconds")
        return self


class ResourceUsage(StatusModel):
    """Use of one quota resource, as the ResourceQuota's status reports it."""

    used: str = Field(description="Amount in use.", max_length=64)
    hard: str = Field(description="The limit.", max_length=64)


@dataclass(frozen=True)
class QuotaResource:
    """One quota'd resource: the TenantQuota field that sets it, the ResourceQuota resources it becomes (usage reports
    the first: limits, not requests; a sandbox's requests never exceed its limits, so limits run out first), and the
    TenantUsage field it is reported in (the same name)."""

    field: str
    resources: tuple[str, ...]


# The one table of what a Tenant's quota limits: ResourceQuota `hard` and `status.usage` are both derived from it.
QUOTA_RESOURCES: tuple[QuotaResource, ...] = (
    QuotaResource("sandboxes", (c.QUOTA_SANDBOXES,)),
    QuotaResource("pods", (c.QUOTA_PODS,)),
    QuotaResource("cpu", ("limits.cpu", "requests.cpu")),
    QuotaResource("memory", ("limits.memory", "requests.memory")),
    QuotaResource("ephemeralStorage", ("limits.ephemeral-storage", "requests.ephemeral-storage")),
    QuotaResource("storage", (c.QUOTA_STORAGE,)),
    QuotaResource("persistentVolumeClaims", (c.QUOTA_PVCS,)),
    QuotaResource("gpus", (f"requests.{c.GPU_RESOURCE}",)),
)


def quota_total(quota: TenantQuota, row: QuotaResource) -> int | str | None:
    """The total the tenant's quota sets for ``row`` (None: not limited); pods count like Sandboxes."""
    alias = "maxSandboxes" if row.field in ("sandboxes", "pods") else row.field
    name = next(name for name, info in TenantQuota.model_fields.items() if (info.alias or name) == alias)
    value: int | str | None = getattr(quota, name)
    return value


class TenantUsage(StatusModel):
    """Use of each limited resource; a resource without a limit is absent."""

    sandboxes: ResourceUsage | None = Field(None, description=f"Sandboxes ({c.QUOTA_SANDBOXES}).")
    pods: ResourceUsage | None = Field(None, description="Pods.")
    cpu: ResourceUsage | None = Field(None, description="CPU limits of all pods (limits.cpu).")
    memory: ResourceUsage | None = Field(None, description="Memory limits of all pods (limits.memory).")
    ephemeral_storage: ResourceUsage | None = Field(
        None, alias="ephemeralStorage", description="Local-disk limits of all pods (limits.ephemeral-storage)."
    )
    storage: ResourceUsage | None = Field(None, description="Storage requested by PVCs (requests.storage).")
    persistent_volume_claims: ResourceUsage | None = Field(
        None, alias="persistentVolumeClaims", description="PersistentVolumeClaims."
    )
    gpus: ResourceUsage | None = Field(None, description=f"GPUs (requests.{c.GPU_RESOURCE}).")


class TenantStatus(StatusModel):
    """Observed state of a Tenant, written by the operator only."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="The Ready condition: whether the namespace, quota, policy and access are all in place.",
        max_length=c.MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec this status reflects.", ge=0
    )
    namespace: str | None = Field(None, description="The tenant's namespace.", max_length=63)
    usage: TenantUsage | None = Field(None, description="Use against each quota limit, from the ResourceQuota.")


@dataclass(frozen=True)
class TenantObject:
    """A Tenant as the operator sees it: identity, the validated spec and its last status."""

    name: str
    uid: str
    generation: int
    spec: TenantSpec
    status: TenantStatus = field(default_factory=TenantStatus)


@dataclass(frozen=True)
class InvalidTenant:
    """A Tenant whose body failed validation: enough to report the error in its status."""

    name: str
    generation: int
    error: str
    status: TenantStatus = field(default_factory=TenantStatus)


def load_tenant(body: Mapping[str, Any]) -> TenantObject | InvalidTenant:
    """Parse a Tenant body; an invalid one comes back as InvalidTenant naming the fields (never their values)."""
    meta = body.get("metadata") or {}
    name, generation = str(meta.get("name", "")), int(meta.get("generation") or 0)
    status = read_status(TenantStatus, body)
    error = name_error(body)
    if error is not None:
        return InvalidTenant(name=name, generation=generation, error=error, status=status)
    try:
        spec = TenantSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        error = describe_validation_error(exc, "spec")
        return InvalidTenant(name=name, generation=generation, error=error, status=status)
    return TenantObject(
        name=name, uid=str(meta.get("uid", "")), generation=generation, spec=spec, status=status
    )


@dataclass(frozen=True)
class TenantLifetime:
    """What a Tenant says about its Sandboxes' lifetime: the default TTL and the maximum (None: unset)."""

    default_ttl_seconds: int | None = None
    max_lifetime_seconds: int | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TenantLifetime:
        """Read a Tenant's spec as the watch hands it over; anything but a positive integer counts as unset."""

        def seconds(section: str, key: str) -> int | None:
            parent = spec.get(section)
            value = parent.get(key) if isinstance(parent, Mapping) else None
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

        return cls(seconds("defaults", "ttlSeconds"), seconds("limits", "maxLifetimeSeconds"))
