"""What the CLI prints: a Sandbox as a table row, a detail view or a JSON document; a command's result as JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, Final

from sandbox_operator.sdk import CommandResult, Sandbox

NONE: Final = "-"
TABLE_COLUMNS: Final = ("NAME", "PHASE", "READY", "KEY", "EXPIRES")
COLUMN_GAP: Final = "   "


def key_text(key: Mapping[str, str] | None) -> str:
    """A key as ``part=value,...`` (sorted), or ``-``."""
    return ",".join(f"{part}={value}" for part, value in sorted(key.items())) if key else NONE


def duration_text(seconds: float) -> str:
    """A duration the way kubectl shows ages: 45s, 12m, 3h5m, 2d4h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def remaining_text(expires_at: datetime | None, now: datetime) -> str:
    """Time left until ``expires_at``: ``-`` when it never expires, ``expired`` once it has passed."""
    if expires_at is None:
        return NONE
    left = (expires_at - now).total_seconds()
    return duration_text(left) if left > 0 else "expired"


def sandbox_document(sandbox: Sandbox) -> dict[str, Any]:
    """A Sandbox for ``-o json``: its state in a few fields (the whole object is ``kubectl get sandbox -o json``)."""
    return sandbox.summary()


def table_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, as kubectl prints them."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def sandbox_row(sandbox: Sandbox, now: datetime) -> tuple[str, str, str, str, str]:
    """One line of ``list``: NAME PHASE READY KEY EXPIRES."""
    return (
        sandbox.name,
        sandbox.phase or "Unknown",
        str(sandbox.ready),
        key_text(sandbox.key),
        remaining_text(sandbox.expires_at, now),
    )


def sandbox_table(sandboxes: Iterable[Sandbox], now: datetime) -> str:
    """``list``'s table."""
    return table_text(TABLE_COLUMNS, (sandbox_row(sandbox, now) for sandbox in sandboxes))


def sandbox_details(sandbox: Sandbox, now: datetime) -> str:
    """``get``'s text: one field a line."""
    document = sandbox_document(sandbox)
    ready = str(sandbox.ready) + (f" ({document['reason']})" if document["reason"] else "")
    expires = NONE
    if sandbox.expires_at is not None:
        expires = f"{document['expires_at']} ({remaining_text(sandbox.expires_at, now)})"
    fields = (
        ("Name", sandbox.name),
        ("Namespace", sandbox.namespace),
        ("Phase", sandbox.phase or "Unknown"),
        ("Ready", ready),
        ("Message", document["message"] or NONE),
        ("Key", key_text(sandbox.key)),
        ("Image", document["image"] or NONE),
        ("Pod", sandbox.pod_name),
        ("Expires", expires),
    )
    width = max(len(label) for label, _ in fields) + 2
    return "\n".join(f"{label + ':':<{width}}{value}" for label, value in fields)


def result_document(result: CommandResult) -> dict[str, Any]:
    """A command's result for ``run -o json``: output decoded as UTF-8, undecodable bytes replaced."""
    return result.to_dict()


def emit(output: str, document: Any, text: str) -> None:
    """Print ``document`` as one JSON document for ``-o json``, else ``text`` (nothing when it is empty)."""
    if output == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
    elif text:
        print(text)
    sys.stdout.flush()


def discard_further_output(stream: IO[Any]) -> None:
    """Point ``stream`` at /dev/null once its reader has gone (``| head``): Python would otherwise report the broken
    pipe again when it flushes the stream at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
