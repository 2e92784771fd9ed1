"""Keeping values out of messages: what the API server (or an admission policy) says about a refused object may repeat
what the object holds, and those messages reach status, Events and logs.

Two layers: quoted input values in the API server's field errors are cut out whatever they are, and every literal
``env`` value of the Sandbox is cut out in any form a message may carry it (as written, JSON- or Go-escaped, or its
first part when a long value was truncated).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# Validation errors quote the offending value (`env[0].value: Invalid value: "..."`).
QUOTED_VALUE = re.compile(r'(Invalid value|Unsupported value|Duplicate value|Not found): ("(?:[^"\\]|\\.)*"|\S+)')
REDACTED = "(value redacted)"
# Shorter values ("1", "on") cannot hold a secret and occur in most messages (quota counts): they are left alone.
MIN_REDACTED_LENGTH = 4
# A message may carry a long value cut short; its first this-many characters are cut out as well.
PREFIX_LENGTH = 24


def _forms(value: str) -> set[str]:
    """The spellings a message may use for ``value``: as is, JSON/Go-escaped (ASCII or not), and a long one's start."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    if len(value) > PREFIX_LENGTH:
        forms |= {form[:PREFIX_LENGTH] for form in forms}
    return {form for form in forms if len(form) >= MIN_REDACTED_LENGTH}


def redact(message: str, values: Iterable[str] = ()) -> str:
    """``message`` with quoted input values and every spelling of each of ``values`` replaced by a placeholder."""
    message = QUOTED_VALUE.sub(rf"\1: {REDACTED}", message)
    forms = {form for value in values if len(value) >= MIN_REDACTED_LENGTH for form in _forms(value)}
    for form in sorted(forms, key=len, reverse=True):  # longest first: a prefix never splits a whole value
        message = message.replace(form, REDACTED)
    return message
