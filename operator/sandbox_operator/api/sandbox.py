"""The Sandbox resource: its spec and status models (the CRD is generated from them and bodies are validated with them),
and a Sandbox as the operator reads it. Imports no Kopf and no Kubernetes client."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from sandbox_operator.api import names as c
from sandbox_operator.api.schema import (
    CONFIG_KEY_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    EARLIEST_TIME,
    ENV_NAME_PATTERN,
    IMAGE_PATTERN,
    LATEST_TIME,
    MOUNT_PATH_PATTERN,
    PORT_NAME_PATTERN,
    TIME_RANGE_TEXT,
    BoundedTimestamp,
    Condition,
    Quantity,
    SpecModel,
    StatusModel,
    Timestamp,
    cel,
    describe_validation_error,
    format_time,
    name_error,
    optional_time,
    parse_quantity,
    quantity_not_above,
    read_status,
    seconds_after,
)

# Mounting over these would hide or subvert what the container runtime and the sandbox itself rely on.
RESERVED_MOUNT_ROOTS = ("/proc", "/dev", "/sys", c.TMP_MOUNT_PATH)


class KeySelector(SpecModel):
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


class EnvVarSource(SpecModel):
    """Where a variable's value comes from; the operator passes the reference on and never reads the value."""

    model_config = ConfigDict(
        json_schema_extra=cel(
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


class EnvVar(SpecModel):
    """An environment variable of the sandbox container."""

    model_config = ConfigDict(
        json_schema_extra=cel(("has(self.value) != has(self.valueFrom)", "set exactly one of value and valueFrom"))
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


class ResourceRequests(SpecModel):
    """Amounts reserved for scheduling when they should be lower than the limits."""

    cpu: Quantity | None = Field(None, description="CPU reserved, at most resources.cpu (e.g. 250m).")
    memory: Quantity | None = Field(None, description="Memory reserved, at most resources.memory (e.g. 256Mi).")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeralStorage", description="Local disk reserved, at most resources.ephemeralStorage."
    )


class Resources(SpecModel):
    """Limits of the sandbox container. Requests equal the limits unless `requests` lowers them."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            quantity_not_above("requests.cpu", "cpu"),
            quantity_not_above("requests.memory", "memory"),
            quantity_not_above("requests.ephemeralStorage", "ephemeralStorage"),
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


class Lifetime(SpecModel):
    """When the sandbox expires and what happens then. Without ttlSeconds, expiresAt or idleTimeoutSeconds it never
    expires."""

    model_config = ConfigDict(
        json_schema_extra=cel(
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
        json_schema_extra=cel(
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


class PortRule(SpecModel):
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


_CIDR_RULES = cel(
    ("isCIDR(self)", "must be a CIDR such as 203.0.113.0/24"),
    ("!isCIDR(self) || cidr(self) == cidr(self).masked()", "must have no host bits set"),
    (
        f"!isCIDR(self) || (cidr(self).ip().family() == 4 ? !cidr('{c.LINK_LOCAL_V4}').containsCIDR(cidr(self)) "
        f": !cidr('{c.LINK_LOCAL_V6}').containsCIDR(cidr(self)))",
        "must not lie within link-local addresses: cloud metadata is never reachable",
    ),
)


class EgressRule(SpecModel):
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


class Egress(SpecModel):
    """Outgoing connections the sandbox may open."""

    model_config = ConfigDict(
        json_schema_extra=cel(
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


class ExposedPort(SpecModel):
    """A container port other pods in the cluster may connect to, through the sandbox's Service."""

    name: str = Field(
        description="Port name (IANA service name: lowercase letters, digits and '-').",
        min_length=1,
        max_length=15,
        pattern=PORT_NAME_PATTERN,
    )
    port: int = Field(description="Port number the process in the sandbox listens on.", ge=1, le=65535)
    protocol: c.Protocol = Field(c.Protocol.TCP, description="TCP or UDP.")


class Network(SpecModel):
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
            **cel(("self.all(p, self.exists_one(q, q.name == p.name))", "port names must be unique")),
        },
    )
    readiness_port: str | None = Field(
        None,
        alias="readinessPort",
        description=(
            "Name of an exposed TCP port: the sandbox is Ready only once something listens on it (a TCP readiness "
            "check every 2 s). Unset: Ready as soon as the container runs."
        ),
        max_length=15,
        pattern=PORT_NAME_PATTERN,
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.readinessPort) || (has(self.ports) && self.ports.exists(p, p.name == self.readinessPort "
                "&& (!has(p.protocol) || p.protocol == 'TCP')))",
                "readinessPort must name an exposed TCP port",
            )
        )
    )

    @model_validator(mode="after")
    def _unique_ports(self) -> Network:
        if len({p.name for p in self.ports}) != len(self.ports):
            raise ValueError("port names must be unique")
        if len({(p.port, p.protocol) for p in self.ports}) != len(self.ports):
            raise ValueError("each port and protocol may be listed once")
        if self.readiness_port is not None and self.readiness_port_number() is None:
            raise ValueError("readinessPort must name an exposed TCP port")
        return self

    def readiness_port_number(self) -> int | None:
        """The number of the port the readiness check connects to, if one is named."""
        return next(
            (p.port for p in self.ports if p.name == self.readiness_port and p.protocol is c.Protocol.TCP), None
        )


