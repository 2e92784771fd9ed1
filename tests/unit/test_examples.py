"""Every example the README points to is valid: each object of this API validates against its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sandbox_operator.api import names as c
from sandbox_operator.api.sandbox import SandboxSpec
from sandbox_operator.api.template import SandboxPoolSpec, SandboxTemplateSpec
from sandbox_operator.api.tenant import TenantSpec

EXAMPLES = Path(__file__).parents[2] / "examples"
MODELS: dict[str, type[BaseModel]] = {
    c.KIND: SandboxSpec, c.TEMPLATE_KIND: SandboxTemplateSpec, c.POOL_KIND: SandboxPoolSpec,
    c.TENANT_KIND: TenantSpec,
}


def _objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for body in yaml.safe_load_all(path.read_text()):
            if body and body.get("apiVersion") == c.API_VERSION:
                found.append((f"{path.name}:{body['kind']}/{body['metadata']['name']}", body))
    return found


@pytest.mark.parametrize(("where", "body"), _objects(), ids=[where for where, _ in _objects()])
def test_each_example_object_validates_against_its_model(where: str, body: dict[str, Any]) -> None:
    MODELS[body["kind"]].model_validate(body["spec"])


def test_the_examples_show_every_kind() -> None:
    assert {body["kind"] for _, body in _objects()} == set(MODELS)
