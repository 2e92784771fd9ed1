"""Pydantic models of the Sandbox resource: the one schema the CRD is generated from and bodies are validated with."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from sandbox_operator import constants as c

# The Kubernetes quantity grammar (apimachinery resource.Quantity), without a sign: no resource here can be negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
PORT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MOUNT_PATH_PATTERN = r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"
IMAGE_PATTERN = r"^[^\s]+$"
# Mounting over these would hide or subvert what the container runtime and the sandbox itself rely on.
RESERVED_MOUNT_ROOTS = ("/proc", "/dev", "/sys", c.TMP_MOUNT_PATH)

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_NUMBER_RE = re.compile(r"^([0-9.]+)(.*)$")


def parse_quantity(quantity: int | str) -> Decimal:
    """Return the value of a Kubernetes quantity ("500m" is 0.5, "1Gi" is 1073741824)."""
    text = str(quantity)
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 2, 512Mi or 1Gi")
    number, suffix = _NUMBER_RE.match(text).groups()  # type: ignore[union-attr]
    if suffix in _BINARY_SUFFIXES:
        return Decimal(number) * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return Decimal(number) * _DECIMAL_SUFFIXES[suffix]
    return Decimal(number) * Decimal(10) ** int(suffix[1:])


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError("must be a non-negative Kubernetes quantity such as 500m, 2, 512Mi or 1Gi")
    parse_quantity(value)
    return value


# The times the operator computes with. Python's datetime ends at years 1 and 9999, so a time the API server accepts
# (9999-12-31T23:30:00-01:00 is in year 10000 in UTC) could not even be converted to UTC: every time read is brought
# into this range first, and expiresAt must lie in it (the CRD says so too).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9999, 1, 1, tzinfo=UTC)
TIME_RANGE_TEXT = "between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z"


def to_utc(moment: datetime) -> datetime:
    """The moment in UTC, brought into [EARLIEST_TIME, LATEST_TIME]; a time without a zone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # beyond year 1 or 9999 once the offset is applied
        return EARLIEST_TIME if moment.year < LATEST_TIME.year // 2 else LATEST_TIME
    return min(max(utc, EARLIEST_TIME), LATEST_TIME)


def seconds_after(moment: datetime, seconds: float) -> datetime:
    """``moment`` plus ``seconds``, at most LATEST_TIME."""
    try:
        return min(to_utc(moment) + timedelta(seconds=seconds), LATEST_TIME)
    except OverflowError:
        return LATEST_TIME


