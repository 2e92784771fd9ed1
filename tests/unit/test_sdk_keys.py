"""Sandbox names derived from keys: any key in, a valid name out, the same name for the same key, no collisions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator.api import keys
from sandbox_operator.api import names as c
from sandbox_operator.api.schema import DNS_LABEL_PATTERN

part_names = st.from_regex(r"\A[a-z0-9]([a-z0-9_.-]{0,20}[a-z0-9])?\Z")
printable = st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"))
values = st.text(alphabet=printable, min_size=1, max_size=keys.MAX_KEY_VALUE_LENGTH)
key_dicts = st.dictionaries(part_names, values, min_size=1, max_size=keys.MAX_KEY_PARTS)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@given(key_dicts)
@settings(max_examples=300)
def test_any_key_gives_a_valid_name_labels_and_annotation(key: dict[str, str]) -> None:
    name = keys.sandbox_name(key)
    assert len(name) <= c.MAX_NAME_LENGTH and re.match(DNS_LABEL_PATTERN, name)
    for label, value in keys.key_labels(key).items():
        assert label.startswith(c.KEY_LABEL_PREFIX) and len(label.split("/")[1]) <= 63
        assert len(value) <= 63 and LABEL_VALUE.match(value)
    body = {"metadata": keys.key_metadata(key)}
    assert keys.key_of(body) == dict(sorted(key.items()))


@given(key_dicts)
def test_the_name_depends_on_the_key_not_on_the_order_of_its_parts(key: dict[str, str]) -> None:
    assert keys.sandbox_name(dict(reversed(list(key.items())))) == keys.sandbox_name(key)


def test_no_two_keys_of_a_large_random_set_share_a_name() -> None:
    import random

    generator = random.Random(1234)
    seen: dict[str, str] = {}
    for index in range(200_000):
        user = "".join(generator.choices("abcdefghijklmnopqrstuvwxyz0123456789-_@.ü", k=generator.randint(1, 12)))
        key = {"user": user, "project": str(index % 97)}
        name = keys.sandbox_name(key)
        canonical = keys.canonical_key(key)
        assert seen.setdefault(name, canonical) == canonical, f"{key} collides with {seen[name]}"


def test_keys_that_differ_only_in_how_values_split_get_different_names() -> None:
    assert keys.sandbox_name({"a": "b,c", "d": "e"}) != keys.sandbox_name({"a": "b", "c": "d,e"})
    assert keys.sandbox_name({"user": "a"}) != keys.sandbox_name({"user": "A"})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ({}, "at least one part"),
        ({"User": "a"}, "key part name 'User'"),
        ({"user": ""}, "key['user'] must not be empty"),
        ({"user": "x" * 254}, "at most 253"),
        ({"user": "a\nb"}, "U+000A"),
        ({"user": 5}, "must be a string"),
        ({f"p{i}": "v" for i in range(9)}, "at most 8 parts"),
    ],
)
def test_a_bad_key_is_refused_naming_the_part(key: dict[str, object], message: str) -> None:
    with pytest.raises(keys.InvalidKeyError, match=re.escape(message)):
        keys.sandbox_name(key)


def test_a_bad_name_prefix_is_refused() -> None:
    with pytest.raises(keys.InvalidKeyError, match="name prefix"):
        keys.sandbox_name({"user": "a"}, prefix="Bad_Prefix")
    assert keys.sandbox_name({"user": "a"}, prefix="agent").startswith("agent-")


def test_a_partial_key_selects_by_its_parts_and_an_empty_one_by_the_keyed_label() -> None:
    assert keys.key_selector({"user": "alice"}) == f"{c.KEY_LABEL_PREFIX}user={keys.value_label('alice')}"
    assert keys.key_selector({}) == f"{c.LABEL_KEYED}=true"


def test_an_annotation_that_does_not_parse_is_no_key() -> None:
    for text in ("not json", "[1]", '{"user": ""}', '{"User": "a"}'):
        assert keys.key_of({"metadata": {"annotations": {c.ANNOTATION_KEY: text}}}) is None
    assert keys.key_of({"metadata": {}}) is None
