"""The pool wiring's bookkeeping: templates as their stream shows them, listings included."""

from __future__ import annotations

from typing import Any

from sandbox_operator.api import names as c
from sandbox_operator.pool import handlers
from sandbox_operator.pool.warm import WARM


def _template(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.TEMPLATE_KIND,
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"image": "busybox", "command": ["sleep", "3600"]}}


def test_templates_follow_their_stream_and_a_listing_drops_what_it_did_not_find() -> None:
    kept, gone = _template("kept", "u1"), _template("gone", "u2")
    try:
        for body in (kept, gone):
            handlers.template_changed(None, body)  # the listing (no loop is running: nothing to wake)
        assert WARM.recipe("ns", "kept") is not None and WARM.recipe("ns", "gone") is not None
        handlers._templates_relisted("ns", {"u1"})  # deleted while the stream was paused: no DELETED event
        assert WARM.recipe("ns", "kept") is not None
        assert WARM.recipe("ns", "gone") is None
        handlers.template_changed("DELETED", _template("kept", "other-uid"))  # an older object of that name
        assert WARM.recipe("ns", "kept") is not None
        handlers.template_changed("DELETED", kept)
        assert WARM.recipe("ns", "kept") is None
    finally:
        WARM.templates.items.clear()