def format_time(moment: datetime) -> str:
    """Render a time the way Kubernetes does (RFC 3339, UTC, whole seconds), so equal times give equal bytes."""
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time into UTC within [EARLIEST_TIME, LATEST_TIME]; a time without a zone is UTC."""
    return to_utc(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))


def _check_time_range(moment: datetime) -> datetime:
    if to_utc(moment) != moment or not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError(f"must lie {TIME_RANGE_TEXT}")
    return to_utc(moment)


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(to_utc),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]
# A time a user writes: refused (not clamped) outside the range the operator computes with.
BoundedTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(_check_time_range),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """Schema extra holding CEL rules as (rule, message) pairs for `x-kubernetes-validations`."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class _Status(BaseModel):
    # Status is ours, but older operator versions or kubectl may have left keys we no longer know: reading must not
    # fail on them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class KeySelector(_Spec):
    """A key of a Secret or ConfigMap in the sandbox's namespace."""

    name: str = Field(
        description="Name of the Secret or ConfigMap in the sandbox's namespace.",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    key: str = Field(
        description="Key within it whose value becomes the variable.", max_length=253, pattern=CONFIG_KEY_PATTERN
    )
    optional: bool | None = Field(
        None, description="If true the sandbox starts even when the object or key is missing."
    )


class EnvVarSource(_Spec):
    """Where a variable's value comes from; the operator passes the reference on and never reads the value."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                "set exactly one of secretKeyRef and configMapKeyRef",
            )
        )
    )

    secret_key_ref: KeySelector | None = Field(
        None, alias="secretKeyRef", description="Take the value from a key of a Secret."
    )
    config_map_key_ref: KeySelector | None = Field(
        None, alias="configMapKeyRef", description="Take the value from a key of a ConfigMap."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("set exactly one of secretKeyRef and configMapKeyRef")
        return self


class EnvVar(_Spec):
    """An environment variable of the sandbox container."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.value) != has(self.valueFrom)", "set exactly one of value and valueFrom"))
    )

    name: str = Field(description="Name of the variable.", min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(
        None,
        description="Literal value. Do not put secrets here: use valueFrom.secretKeyRef.",
        max_length=c.MAX_ENV_VALUE_LENGTH,
    )
    value_from: EnvVarSource | None = Field(
        None, alias="valueFrom", description="Reference to a Secret or ConfigMap key holding the value."
    )

    @model_validator(mode="after")
    def _exactly_one_value(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value and valueFrom")
        return self


class ResourceRequests(_Spec):
    """Amounts reserved for scheduling when they should be lower than the limits."""

    cpu: Quantity | None = Field(None, description="CPU reserved, at most resources.cpu (e.g. 250m).")
    memory: Quantity | None = Field(None, description="Memory reserved, at most resources.memory (e.g. 256Mi).")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeralStorage", description="Local disk reserved, at most resources.ephemeralStorage."
    )


def _request_within_limit(resource: str, field_name: str) -> tuple[str, str]:
    rule = (
        f"!has(self.requests) || !has(self.requests.{field_name}) || !has(self.{field_name}) || "
        f"quantity(string(self.requests.{field_name})).compareTo(quantity(string(self.{field_name}))) <= 0"
    )
    return rule, f"requests.{field_name} must not exceed {field_name}"


class Resources(_Spec):
    """Limits of the sandbox container. Requests equal the limits unless `requests` lowers them."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _request_within_limit("cpu", "cpu"),
            _request_within_limit("memory", "memory"),
            _request_within_limit("ephemeral-storage", "ephemeralStorage"),
        )
    )

    cpu: Quantity = Field("500m", description="CPU limit (e.g. 500m, 2).")
    memory: Quantity = Field("512Mi", description="Memory limit; the container is OOMKilled above it (e.g. 512Mi).")
    ephemeral_storage: Quantity = Field(
        "2Gi",
        alias="ephemeralStorage",
        description=(
            "Local disk limit for everything the sandbox writes on the node: logs, /tmp and a non-persistent "
            "workspace. The pod is evicted above it."
        ),
    )
    requests: ResourceRequests | None = Field(
        None, description="Lower amounts to reserve for scheduling; each defaults to its limit."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if self.requests is None:
            return self
        for name in ("cpu", "memory", "ephemeral_storage"):
            requested = getattr(self.requests, name)
            if requested is not None and parse_quantity(requested) > parse_quantity(getattr(self, name)):
                alias = Resources.model_fields[name].alias or name
                raise ValueError(f"requests.{alias} must not exceed {alias}")
        return self

    def effective_requests(self) -> dict[str, int | str]:
        """Requests by Kubernetes resource name: the explicit request, else the limit."""
        requests = self.requests or ResourceRequests()
        return {
            "cpu": requests.cpu if requests.cpu is not None else self.cpu,
            "memory": requests.memory if requests.memory is not None else self.memory,
            "ephemeral-storage": (
                requests.ephemeral_storage if requests.ephemeral_storage is not None else self.ephemeral_storage
            ),
        }

    def limits(self) -> dict[str, int | str]:
        """Limits by Kubernetes resource name."""
        return {"cpu": self.cpu, "memory": self.memory, "ephemeral-storage": self.ephemeral_storage}


class Lifetime(_Spec):
    """When the sandbox expires and what happens then. Without ttlSeconds, expiresAt or idleTimeoutSeconds it never
    expires."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!(has(self.ttlSeconds) && has(self.expiresAt))", "set at most one of ttlSeconds and expiresAt")
        )
    )

    ttl_seconds: int | None = Field(
        None, alias="ttlSeconds", description="Seconds after creation at which the sandbox expires.", ge=1, le=31536000
    )
    expires_at: BoundedTimestamp | None = Field(
        None,
        alias="expiresAt",
        description=f"Time (RFC 3339) at which the sandbox expires, {TIME_RANGE_TEXT}.",
        json_schema_extra=_cel(
            (
                f"timestamp(self) >= timestamp('{format_time(EARLIEST_TIME)}') && "
                f"timestamp(self) < timestamp('{format_time(LATEST_TIME)}')",
                f"must lie {TIME_RANGE_TEXT}",
            )
        ),
    )
    idle_timeout_seconds: int | None = Field(
        None,
        alias="idleTimeoutSeconds",
        description=(
            "Seconds without activity after which the sandbox expires. Activity is the latest of the "
            f"{c.ANNOTATION_LAST_ACTIVITY} annotation (RFC 3339, bumped by clients), the pod start and the creation."
        ),
        ge=1,
        le=31536000,
    )
    on_expiry: c.OnExpiry = Field(
        c.OnExpiry.DELETE,
        alias="onExpiry",
        description=(
            "Delete removes the sandbox and everything it owns. Suspend deletes the pod and keeps the rest; "
            "moving the deadline later (new activity, a longer TTL) resumes it."
        ),
    )

    @model_validator(mode="after")
    def _one_absolute_deadline(self) -> Lifetime:
        if self.ttl_seconds is not None and self.expires_at is not None:
            raise ValueError("set at most one of ttlSeconds and expiresAt")
        return self