def _check_mount_path(value: str) -> str:
    if any(value == root or value.startswith(root + "/") for root in RESERVED_MOUNT_ROOTS):
        raise ValueError(f"must not be or lie under {', '.join(RESERVED_MOUNT_ROOTS)}")
    return value


_RESERVED_ROOTS_CEL = "[" + ", ".join(f"'{root}'" for root in RESERVED_MOUNT_ROOTS) + "]"


class Workspace(SpecModel):
    """The writable directory of the sandbox: a size-limited emptyDir, or a PersistentVolumeClaim that survives
    suspension."""

    model_config = ConfigDict(
        json_schema_extra=cel(
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
        json_schema_extra=cel(
            (
                f"!{_RESERVED_ROOTS_CEL}.exists(r, self == r || self.startsWith(r + '/'))",
                "must not be or lie under /proc, /dev, /sys or /tmp",
            )
        ),
    )


class PodRecipe(SpecModel):
    """What a sandbox's pod is made of: image, command, env, resources, network, workspace and lifetime. A Sandbox
    writes it out in full or takes it from a SandboxTemplate."""

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
    runtime_class_name: str | None = Field(
        None,
        alias="runtimeClassName",
        description="RuntimeClass for stronger isolation (e.g. gvisor, kata).",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )



def literal_values(recipe: PodRecipe) -> list[str]:
    """The literal env values of a recipe: no message the operator writes may repeat one."""
    return [var.value for var in recipe.env if var.value]


class TemplateRef(SpecModel):
    """The SandboxTemplate (in the Sandbox's namespace) a Sandbox takes its pod, network and workspace from."""

    name: str = Field(
        description="Name of the SandboxTemplate in the same namespace.",
        min_length=1,
        max_length=c.MAX_NAME_LENGTH,
        pattern=DNS_LABEL_PATTERN,
    )


# Fields of a Sandbox that may be set next to templateRef; everything else comes from the template.
TEMPLATED_OWN_FIELDS = ("templateRef", "lifetime", "suspended")


def _unset(model: type[SpecModel], path: str, names: list[str] | None = None) -> str:
    """A CEL expression true when the fields ``names`` (all by default) of ``model`` at ``path`` (a CEL path such as
    ``self.resources``) are unset or at the default the API server fills in; generated from the model so the rule
    cannot drift from it."""
    parts = []
    for name in names if names is not None else list(model.model_fields):
        info = model.model_fields[name]
        field_path = f"{path}.{info.alias or name}"
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default is None:
            parts.append(f"!has({field_path})")
        elif default == []:
            parts.append(f"(!has({field_path}) || size({field_path}) == 0)")
        elif isinstance(default, SpecModel):
            parts.append(f"(!has({field_path}) || ({_unset(type(default), field_path)}))")
        elif isinstance(default, bool):
            parts.append(f"(!has({field_path}) || {field_path} == {str(default).lower()})")
        elif isinstance(default, str):
            # Quantities are int-or-string: string() compares either form with the default as written.
            parts.append(f"(!has({field_path}) || string({field_path}) == '{default}')")
        else:  # a new kind of default must be taught here
            raise TypeError(f"{field_path}: cannot express the default {default!r} in CEL")
    return " && ".join(parts)


def _from_template_only() -> list[str]:
    """The recipe fields a Sandbox with templateRef leaves to its template."""
    return [name for name, info in PodRecipe.model_fields.items() if (info.alias or name) not in TEMPLATED_OWN_FIELDS]


TEMPLATED_MESSAGE = (
    f"with templateRef, set only {', '.join(TEMPLATED_OWN_FIELDS)}: the pod, network and workspace come from the "
    "template"
)


class SandboxSpec(PodRecipe):
    """Desired state of a Sandbox: one locked-down pod with its workspace, network policy and lifetime, written out
    here (image, ...) or taken from a SandboxTemplate (templateRef). A change to anything the pod is made of (image,
    command, env, resources, ports, workspace) replaces the pod; the contents of a non-persistent workspace are lost
    then."""

    image: str | None = Field(  # type: ignore[assignment]
        None,
        description=(
            "Container image to run, e.g. python:3.12-slim. It runs as uid 65532 with a read-only root. Required "
            "unless templateRef is set."
        ),
        min_length=1,
        max_length=c.MAX_IMAGE_LENGTH,
        pattern=IMAGE_PATTERN,
    )
    template_ref: TemplateRef | None = Field(
        None,
        alias="templateRef",
        description=(
            "Take the pod, network, workspace and lifetime defaults from this SandboxTemplate; the Sandbox may then "
            "set only lifetime (the stricter of its own and the template's wins) and suspended. A SandboxPool of the "
            "template serves it a warm pod when one is Ready. Immutable."
        ),
    )
    suspended: bool = Field(
        False, description="Delete the pod and keep the workspace, Service and NetworkPolicy; false resumes."
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("has(self.image) != has(self.templateRef)", "set exactly one of image and templateRef"),
            (f"!has(self.templateRef) || ({_unset(PodRecipe, 'self', _from_template_only())})", TEMPLATED_MESSAGE),
            (
                "has(self.templateRef) == has(oldSelf.templateRef) && "
                "(!has(self.templateRef) || self.templateRef.name == oldSelf.templateRef.name)",
                "templateRef is immutable",
            ),
        )
    )

    @model_validator(mode="after")
    def _image_or_template(self) -> SandboxSpec:
        if (self.image is None) == (self.template_ref is None):
            raise ValueError("set exactly one of image and templateRef")
        if self.template_ref is not None:
            fields = PodRecipe.model_fields
            differing = [
                fields[name].alias or name for name in _from_template_only()
                if getattr(self, name) != (None if fields[name].is_required() else
                                           fields[name].get_default(call_default_factory=True))
            ]
            if differing:
                raise ValueError(f"{TEMPLATED_MESSAGE} ({', '.join(differing)} set)")
        return self


