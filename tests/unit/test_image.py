"""The container image: its pinned dependencies match the project's, the Dockerfile stays hardened."""

from __future__ import annotations

import re
from pathlib import Path

from localcluster import operator_image

ROOT = Path(__file__).resolve().parents[2]


def test_image_requirements_are_the_current_dependency_closure() -> None:
    pinned = [line for line in operator_image.REQUIREMENTS.read_text().splitlines() if not line.startswith("#")]
    assert pinned == operator_image.locked_requirements(), (
        "image/requirements.txt is stale: run `python -m localcluster.operator_image lock`"
    )


def test_dockerfile_pins_the_base_by_digest_and_runs_as_nonroot() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"python:3\.11-slim@sha256:[0-9a-f]{64}", dockerfile)
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M) == [f"{operator_image.UID}:{operator_image.UID}"]
    assert 'ENTRYPOINT ["python", "-m", "sandbox_operator"]' in dockerfile
    assert operator_image.SPEC.user == f"{operator_image.UID}:{operator_image.UID}"
    assert operator_image.SPEC.entrypoint[-2:] == ("-m", "sandbox_operator")