class PortRule(_Spec):
    """A destination port egress is allowed to."""

    port: int = Field(description="Port number.", ge=1, le=65535)
    protocol: c.Protocol = Field(c.Protocol.TCP, description="TCP or UDP.")


def _check_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"must be a CIDR with no host bits set, such as 203.0.113.0/24: {error}") from None
    link_local = ipaddress.ip_network(c.LINK_LOCAL_V4 if network.version == 4 else c.LINK_LOCAL_V6)
    if network.subnet_of(link_local):  # type: ignore[arg-type]
        raise ValueError(f"must not lie within link-local {link_local}: cloud metadata is never reachable")
    return value


_CIDR_RULES = _cel(
    ("isCIDR(self)", "must be a CIDR such as 203.0.113.0/24"),
    ("!isCIDR(self) || cidr(self) == cidr(self).masked()", "must have no host bits set"),
    (
        f"!isCIDR(self) || (cidr(self).ip().family() == 4 ? !cidr('{c.LINK_LOCAL_V4}').containsCIDR(cidr(self)) "
        f": !cidr('{c.LINK_LOCAL_V6}').containsCIDR(cidr(self)))",
        "must not lie within link-local addresses: cloud metadata is never reachable",
    ),
)


class EgressRule(_Spec):
    """Addresses, and optionally ports, the sandbox may connect to."""

    cidr: Annotated[str, AfterValidator(_check_cidr)] = Field(
        description=(
            "IPv4 or IPv6 CIDR. Link-local addresses (169.254.0.0/16, fe80::/10) are always excluded from it "
            "and a CIDR entirely within them is refused."
        ),
        max_length=64,
        json_schema_extra=_CIDR_RULES,
    )
    ports: list[PortRule] = Field(
        default_factory=list,
        description="Ports allowed on these addresses; empty allows every port.",
        max_length=c.MAX_RULE_PORTS,
    )


class Egress(_Spec):
    """Outgoing connections the sandbox may open."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                # has() guards: the API server also checks these rules against the bare `default: {}`.
                "has(self.mode) && self.mode == 'AllowList' ? (has(self.allow) && size(self.allow) > 0) "
                ": (!has(self.allow) || size(self.allow) == 0)",
                "allow must list at least one rule when mode is AllowList, and be empty otherwise",
            )
        )
    )

    mode: c.EgressMode = Field(
        c.EgressMode.NONE,
        description=(
            "None: no egress. AllowList: only the addresses in allow. Internet: public addresses only; private, "
            "shared, loopback and link-local ranges stay unreachable."
        ),
    )
    allow: list[EgressRule] = Field(
        default_factory=list, description="Allowed destinations when mode is AllowList.", max_length=c.MAX_ALLOW_RULES
    )

    @model_validator(mode="after")
    def _allow_list_iff_mode(self) -> Egress:
        if (self.mode is c.EgressMode.ALLOW_LIST) != bool(self.allow):
            raise ValueError("allow must list at least one rule when mode is AllowList, and be empty otherwise")
        return self


class ExposedPort(_Spec):
    """A container port other pods in the cluster may connect to, through the sandbox's Service."""

    name: str = Field(
        description="Port name (IANA service name: lowercase letters, digits and '-').",
        min_length=1,
        max_length=15,
        pattern=PORT_NAME_PATTERN,
    )
    port: int = Field(description="Port number the process in the sandbox listens on.", ge=1, le=65535)
    protocol: c.Protocol = Field(c.Protocol.TCP, description="TCP or UDP.")


