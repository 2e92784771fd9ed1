"""The ValidatingAdmissionPolicy that checks every Sandbox and SandboxTemplate in a tenant's namespace against its
Tenant.

A template's spec has the fields of a Sandbox's, with the same names (api.sandbox.PodRecipe), so one set of rules
checks both: a template that breaks the tenant's limits is refused when it is written, and a Sandbox made from it
(templateRef, no recipe of its own) cannot be used to escape them. A Sandbox with templateRef is still held to the
lifetime rules for the lifetime it sets itself.

The policy is static and shipped in deploy/ (`paramKind: Tenant`); the operator renders one binding per tenant
(`tenant.render.render_policy_binding`) with `paramRef` to the Tenant and a namespaceSelector on the tenant's namespace.
The API server evaluates the CEL itself, so the rules hold while the operator is down, for every client, atomically
with the write; a violating Sandbox is refused with a message naming the field and the limit, and nothing is created.

Everything the policy checks is a comparison CEL can express: quantities (`quantity()`), CIDR containment (`cidr()`),
times (`timestamp()` + `duration()`) and image globs, which become anchored regexes: a pattern may hold only
`[a-zA-Z0-9._/:@*-]` (the Tenant schema says so), so escaping `.` and turning `*` into `.*` is the whole translation.

The first rule refuses the operator's admission probe (see api.names.LABEL_ADMISSION_PROBE): the operator grants a
tenant's subjects access only once this refusal shows the binding is loaded.

Only metadata changes (the activity annotation, labels) skip the policy: a Sandbox accepted under looser limits may
still be touched after the tenant's limits were tightened, but not changed.
"""

from __future__ import annotations

from typing import Any

from sandbox_operator.api import names as c

# CEL spellings of the Tenant's optional sections, so each rule reads as "unset, or within the limit".
_LIMITS = "params.spec.limits"
_NETWORK = "params.spec.network"
_TENANT = "' (tenant ' + params.metadata.name + ')'"
# A Sandbox made from a template: the rules on the pod recipe were applied to the template (the policy matches
# SandboxTemplates too, whose spec has the same fields); its own lifetime is still checked.
_TEMPLATED = "has(object.spec.templateRef)"


def _unset(section: str, field: str) -> str:
    return f"!has({section}) || !has({section}.{field})"


def _quantity_rule(sandbox_field: str, limit_field: str) -> dict[str, str]:
    """spec.<sandbox_field> must not exceed limits.<limit_field>."""
    value, limit = f"object.spec.{sandbox_field}", f"{_LIMITS}.{limit_field}"
    return {
        "expression": (
            f"{_TEMPLATED} || {_unset(_LIMITS, limit_field)} || !has({value}) || "
            f"quantity(string({value})).compareTo(quantity(string({limit}))) <= 0"
        ),
        "messageExpression": (
            f"'spec.{sandbox_field} ' + string({value}) + ' exceeds limits.{limit_field} ' + string({limit})"
            f" + {_TENANT}"
        ),
        "reason": "Invalid",
    }