class SandboxStatus(StatusModel):
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
    launch: c.Launch | None = Field(
        None,
        description="How the current pod started: Warm (claimed from a SandboxPool) or Cold (made for this sandbox).",
    )
    template_hash: str | None = Field(
        None,
        alias="templateHash",
        description=(
            "Hash of the template recipe the current pod was made from; a template edited since leaves the pod as "
            "it is (the next pod takes the new recipe)."
        ),
        max_length=64,
    )


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


class MissingTemplateError(InvalidSandboxError):
    """The SandboxTemplate a Sandbox names does not exist (yet, or any more)."""


def from_template(spec: SandboxSpec, recipe: PodRecipe, created: datetime) -> SandboxSpec:
    """The spec a Sandbox with templateRef runs: the template's recipe, the Sandbox's suspension and the stricter of
    the two lifetimes (its deadline the earlier, its idle timeout the shorter; Suspend on expiry if either says so)."""
    own, limit = spec.lifetime, recipe.lifetime

    def deadline(lifetime: Lifetime) -> datetime | None:
        if lifetime.expires_at is not None:
            return lifetime.expires_at
        return seconds_after(created, lifetime.ttl_seconds) if lifetime.ttl_seconds is not None else None

    own_deadline, limit_deadline = deadline(own), deadline(limit)
    absolute = own if limit_deadline is None or (own_deadline is not None and own_deadline <= limit_deadline) else limit
    idles = [value for value in (own.idle_timeout_seconds, limit.idle_timeout_seconds) if value is not None]
    suspend = c.OnExpiry.SUSPEND in (own.on_expiry, limit.on_expiry)
    lifetime = Lifetime(
        ttl_seconds=absolute.ttl_seconds,
        expires_at=absolute.expires_at,
        idle_timeout_seconds=min(idles, default=None),
        on_expiry=c.OnExpiry.SUSPEND if suspend else c.OnExpiry.DELETE,
    )
    recipe_fields = {name: getattr(recipe, name) for name in PodRecipe.model_fields}
    return SandboxSpec.model_construct(
        **{**recipe_fields, "lifetime": lifetime, "template_ref": spec.template_ref, "suspended": spec.suspended}
    )


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
    def from_body(
        cls, body: Mapping[str, Any], defaults: OperatorDefaults | None = None, template: PodRecipe | None = None
    ) -> SandboxObject:
        """Validate a Sandbox body, take its template's recipe (``template``: the SandboxTemplate its templateRef
        names, as found) and fill in operator defaults; raise InvalidSandboxError naming the wrong fields, or
        MissingTemplateError."""
        meta = body.get("metadata") or {}
        defaults = defaults or OperatorDefaults()
        name = str(meta.get("name", ""))
        wrong_name = name_error(body)
        if wrong_name is not None:
            raise InvalidSandboxError(wrong_name)
        try:
            spec = SandboxSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            raise InvalidSandboxError(describe_validation_error(error, "spec")) from None
        created = optional_time(meta.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)
        if spec.template_ref is not None:
            if template is None:
                raise MissingTemplateError(f"SandboxTemplate {spec.template_ref.name} does not exist")
            spec = from_template(spec, template, created)
        return cls(
            name=name,
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            creation_timestamp=created,
            spec=apply_operator_defaults(spec, defaults),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            deletion_timestamp=optional_time(meta.get("deletionTimestamp")),
            status=read_status(SandboxStatus, body),
            defaults=defaults,
        )

    @property
    def last_activity_annotation(self) -> datetime | None:
        """The client-reported activity time; a malformed annotation is ignored."""
        return optional_time(self.annotations.get(c.ANNOTATION_LAST_ACTIVITY))