class Network(_Spec):
    """Network access of the sandbox. Everything not allowed here is denied by a NetworkPolicy."""

    egress: Egress = Field(
        default_factory=Egress, description="Outgoing connections.", json_schema_extra={"default": {}}
    )
    allow_dns: bool | None = Field(
        None,
        alias="allowDNS",
        description=(
            "Allow DNS queries to the cluster DNS (kube-dns in kube-system); egress by name needs it. Unset means the "
            "operator's default (SANDBOX_OPERATOR_DEFAULT_ALLOW_DNS, true unless configured)."
        ),
    )
    ports: list[ExposedPort] = Field(
        default_factory=list,
        description="Ports exposed to other pods in the cluster through a ClusterIP Service; none means no Service.",
        max_length=c.MAX_EXPOSED_PORTS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["port", "protocol"],
            **_cel(("self.all(p, self.exists_one(q, q.name == p.name))", "port names must be unique")),
        },
    )

    @model_validator(mode="after")
    def _unique_ports(self) -> Network:
        if len({p.name for p in self.ports}) != len(self.ports):
            raise ValueError("port names must be unique")
        if len({(p.port, p.protocol) for p in self.ports}) != len(self.ports):
            raise ValueError("each port and protocol may be listed once")
        return self


def _check_mount_path(value: str) -> str:
    if any(value == root or value.startswith(root + "/") for root in RESERVED_MOUNT_ROOTS):
        raise ValueError(f"must not be or lie under {', '.join(RESERVED_MOUNT_ROOTS)}")
    return value


_RESERVED_ROOTS_CEL = "[" + ", ".join(f"'{root}'" for root in RESERVED_MOUNT_ROOTS) + "]"


