"""The pool wiring's bookkeeping: what the start-up LIST saw is kept only once the watch confirms it."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.pool import handlers
from sandbox_operator.pool.warm import WARM


def _template(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.TEMPLATE_KIND,
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"image": "busybox", "command": ["sleep", "3600"]}}


def test_a_template_the_listing_saw_and_the_watch_shows_unchanged_survives_the_sweep() -> None:
    kept, gone = _template("kept", "u1"), _template("gone", "u2")
    for body in (kept, gone):
        WARM.templates.prime(("ns", body["metadata"]["name"]), body["metadata"]["uid"], handlers._recipe(body))
    try:
        # Kopf's own listing sends the unchanged template: nothing to wake, but it is confirmed.
        asyncio.run(handlers.template_changed(event={"type": None, "object": kept}, body=kept, memo={}))
        handlers._sweep()
        assert WARM.recipe("ns", "kept") is not None
        assert WARM.recipe("ns", "gone") is None, "deleted between the LIST and the watch: forgotten"
    finally:
        WARM.templates.items.clear()
        WARM.templates.unconfirmed.clear()