def validations() -> list[dict[str, str]]:
    """The policy's rules, one per field, each naming the field and the limit when it refuses."""
    lifetime, longest = "object.spec.lifetime", f"{_LIMITS}.maxLifetimeSeconds"
    egress = "object.spec.network.egress"
    return [
        {
            "expression": f"!has(object.metadata.labels) || !('{c.LABEL_ADMISSION_PROBE}' in object.metadata.labels)",
            "messageExpression": f"'{c.ADMISSION_PROBE_MESSAGE}' + {_TENANT}",
            "reason": "Invalid",
        },
        {
            # A Sandbox with templateRef has no image of its own: its template's was checked when it was written.
            "expression": (
                f"{_TEMPLATED} || params.spec.allowedImages.exists(p, "
                "object.spec.image.matches('^' + p.replace('.', '\\\\.').replace('*', '.*') + '$'))"
            ),
            "messageExpression": (
                "'spec.image ' + object.spec.image + ' matches none of allowedImages [' + "
                f"params.spec.allowedImages.join(', ') + ']' + {_TENANT}"
            ),
            "reason": "Invalid",
        },
        _quantity_rule("resources.cpu", "cpu"),
        _quantity_rule("resources.memory", "memory"),
        _quantity_rule("resources.ephemeralStorage", "ephemeralStorage"),
        _quantity_rule("workspace.size", "workspaceSize"),
        {
            "expression": (
                f"{_unset(_LIMITS, 'maxLifetimeSeconds')} || !has({lifetime}.ttlSeconds) || "
                f"{lifetime}.ttlSeconds <= {longest}"
            ),
            "messageExpression": (
                f"'spec.lifetime.ttlSeconds ' + string({lifetime}.ttlSeconds) + ' exceeds limits.maxLifetimeSeconds ' "
                f"+ string({longest}) + {_TENANT}"
            ),
            "reason": "Invalid",
        },
        {
            # creationTimestamp is set before admission runs, on create as on update.
            "expression": (
                f"{_unset(_LIMITS, 'maxLifetimeSeconds')} || !has({lifetime}.expiresAt) || "
                f"timestamp({lifetime}.expiresAt) <= "
                f"timestamp(object.metadata.creationTimestamp) + duration(string({longest}) + 's')"
            ),
            "messageExpression": (
                f"'spec.lifetime.expiresAt ' + string({lifetime}.expiresAt) + ' is more than limits.maxLifetimeSeconds "
                f"' + string({longest}) + ' after the creation' + {_TENANT}"
            ),
            "reason": "Invalid",
        },
        {
            "expression": (
                f"{_TEMPLATED} || {_unset(_LIMITS, 'maxLifetimeSeconds')} || has({lifetime}.ttlSeconds) || "
                f"has({lifetime}.expiresAt) || (has(params.spec.defaults) && has(params.spec.defaults.ttlSeconds))"
            ),
            "messageExpression": (
                f"'spec.lifetime: set ttlSeconds or expiresAt, at most limits.maxLifetimeSeconds ' + string({longest}) "
                f"+ {_TENANT}"
            ),
            "reason": "Invalid",
        },
        {
            "expression": (
                f"(has({_NETWORK}) && has({_NETWORK}.allowInternet) && {_NETWORK}.allowInternet) || "
                f"!has({egress}.mode) || {egress}.mode != '{c.EgressMode.INTERNET}'"
            ),
            "messageExpression": f"'spec.network.egress.mode Internet is not allowed: network.allowInternet is false' "
            f"+ {_TENANT}",
            "reason": "Invalid",
        },
        {
            "expression": (
                f"(has({_NETWORK}) && has({_NETWORK}.allowExposedPorts) && {_NETWORK}.allowExposedPorts) || "
                "!has(object.spec.network.ports) || size(object.spec.network.ports) == 0"
            ),
            "messageExpression": "'spec.network.ports: exposing ports is not allowed: network.allowExposedPorts is "
            f"false' + {_TENANT}",
            "reason": "Invalid",
        },
        {
            "expression": (
                f"!has({egress}.mode) || {egress}.mode != '{c.EgressMode.ALLOW_LIST}' || !has({egress}.allow) || "
                f"{egress}.allow.all(rule, has({_NETWORK}) && has({_NETWORK}.allowedEgressCIDRs) && "
                f"{_NETWORK}.allowedEgressCIDRs.exists(range, cidr(range).containsCIDR(cidr(rule.cidr))))"
            ),
            "messageExpression": (
                f"'spec.network.egress.allow: every cidr must lie within network.allowedEgressCIDRs [' + "
                f"(has({_NETWORK}) && has({_NETWORK}.allowedEgressCIDRs) ? "
                f"{_NETWORK}.allowedEgressCIDRs.join(', ') : '') + ']' + {_TENANT}"
            ),
            "reason": "Invalid",
        },
        {
            "expression": (
                f"{_TEMPLATED} || !has(params.spec.requireImagePullAlways) || "
                "!params.spec.requireImagePullAlways || "
                f"(has(object.spec.imagePullPolicy) && object.spec.imagePullPolicy == '{c.PullPolicy.ALWAYS}')"
            ),
            "messageExpression": (
                f"'spec.imagePullPolicy must be {c.PullPolicy.ALWAYS}: the tenant requires every image to be pulled "
                f"with its own credentials' + {_TENANT}"
            ),
            "reason": "Invalid",
        },
        {
            "expression": (
                f"{_TEMPLATED} || !has(params.spec.runtimeClassName) || (has(object.spec.runtimeClassName) && "
                "object.spec.runtimeClassName == params.spec.runtimeClassName)"
            ),
            "messageExpression": (
                "'spec.runtimeClassName must be ' + params.spec.runtimeClassName + " + _TENANT
            ),
            "reason": "Invalid",
        },
    ]


def render_admission_policy() -> dict[str, Any]:
    """The ValidatingAdmissionPolicy shipped in deploy/, parameterized by the Tenant of the Sandbox's namespace."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": c.TENANT_POLICY_NAME, "labels": {c.LABEL_NAME: c.MANAGED_BY}},
        "spec": {
            # A missing Tenant or a rule that cannot be evaluated refuses the Sandbox rather than letting it through.
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": c.API_VERSION, "kind": c.TENANT_KIND},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [c.GROUP],
                        "apiVersions": [c.VERSION],
                        "resources": [c.PLURAL, c.TEMPLATE_PLURAL],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ]
            },
            "matchConditions": [
                {"name": "spec-written", "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"}
            ],
            "validations": validations(),
        },
    }