class Workspace(_Spec):
    """The writable directory of the sandbox: a size-limited emptyDir, or a PersistentVolumeClaim that survives
    suspension."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            # An absent `persistent` is its default, false; the API server checks these against `default: {}` too.
            (
                "(has(self.persistent) && self.persistent) == (has(oldSelf.persistent) && oldSelf.persistent)",
                "workspace.persistent is immutable",
            ),
            (
                "!(has(self.persistent) && self.persistent) || "
                "(has(self.size) == has(oldSelf.size) && (!has(self.size) || self.size == oldSelf.size))",
                "workspace.size of a persistent workspace is immutable",
            ),
            (
                "has(self.storageClassName) == has(oldSelf.storageClassName) && "
                "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
                "workspace.storageClassName is immutable",
            ),
        )
    )

    size: Quantity = Field("1Gi", description="Size of the workspace (e.g. 1Gi). Immutable when persistent.")
    persistent: bool = Field(
        False,
        description=(
            "Keep the workspace in a PersistentVolumeClaim that survives suspension and pod recreation "
            "(deleted with the Sandbox). Immutable."
        ),
    )
    storage_class_name: str | None = Field(
        None,
        alias="storageClassName",
        description="StorageClass of the PersistentVolumeClaim; the cluster default if unset. Immutable.",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    mount_path: Annotated[str, AfterValidator(_check_mount_path)] = Field(
        "/workspace",
        alias="mountPath",
        description="Absolute path the workspace is mounted at; not /tmp, /proc, /dev or /sys.",
        max_length=256,
        pattern=MOUNT_PATH_PATTERN,
        json_schema_extra=_cel(
            (
                f"!{_RESERVED_ROOTS_CEL}.exists(r, self == r || self.startsWith(r + '/'))",
                "must not be or lie under /proc, /dev, /sys or /tmp",
            )
        ),
    )


class SandboxSpec(_Spec):
    """Desired state of a Sandbox: one locked-down pod with its workspace, network policy and lifetime. A change to
    anything the pod is made of (image, command, env, resources, ports, workspace) replaces the pod; the contents of a
    non-persistent workspace are lost then."""

    image: str = Field(
        description="Container image to run, e.g. python:3.12-slim. It runs as uid 65532 with a read-only root.",
        min_length=1,
        max_length=c.MAX_IMAGE_LENGTH,
        pattern=IMAGE_PATTERN,
    )
    image_pull_policy: c.PullPolicy = Field(
        c.PullPolicy.IF_NOT_PRESENT, alias="imagePullPolicy", description="Always, IfNotPresent or Never."
    )
    command: list[Annotated[str, Field(max_length=c.MAX_ARG_LENGTH)]] = Field(
        default_factory=list, description="Entrypoint; the image's ENTRYPOINT if empty.", max_length=c.MAX_ARGS
    )
    args: list[Annotated[str, Field(max_length=c.MAX_ARG_LENGTH)]] = Field(
        default_factory=list,
        description="Arguments to the entrypoint; the image's CMD if empty.",
        max_length=c.MAX_ARGS,
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Environment variables: literal values or references to Secret/ConfigMap keys.",
        max_length=c.MAX_ENV,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="CPU, memory and local disk of the sandbox.",
        json_schema_extra={"default": {}},
    )
    lifetime: Lifetime = Field(
        default_factory=Lifetime,
        description="When the sandbox expires and what happens then.",
        json_schema_extra={"default": {}},
    )
    network: Network = Field(
        default_factory=Network,
        description="Egress, DNS and exposed ports; everything else is denied.",
        json_schema_extra={"default": {}},
    )
    workspace: Workspace = Field(
        default_factory=Workspace,
        description="The writable workspace directory.",
        json_schema_extra={"default": {}},
    )
    suspended: bool = Field(
        False, description="Delete the pod and keep the workspace, Service and NetworkPolicy; false resumes."
    )
    runtime_class_name: str | None = Field(
        None,
        alias="runtimeClassName",
        description="RuntimeClass for stronger isolation (e.g. gvisor, kata).",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )


class Condition(_Status):
    """An aspect of the sandbox's state, following Kubernetes API conventions."""

    type: str = Field(description="Ready, Suspended or Expired.", max_length=64)
    status: c.ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for programs.", max_length=64)
    message: str = Field("", description="Detail for humans.", max_length=c.MAX_MESSAGE_LENGTH)
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec this condition reflects.", ge=0
    )
    last_transition_time: Timestamp = Field(
        alias="lastTransitionTime", description="When status or reason last changed."
    )


