"""Sandboxes made from a SandboxTemplate: what a templated spec may say (the CRD's CEL rule and the pydantic validator
agree), how its lifetime merges with the template's, and how a missing template is reported."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sandbox_operator.api import crd
from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import (
    TEMPLATED_MESSAGE,
    TEMPLATED_OWN_FIELDS,
    InvalidSandbox,
    Lifetime,
    OperatorDefaults,
    PodRecipe,
    SandboxObject,
    SandboxSpec,
    from_template,
    load_sandbox,
)
from sandbox_operator.api.schema import seconds_after
from tests.unit import strategies
from tests.unit.builders import CREATED, body
from tests.unit.template_builders import TEMPLATE, recipe, templated, templated_body

SPEC_SCHEMA = crd.sandbox_schema()["properties"]["spec"]
TEMPLATED_RULE = next(
    rule["rule"] for rule in SPEC_SCHEMA["x-kubernetes-validations"] if rule["message"] == TEMPLATED_MESSAGE
)
TEMPLATE_REF = {"name": TEMPLATE}


# --- A CEL evaluator for the few forms the templated rule is generated from ------------------------------------------

_PATH = r"self(?:\.\w+)+"
_KNOWN_TOKENS = re.compile(
    r"\s+|_has\(\d+\)|_str\(\d+\)|_size\(\d+\)|_get\(\d+\)|not|or|and|==|\(|\)|True|False|_lit\(\d+\)|\b\d+\b"
)


def cel_translate(rule: str) -> tuple[str, list[str], list[str]]:
    """The rule as Python over the helpers below, its paths and its string literals; an assertion error for any form
    this evaluator does not know (so a new form fails here instead of being misread)."""
    literals: list[str] = []
    paths: list[str] = []

    def literal(match: re.Match[str]) -> str:
        literals.append(match.group(1))
        return f"_lit({len(literals) - 1})"

    def path(match: re.Match[str]) -> str:
        paths.append(match.group("path").removeprefix("self."))
        return f"_{match.group('fn') or 'get'}({len(paths) - 1})"

    expr = re.sub(r"'([^'\\]*)'", literal, rule)
    expr = re.sub(rf"(?:(?P<fn>has|string|size)\()?(?P<path>{_PATH})(?(fn)\))", path, expr)
    expr = expr.replace("_string(", "_str(").replace("!", " not ").replace("||", " or ").replace("&&", " and ")
    expr = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expr))
    assert _KNOWN_TOKENS.sub("", expr) == "", f"unknown CEL form in {rule!r}"
    return expr, paths, literals


def cel_holds(rule: str, obj: dict[str, Any]) -> bool:
    """Evaluate ``rule`` on ``obj`` (``self``) as the API server would; a missing intermediate object is an error."""
    expr, paths, literals = cel_translate(rule)

    def walk(index: int) -> tuple[dict[str, Any], str]:
        *parents, last = paths[index].split(".")
        node = obj
        for key in parents:
            node = node[key]  # CEL: "no such key", an error, not false
        return node, last

    def has(index: int) -> bool:
        node, last = walk(index)
        return last in node

    def get(index: int) -> Any:
        node, last = walk(index)
        return node[last]

    def string(index: int) -> str:
        value = get(index)
        assert isinstance(value, str | int) and not isinstance(value, bool)
        return str(value)

    scope = {"_has": has, "_get": get, "_str": string, "_size": lambda index: len(get(index)),
             "_lit": lambda index: literals[index]}
    return bool(eval(expr, scope))  # only the whitelisted tokens of cel_translate reach here


def api_server_defaults(spec: dict[str, Any], schema: dict[str, Any] = SPEC_SCHEMA) -> dict[str, Any]:
    """``spec`` with the schema's defaults filled in, as the API server stores it before it runs the CEL rules."""
    result = copy.deepcopy(spec)
    for name, prop in schema.get("properties", {}).items():
        if name not in result and "default" in prop:
            result[name] = copy.deepcopy(prop["default"])
        if isinstance(result.get(name), dict):
            result[name] = api_server_defaults(result[name], prop)
        elif isinstance(result.get(name), list) and "properties" in prop.get("items", {}):
            result[name] = [api_server_defaults(item, prop["items"]) for item in result[name]]
    return result


def pydantic_accepts(spec: dict[str, Any]) -> bool:
    try:
        SandboxSpec.model_validate(spec)
    except ValidationError as error:
        assert TEMPLATED_MESSAGE in str(error), str(error)  # the only rule a generated spec can break
        return False
    return True


