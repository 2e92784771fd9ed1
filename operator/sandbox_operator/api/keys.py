"""Sandbox keys: a client's `get_or_create(key={"user": ..., "project": ...})` names its Sandbox after the key.

The name is a hash of the whole key, so every process asking for one key asks the API server for one name, and its
"already exists" is the only lock. Raw key values (any strings, after the checks below) live in an annotation; each
part also gets a label holding a hash of its value, so Sandboxes can be listed by part (label values are limited to
63 characters of [A-Za-z0-9-_.]).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Final

from sandbox_operator.api import names as c

MAX_KEY_PARTS: Final = 8
MAX_KEY_VALUE_LENGTH: Final = 253
KEY_PART_PATTERN: Final = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
DEFAULT_NAME_PREFIX: Final = "sandbox"
# 20 base32 characters are 100 bits of the hash: a collision is not expected in any one namespace's lifetime, and
# one would be caught anyway (the existing Sandbox's key annotation would not match).
NAME_HASH_LENGTH: Final = 20
MAX_NAME_PREFIX_LENGTH: Final = c.MAX_NAME_LENGTH - NAME_HASH_LENGTH - 1
NAME_PREFIX_PATTERN: Final = r"^[a-z]([a-z0-9-]*[a-z0-9])?$"


class InvalidKeyError(ValueError):
    """A key (or a name prefix) that cannot name a Sandbox; the message names the part and the rule."""


def _check_value(part: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidKeyError(f"key[{part!r}] must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidKeyError(f"key[{part!r}] must not be empty")
    if len(value) > MAX_KEY_VALUE_LENGTH:
        raise InvalidKeyError(f"key[{part!r}] is {len(value)} characters long; at most {MAX_KEY_VALUE_LENGTH}")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            raise InvalidKeyError(f"key[{part!r}] holds the control or unassigned character U+{ord(char):04X}")
    return value


def validate_key(key: Mapping[str, object], *, partial: bool = False) -> dict[str, str]:
    """The key as a plain dict of strings, or InvalidKeyError naming what is wrong. ``partial``: a subset of a key's
    parts, as used to list Sandboxes (may then be empty)."""
    if not isinstance(key, Mapping):
        raise InvalidKeyError(f"a key is a mapping of part names to strings, not {type(key).__name__}")
    if not key and not partial:
        raise InvalidKeyError("a key needs at least one part, e.g. {'user': 'alice'}")
    if len(key) > MAX_KEY_PARTS:
        raise InvalidKeyError(f"a key has at most {MAX_KEY_PARTS} parts; this one has {len(key)}")
    checked: dict[str, str] = {}
    for part, value in key.items():
        if not isinstance(part, str) or not re.match(KEY_PART_PATTERN, part):
            raise InvalidKeyError(
                f"key part name {part!r} must be 1-63 lowercase letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        checked[part] = _check_value(part, value)
    return dict(sorted(checked.items()))


def canonical_key(key: Mapping[str, object]) -> str:
    """The key as canonical JSON (sorted parts, no spaces): equal keys give equal text."""
    return json.dumps(validate_key(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def check_name_prefix(prefix: str) -> str:
    """The prefix, or InvalidKeyError: a lowercase DNS label short enough to leave room for the hash."""
    if len(prefix) > MAX_NAME_PREFIX_LENGTH or not re.match(NAME_PREFIX_PATTERN, prefix):
        raise InvalidKeyError(
            f"name prefix {prefix!r} must be 1-{MAX_NAME_PREFIX_LENGTH} lowercase letters, digits or '-', "
            "starting with a letter"
        )
    return prefix


def sandbox_name(key: Mapping[str, object], prefix: str = DEFAULT_NAME_PREFIX) -> str:
    """The Sandbox name for a key: ``<prefix>-<20 base32 characters of its hash>``, a valid DNS label."""
    digest = base64.b32encode(_digest(canonical_key(key))).decode("ascii").lower()
    return f"{check_name_prefix(prefix)}-{digest[:NAME_HASH_LENGTH]}"


def value_label(value: str) -> str:
    """A label value standing for one key value: 32 hex characters of its hash."""
    return _digest(value).hex()[:32]


def key_labels(key: Mapping[str, object]) -> dict[str, str]:
    """One label per key part, so Sandboxes can be listed by any of their key's parts."""
    return {f"{c.KEY_LABEL_PREFIX}{part}": value_label(value) for part, value in validate_key(key).items()}


def key_selector(parts: Mapping[str, object]) -> str:
    """A label selector matching the Sandboxes whose key has these parts (all Sandboxes made for a key if empty)."""
    checked = validate_key(parts, partial=True)
    if not checked:
        return f"{c.LABEL_KEYED}=true"
    return ",".join(f"{c.KEY_LABEL_PREFIX}{part}={value_label(value)}" for part, value in checked.items())


def key_metadata(key: Mapping[str, object]) -> dict[str, dict[str, str]]:
    """The labels and annotations that mark a Sandbox as the one for this key."""
    return {
        "labels": {**key_labels(key), c.LABEL_KEYED: "true"},
        "annotations": {c.ANNOTATION_KEY: canonical_key(key)},
    }


def key_of(body: Mapping[str, object]) -> dict[str, str] | None:
    """The key a Sandbox was made for, from its annotation; None if it has none or it does not parse."""
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    text = annotations.get(c.ANNOTATION_KEY) if isinstance(annotations, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        return validate_key(json.loads(text))
    except (ValueError, InvalidKeyError):
        return None
