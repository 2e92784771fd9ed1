"""The CustomResourceDefinitions of this API (Sandbox, Tenant, SandboxTemplate, SandboxPool), generated from the
pydantic models so the two can never drift.

Regenerate the committed files with `python -m sandbox_operator.manifests` (or one at a time:
`python -m sandbox_operator.api.crd [--tenant | --template | --pool] > crds/...`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxSpec, SandboxStatus
from sandbox_operator.api.schema import DNS_LABEL_PATTERN
from sandbox_operator.api.template import SandboxPoolSpec, SandboxPoolStatus, SandboxTemplateSpec
from sandbox_operator.api.tenant import TenantSpec, TenantStatus

# Keywords a structural schema may carry and that this generator knows how to pass on; anything else pydantic emits
# (exclusiveMinimum as a number, const, oneOf, ...) fails loudly instead of producing a CRD the API server refuses.
_ALLOWED_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "format",
        "anyOf",
        "x-kubernetes-int-or-string",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)


# Order of keys in each emitted node, so the YAML reads type and description first.
_KEY_ORDER = [
    "type",
    "description",
    "required",
    *sorted(_ALLOWED_KEYWORDS - {"type", "description", "required", "properties", "items"}),
    "items",
    "properties",
]


class SchemaError(ValueError):
    """The models produced a schema that cannot become a structural CRD schema."""


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every `$ref` by a copy of its definition; keys beside the `$ref` (a field's description) win."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        target.update({key: value for key, value in node.items() if key != "$ref"})
        return _inline_refs(target, defs)
    return {key: _inline_refs(value, defs) for key, value in node.items()}


def _drop_null_branch(node: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's `anyOf: [X, null]` for optional fields into X: in Kubernetes an unset field is absent."""
    branches = node.get("anyOf")
    if not branches or node.get("x-kubernetes-int-or-string"):
        return node
    kept = [branch for branch in branches if branch.get("type") != "null"]
    if len(kept) != 1:
        raise SchemaError(f"cannot express anyOf {branches!r} in a structural schema")
    merged = {key: value for key, value in node.items() if key != "anyOf"}
    merged = {**kept[0], **merged}
    if merged.get("default", ...) is None:
        del merged["default"]
    return merged


def _structural(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Clean one schema node into structural form and check the bounds the API server's CEL cost estimate needs."""
    node = _drop_null_branch(node)
    node = {key: value for key, value in node.items() if key not in ("title", "additionalProperties")}
    unknown = set(node) - _ALLOWED_KEYWORDS
    if unknown:
        raise SchemaError(f"{path}: unsupported schema keywords {sorted(unknown)}")
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        raise SchemaError(f"{path}: string without maxLength")
    if kind == "array":
        if "maxItems" not in node:
            raise SchemaError(f"{path}: list without maxItems")
        node["items"] = _structural(node["items"], f"{path}[]")
    if kind == "object":
        properties = {}
        for name, child in node.get("properties", {}).items():
            if not child.get("description"):
                raise SchemaError(f"{path}.{name}: property without description")
            properties[name] = _structural(child, f"{path}.{name}")
        node["properties"] = properties
    if "description" in node:
        # Docstrings wrap at the source's line length; kubectl explain re-wraps, so one line reads best.
        node["description"] = " ".join(node["description"].split())
        # kubectl explain shows an int-or-string as <Object> and no default: the description says both.
        if node.get("x-kubernetes-int-or-string"):
            node["description"] += " A Kubernetes quantity: an integer or a string (500m, 2, 512Mi, 1Gi)."
        default = node.get("default")
        if isinstance(default, bool | int | str) and default != "" and "Default" not in node["description"]:
            shown = str(default).lower() if isinstance(default, bool) else default
            node["description"] += f" Default: {shown}."
    return {key: node[key] for key in sorted(node, key=_KEY_ORDER.index)}


def model_schema(model: type[BaseModel], path: str) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model: refs inlined, optional fields plain, every bound checked."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_inline_refs(raw, defs), path)


def object_schema(
    kind: str, description: str, spec: type[BaseModel], status: type[BaseModel] | None
) -> dict[str, Any]:
    """The `openAPIV3Schema` of one of this API's kinds: its spec and status models, and the name rule."""
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"API version of this object: {c.API_VERSION}."},
            "kind": {"type": "string", "description": f"Kind of this object: {kind}."},
            "metadata": METADATA_SCHEMA,
            "spec": model_schema(spec, "spec"),
        },
        "x-kubernetes-validations": [_name_rule()],
    }
    if status is not None:
        schema["properties"]["status"] = model_schema(status, "status")  # type: ignore[index]
    return schema


