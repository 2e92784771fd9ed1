"""JSON for the operator's hot paths, by pydantic-core (already a dependency through pydantic) where it can.

Every Sandbox event, request and response is parsed or written at least once, and each object's newest body and
summaries are kept packed as JSON (k8s.loop, k8s.manifest): with the standard ``json`` module that was about a fifth
of the operator's CPU in a burst (bench/fleet.py, py-spy). pydantic-core writes a pod about 3.5 times as fast and
reads it about 1.7 times as fast. Each function falls back to ``json`` for the one kind of text pydantic-core refuses
and ``json`` takes (a lone surrogate, which the API server never writes), so nothing that parsed or was written
before is refused now. Hashes stay on ``json`` (``manifest_hash``): they must not change across versions.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core


def loads(text: str | bytes) -> Any:
    """JSON as ``json.loads`` reads it."""
    try:
        return pydantic_core.from_json(text)
    except ValueError:
        return json.loads(text)


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8, no spaces), mappings of any type as objects. The same value always gives the same bytes,
    so equal bytes mean equal values."""
    try:
        return pydantic_core.to_json(value, fallback=dict)
    except ValueError:  # a lone surrogate (or a value json cannot write either: then json's own TypeError)
        return json.dumps(value, separators=(",", ":"), default=dict).encode()
