"""The hot paths' JSON (k8s.codec) reads and writes what the standard ``json`` module does."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_operator.k8s import codec

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_it_reads_any_json_as_the_standard_parser_does(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    parsed = codec.loads(text)
    assert parsed == json.loads(text) == codec.loads(text.encode())
    assert json.dumps(parsed, ensure_ascii=False) == json.dumps(json.loads(text), ensure_ascii=False)  # types too


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_what_it_writes_reads_back_as_the_value_and_the_same_value_gives_the_same_bytes(value: Any) -> None:
    written = codec.dumps(value)
    assert json.loads(written) == value
    assert json.dumps(json.loads(written)) == json.dumps(value)  # int stays int, float stays float
    assert codec.dumps(json.loads(written)) == written


def test_what_the_fast_parser_refuses_is_read_by_the_standard_one() -> None:
    text = '{"name": "\\ud800", "n": NaN}'  # a lone surrogate escape: never from the API server, but valid to json
    assert codec.loads(text)["name"] == "\ud800"
    with pytest.raises(ValueError):
        codec.loads('{"name": ')


def test_what_the_fast_writer_refuses_is_written_by_the_standard_one_and_other_mappings_are_objects() -> None:
    assert json.loads(codec.dumps({"name": "\ud800"})) == {"name": "\ud800"}
    assert codec.dumps({"view": MappingProxyType({"a": [1, 2]}), "é": "ü"}) == '{"view":{"a":[1,2]},"é":"ü"}'.encode()
    with pytest.raises(TypeError):
        codec.dumps({"spec": object()})