def sandbox_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the Sandbox resource."""
    return object_schema(
        c.KIND,
        "A Sandbox is a locked-down pod for running untrusted code, with a size-limited workspace, a default-deny "
        "network policy and a lifetime after which it is deleted or suspended.",
        SandboxSpec,
        SandboxStatus,
    )


# metadata's schema is built in; a CRD may only declare `name` (and generateName), which the rule below needs as its
# fieldPath.
METADATA_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}}


def _name_rule() -> dict[str, str]:
    """The rule on metadata.name shared by every kind, reported at that field (not at the object's root)."""
    return {
        # The name becomes part of other objects' names and label values, so it must be a short DNS label.
        "rule": f"size(self.metadata.name) <= {c.MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
        "message": "metadata.name must be a DNS label (lowercase letters, digits, '-') of at most 63 chars",
        "fieldPath": ".metadata.name",
        "reason": "FieldValueInvalid",
    }


def _ready_column(name: str, field_name: str, description: str, condition: str) -> dict[str, Any]:
    """A printer column reading one field of the `condition` condition (Ready and its reason)."""
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field_name}',
        "description": description,
    }


def crd(
    names: tuple[str, str, str, str, tuple[str, ...]], schema: dict[str, Any], columns: list[dict[str, Any]], *,
    scope: str = "Namespaced", categories: tuple[str, ...] = ("sandbox-operator",),
    subresources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A CustomResourceDefinition of this API's group, one version: ``names`` is (kind, list kind, plural, singular,
    short names)."""
    kind, list_kind, plural, singular, short_names = names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{c.GROUP}", "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "spec": {
            "group": c.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": list_kind,
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(categories),
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources or {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


AGE_COLUMN: dict[str, Any] = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def sandbox_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `sandboxes.sandbox-operator.io` as a plain dict."""
    columns = [
        _ready_column("Ready", "status", "Whether the sandbox is ready.", c.ConditionType.READY),
        _ready_column("Reason", "reason", "Why the sandbox is or is not ready.", c.ConditionType.READY),
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase."},
        {
            "name": "Expires",
            "type": "string",  # a date column shows <invalid> for future times
            "jsonPath": ".status.expiresAt",
            "description": "When the sandbox expires.",
        },
        AGE_COLUMN,
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
        {"name": "Template", "type": "string", "jsonPath": ".spec.templateRef.name", "priority": 1},
        {"name": "Launch", "type": "string", "jsonPath": ".status.launch", "priority": 1},
    ]
    names = (c.KIND, c.LIST_KIND, c.PLURAL, c.SINGULAR, c.SHORT_NAMES)
    return crd(names, sandbox_schema(), columns, categories=c.CATEGORIES)