@dataclass(frozen=True)
class InvalidSandbox:
    """A Sandbox whose body failed validation, or whose template is missing: enough to report it in its status."""

    name: str
    namespace: str
    generation: int
    error: str
    status: SandboxStatus = field(default_factory=SandboxStatus)
    reason: c.Reason = c.Reason.INVALID_SPEC
    # What its own lifetime says happens at the deadline (a missing template leaves only that to go by).
    on_expiry: str | None = None


def load_sandbox(
    body: Mapping[str, Any], defaults: OperatorDefaults | None = None, template: PodRecipe | None = None
) -> SandboxObject | InvalidSandbox:
    """Parse a Sandbox body, returning an InvalidSandbox carrying the error instead of raising."""
    try:
        return SandboxObject.from_body(body, defaults, template)
    except InvalidSandboxError as error:
        meta = body.get("metadata") or {}
        return InvalidSandbox(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            generation=int(meta.get("generation") or 0),
            error=str(error),
            status=read_status(SandboxStatus, body),
            reason=c.Reason.TEMPLATE_NOT_FOUND if isinstance(error, MissingTemplateError) else c.Reason.INVALID_SPEC,
            on_expiry=on_expiry_of(body),
        )


def on_expiry_of(body: Mapping[str, Any]) -> str | None:
    """spec.lifetime.onExpiry of a body that may not validate, read defensively (anything unexpected is unset)."""
    spec = body.get("spec")
    lifetime = spec.get("lifetime") if isinstance(spec, Mapping) else None
    value = lifetime.get("onExpiry") if isinstance(lifetime, Mapping) else None
    return value if isinstance(value, str) else None