class SandboxStatus(_Status):
    """Observed state of a Sandbox, written by the operator only."""

    phase: c.SandboxPhase | None = Field(
        None, description="Pending, Ready, Suspended, Expired, Failed or Terminating; conditions carry the detail."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Suspended and Expired conditions.",
        max_length=c.MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec this status reflects.", ge=0
    )
    pod_name: str | None = Field(None, alias="podName", description="Name of the sandbox pod.", max_length=253)
    pod_ip: str | None = Field(None, alias="podIP", description="IP address of the sandbox pod.", max_length=64)
    service_name: str | None = Field(
        None, alias="serviceName", description="Name of the Service exposing the ports.", max_length=253
    )
    started_at: Timestamp | None = Field(None, alias="startedAt", description="When the sandbox container started.")
    expires_at: Timestamp | None = Field(
        None, alias="expiresAt", description="When the sandbox expires unless there is activity; absent if never."
    )
    last_activity_at: Timestamp | None = Field(
        None, alias="lastActivityAt", description="Latest activity seen, which the idle timeout counts from."
    )
    message: str | None = Field(None, description="Summary for humans.", max_length=c.MAX_MESSAGE_LENGTH)

    def condition(self, kind: c.ConditionType) -> Condition | None:
        """The condition of the given type, if present."""
        return next((cond for cond in self.conditions if cond.type == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """The `status` object as written to the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class OperatorDefaults:
    """Defaults the operator's configuration supplies for fields a Sandbox leaves unset."""

    allow_dns: bool = True
    ttl_seconds: int | None = None
    # Where sandbox pods run (e.g. a tainted node pool for untrusted code); set by the platform, not by users.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    # CIDRs no sandbox may reach whatever its egress says (e.g. the API server's endpoints), like link-local.
    forbidden_egress: tuple[str, ...] = ()
    # The Tenant's limits.maxLifetimeSeconds: a deadline of its own, so no Sandbox outlives it whatever it says.
    max_lifetime_seconds: int | None = None


def apply_operator_defaults(spec: SandboxSpec, defaults: OperatorDefaults) -> SandboxSpec:
    """The spec with operator defaults filled in; the operator acts on it but never writes it back."""
    network, lifetime = spec.network, spec.lifetime
    if network.allow_dns is None:
        network = network.model_copy(update={"allow_dns": defaults.allow_dns})
    if defaults.ttl_seconds is not None and lifetime.ttl_seconds is None and lifetime.expires_at is None:
        lifetime = lifetime.model_copy(update={"ttl_seconds": defaults.ttl_seconds})
    return spec.model_copy(update={"network": network, "lifetime": lifetime})


class InvalidSandboxError(ValueError):
    """A Sandbox body that does not validate; the message names the offending fields but never their values."""


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """Summarise a pydantic error by field path and rule, leaving input values out (they may be secrets)."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in (prefix, *detail["loc"]))
        problems.append(f"{path}: {detail['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)[: c.MAX_MESSAGE_LENGTH]


def read_status(body: Mapping[str, Any]) -> SandboxStatus:
    """The stored status; one that does not validate reads as empty."""
    try:
        return SandboxStatus.model_validate(body.get("status") or {})
    except ValidationError:
        # A status we cannot read is rebuilt from scratch: it only costs fresh transition times.
        return SandboxStatus()


def optional_time(text: Any) -> datetime | None:
    """Parse an RFC 3339 time; None for anything that is not one."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class SandboxObject:
    """A Sandbox as the operator sees it: identity, metadata it reads, the validated spec and its last status."""

    name: str
    namespace: str
    uid: str
    generation: int
    creation_timestamp: datetime
    spec: SandboxSpec
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    deletion_timestamp: datetime | None = None
    status: SandboxStatus = field(default_factory=SandboxStatus)
    defaults: OperatorDefaults = field(default_factory=lambda: OperatorDefaults())

    @classmethod
    def from_body(cls, body: Mapping[str, Any], defaults: OperatorDefaults | None = None) -> SandboxObject:
        """Validate a Sandbox body and fill in operator defaults; raise InvalidSandboxError naming the wrong fields."""
        meta = body.get("metadata") or {}
        defaults = defaults or OperatorDefaults()
        name = str(meta.get("name", ""))
        if len(name) > c.MAX_NAME_LENGTH or not re.match(DNS_LABEL_PATTERN, name):
            raise InvalidSandboxError("metadata.name: must be a DNS label (lowercase, digits, '-') of at most 63 chars")
        try:
            spec = SandboxSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            raise InvalidSandboxError(describe_validation_error(error, "spec")) from None
        return cls(
            name=name,
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            creation_timestamp=optional_time(meta.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC),
            spec=apply_operator_defaults(spec, defaults),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            deletion_timestamp=optional_time(meta.get("deletionTimestamp")),
            status=read_status(body),
            defaults=defaults,
        )

    @property
    def last_activity_annotation(self) -> datetime | None:
        """The client-reported activity time; a malformed annotation is ignored."""
        return optional_time(self.annotations.get(c.ANNOTATION_LAST_ACTIVITY))


@dataclass(frozen=True)
class InvalidSandbox:
    """A Sandbox whose body failed validation: enough to report the error in its status."""

    name: str
    namespace: str
    generation: int
    error: str
    status: SandboxStatus = field(default_factory=SandboxStatus)


def load_sandbox(body: Mapping[str, Any], defaults: OperatorDefaults | None = None) -> SandboxObject | InvalidSandbox:
    """Parse a Sandbox body, returning an InvalidSandbox carrying the error instead of raising."""
    try:
        return SandboxObject.from_body(body, defaults)
    except InvalidSandboxError as error:
        meta = body.get("metadata") or {}
        return InvalidSandbox(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            generation=int(meta.get("generation") or 0),
            error=str(error),
            status=read_status(body),
        )