def test_the_evaluator_reads_the_rule_as_the_api_server_would() -> None:
    bare = api_server_defaults({"templateRef": TEMPLATE_REF})
    assert bare["resources"] == {"cpu": "500m", "memory": "512Mi", "ephemeralStorage": "2Gi"}
    assert cel_holds(TEMPLATED_RULE, bare)
    assert not cel_holds(TEMPLATED_RULE, api_server_defaults({"templateRef": TEMPLATE_REF, "args": ["-c"]}))
    assert not cel_holds(TEMPLATED_RULE, api_server_defaults({"templateRef": TEMPLATE_REF, "resources": {"cpu": 1}}))
    assert cel_holds(TEMPLATED_RULE, api_server_defaults({"image": "busybox", "args": ["-c"]}))


# Values of each recipe field that equal what the API server fills in: a templated Sandbox may write them.
EXPLICIT_DEFAULTS = {
    "imagePullPolicy": st.just("IfNotPresent"),
    "resources": st.sampled_from([{}, {"cpu": "500m"}, {"memory": "512Mi", "ephemeralStorage": "2Gi"}]),
    "network": st.sampled_from([{}, {"egress": {}}, {"egress": {"mode": "None"}}]),
    "workspace": st.sampled_from([{}, {"persistent": False}, {"size": "1Gi", "mountPath": "/workspace"}]),
}


@st.composite
def templated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A full spec turned templated: image gone, templateRef in, and each other field kept, dropped or, where it has
    one, set to its default as written out."""
    spec = draw(strategies.specs())
    result: dict[str, Any] = {"templateRef": TEMPLATE_REF}
    for name, value in spec.items():
        if name == "image":
            continue
        choice = draw(st.sampled_from(["keep", "drop", "default"]))
        if choice == "keep" or name in TEMPLATED_OWN_FIELDS:
            result[name] = value
        elif choice == "default" and name in EXPLICIT_DEFAULTS:
            result[name] = draw(EXPLICIT_DEFAULTS[name])
    return result




@settings(max_examples=100, deadline=None)
@given(templated_specs())
def test_templated_rule_and_pydantic_validator_agree(spec: dict[str, Any]) -> None:
    stored = api_server_defaults(spec)
    assert cel_holds(TEMPLATED_RULE, stored) == pydantic_accepts(spec) == pydantic_accepts(stored)


@pytest.mark.parametrize("spec", [{"command": []}, {"network": {"ports": []}}, {"env": []}])
def test_empty_lists_beside_template_ref_are_judged_alike(spec: dict[str, Any]) -> None:
    templated_spec = {"templateRef": TEMPLATE_REF, **spec}
    assert cel_holds(TEMPLATED_RULE, api_server_defaults(templated_spec)) == pydantic_accepts(templated_spec)


def schema_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Every property path of the schema, descending into the objects the API server always fills in."""
    paths = []
    for name, prop in schema.get("properties", {}).items():
        paths.append(prefix + name)
        if prop.get("default") == {}:
            paths += schema_paths(prop, f"{prefix}{name}.")
    return paths


def test_templated_rule_mentions_every_field_the_template_owns() -> None:
    own = set(TEMPLATED_OWN_FIELDS)
    assert own <= {info.alias or name for name, info in SandboxSpec.model_fields.items()}
    _, mentioned, _ = cel_translate(TEMPLATED_RULE)
    expected = [path for path in schema_paths(SPEC_SCHEMA) if path.split(".")[0] not in own]
    assert "runtimeClassName" in expected and "network.egress.mode" in expected
    assert [path for path in expected if path not in mentioned] == []
    assert [path for path in mentioned if path.split(".")[0] in own - {"templateRef"}] == []


def test_sandbox_may_set_lifetime_and_suspended_beside_template_ref() -> None:
    spec = SandboxSpec.model_validate(
        {"templateRef": TEMPLATE_REF, "lifetime": {"ttlSeconds": 60, "onExpiry": "Suspend"}, "suspended": True}
    )
    assert spec.image is None and spec.template_ref is not None and spec.suspended


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"resources": {"cpu": "1"}}, "resources"),
        ({"workspace": {"persistent": True}}, "workspace"),
        ({"runtimeClassName": "gvisor"}, "runtimeClassName"),
        ({"network": {"allowDNS": True}}, "network"),
    ],
)
def test_recipe_field_beside_template_ref_is_refused_by_name(extra: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=rf"{re.escape(TEMPLATED_MESSAGE)} \({named} set\)"):
        SandboxSpec.model_validate({"templateRef": TEMPLATE_REF, **extra})