def tenant_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the Tenant resource."""
    return object_schema(
        c.TENANT_KIND,
        "A Tenant is a namespace the operator creates and owns, with a ResourceQuota (including a count of "
        "Sandboxes), a LimitRange, a default-deny NetworkPolicy, an admission policy checking every Sandbox "
        "against the tenant's limits, and a RoleBinding letting its subjects manage Sandboxes and nothing else.",
        TenantSpec,
        TenantStatus,
    )


TENANT_READY = c.TenantConditionType.READY


def tenant_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `tenants.sandbox-operator.io` (cluster-scoped) as a plain dict."""
    columns = [
        {"name": "Namespace", "type": "string", "jsonPath": ".spec.namespace",
         "description": "The tenant's namespace."},
        _ready_column("Ready", "status", "Whether the tenant is provisioned.", TENANT_READY),
        _ready_column("Reason", "reason", "Why the tenant is or is not ready.", TENANT_READY),
        {"name": "Sandboxes", "type": "string", "jsonPath": ".status.usage.sandboxes.used",
         "description": "Sandboxes in use."},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.quota.maxSandboxes",
         "description": "Most Sandboxes at once."},
        AGE_COLUMN,
    ]
    names = (c.TENANT_KIND, c.TENANT_LIST_KIND, c.TENANT_PLURAL, c.TENANT_SINGULAR, c.TENANT_SHORT_NAMES)
    return crd(names, tenant_schema(), columns, scope="Cluster")


def template_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `sandboxtemplates.sandbox-operator.io` as a plain dict."""
    schema = object_schema(
        c.TEMPLATE_KIND,
        "A SandboxTemplate is a sandbox recipe (image, command, env, resources, network, workspace, lifetime) that "
        "Sandboxes name in templateRef instead of writing it out, and that a SandboxPool keeps warm pods of.",
        SandboxTemplateSpec,
        None,
    )
    columns = [
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "description": "Container image."},
        AGE_COLUMN,
    ]
    names = (c.TEMPLATE_KIND, c.TEMPLATE_LIST_KIND, c.TEMPLATE_PLURAL, c.TEMPLATE_SINGULAR, c.TEMPLATE_SHORT_NAMES)
    return crd(names, schema, columns, subresources={})


def pool_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `sandboxpools.sandbox-operator.io`, with the scale subresource, as a dict."""
    schema = object_schema(
        c.POOL_KIND,
        "A SandboxPool keeps warm pods of a SandboxTemplate running, fenced by a deny-all NetworkPolicy; a new "
        "Sandbox of that template claims one instead of starting its own pod.",
        SandboxPoolSpec,
        SandboxPoolStatus,
    )
    columns = [
        {"name": "Template", "type": "string", "jsonPath": ".spec.templateRef.name", "description": "Template."},
        {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas", "description": "Warm pods wanted."},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Warm pods ready."},
        _ready_column("Reason", "reason", "Why the pool is or is not full.", c.ConditionType.READY),
        AGE_COLUMN,
    ]
    scale = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = (c.POOL_KIND, c.POOL_LIST_KIND, c.POOL_PLURAL, c.POOL_SINGULAR, c.POOL_SHORT_NAMES)
    return crd(names, schema, columns, subresources={"status": {}, "scale": scale})


def generated_yaml(generator: Callable[[], dict[str, Any]], flag: str = "") -> Callable[[], str]:
    """The YAML committed under crds/ for one generator, with a header saying how to regenerate it."""
    def text() -> str:
        command = " ".join(("python -m sandbox_operator.api.crd", flag)).strip()
        header = f"# Generated from sandbox_operator.api by `{command}`; do not edit.\n"
        return header + yaml.safe_dump(generator(), sort_keys=False, width=120, allow_unicode=True)

    return text


sandbox_crd_yaml = generated_yaml(sandbox_crd)
tenant_crd_yaml = generated_yaml(tenant_crd, "--tenant")
template_crd_yaml = generated_yaml(template_crd, "--template")
pool_crd_yaml = generated_yaml(pool_crd, "--pool")


if __name__ == "__main__":
    FLAGS = {"--tenant": tenant_crd_yaml, "--template": template_crd_yaml, "--pool": pool_crd_yaml}
    chosen = [FLAGS[arg] for arg in sys.argv[1:] if arg in FLAGS]
    sys.stdout.write((chosen[0] if chosen else sandbox_crd_yaml)())