@pytest.mark.parametrize("spec", [{}, {"image": "busybox", "templateRef": TEMPLATE_REF}])
def test_exactly_one_of_image_and_template_ref(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="set exactly one of image and templateRef"):
        SandboxSpec.model_validate(spec)


# --- from_template: the template's recipe, the stricter lifetime -----------------------------------------------------


def deadline(lifetime: Lifetime, created: datetime) -> datetime | None:
    if lifetime.expires_at is not None:
        return lifetime.expires_at
    return seconds_after(created, lifetime.ttl_seconds) if lifetime.ttl_seconds is not None else None


recipes = strategies.specs().map(lambda spec: {k: v for k, v in spec.items() if k != "suspended"})


@settings(max_examples=60, deadline=None)
@given(strategies.lifetimes, recipes, st.booleans())
def test_merged_lifetime_is_the_stricter_of_the_two(
    own: dict[str, Any], template: dict[str, Any], suspended: bool
) -> None:
    spec = SandboxSpec.model_validate({"templateRef": TEMPLATE_REF, "lifetime": own, "suspended": suspended})
    template_recipe = PodRecipe.model_validate(template)
    merged = from_template(spec, template_recipe, CREATED)
    lifetime, mine, theirs = merged.lifetime, spec.lifetime, template_recipe.lifetime

    deadlines = [d for d in (deadline(mine, CREATED), deadline(theirs, CREATED)) if d is not None]
    assert deadline(lifetime, CREATED) == min(deadlines, default=None)
    idles = [i for i in (mine.idle_timeout_seconds, theirs.idle_timeout_seconds) if i is not None]
    assert lifetime.idle_timeout_seconds == min(idles, default=None)
    suspend = c.OnExpiry.SUSPEND in (mine.on_expiry, theirs.on_expiry)
    assert lifetime.on_expiry is (c.OnExpiry.SUSPEND if suspend else c.OnExpiry.DELETE)
    for name in PodRecipe.model_fields:
        if name != "lifetime":
            assert getattr(merged, name) == getattr(template_recipe, name), name
    assert (merged.template_ref, merged.suspended) == (spec.template_ref, suspended)


def test_own_expires_at_beats_a_longer_template_ttl() -> None:
    merged = templated(recipe(lifetime={"ttlSeconds": 3600}), {"lifetime": {"expiresAt": "2025-01-01T12:10:00Z"}})
    assert (merged.spec.lifetime.ttl_seconds, merged.spec.lifetime.expires_at) == (
        None,
        datetime.fromisoformat("2025-01-01T12:10:00+00:00"),
    )


def test_template_ttl_beats_a_sandbox_that_asks_for_longer() -> None:
    merged = templated(
        recipe(lifetime={"ttlSeconds": 600, "idleTimeoutSeconds": 60}), {"lifetime": {"ttlSeconds": 86400}}
    )
    assert (merged.spec.lifetime.ttl_seconds, merged.spec.lifetime.idle_timeout_seconds) == (600, 60)


def test_templated_sandbox_runs_the_template_recipe_with_operator_defaults() -> None:
    template = recipe(image="busybox", args=["sleep", "inf"], network={"egress": {"mode": "Internet"}})
    sbx = templated(template, defaults=OperatorDefaults(allow_dns=False, ttl_seconds=900))
    assert (sbx.spec.image, sbx.spec.args, sbx.spec.network.egress.mode) == ("busybox", ["sleep", "inf"], "Internet")
    assert sbx.spec.network.allow_dns is False
    assert sbx.spec.lifetime.ttl_seconds == 900


def test_missing_template_loads_as_template_not_found() -> None:
    loaded = load_sandbox(templated_body(), template=None)
    assert isinstance(loaded, InvalidSandbox)
    assert loaded.reason is c.Reason.TEMPLATE_NOT_FOUND
    assert loaded.error == f"SandboxTemplate {TEMPLATE} does not exist"


def test_invalid_templated_body_is_invalid_spec_even_when_the_template_exists() -> None:
    raw = templated_body({"args": ["-c"]})
    loaded = load_sandbox(raw, template=recipe())
    assert isinstance(loaded, InvalidSandbox)
    assert loaded.reason is c.Reason.INVALID_SPEC
    assert "args set" in loaded.error


def test_template_is_ignored_by_a_sandbox_written_out_in_full() -> None:
    sbx = SandboxObject.from_body(body({"args": ["-c"]}), template=recipe(image="busybox"))
    assert (sbx.spec.image, sbx.spec.args) == ("python:3.12-slim", ["-c"])
