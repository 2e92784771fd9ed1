"""The operator process's start (``python -m sandbox_operator``): the garbage collector's tuning."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sandbox_operator.__main__ import GC_YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the collector back as it was: other tests run in this process."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_the_start_freezes_what_is_imported_and_collects_young_objects_less_often() -> None:
    middle, old = gc.get_threshold()[1:]
    tune_garbage_collector()
    assert gc.get_freeze_count() > 0  # the modules, classes and Kopf's registry: never walked again
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)  # the older generations keep their defaults


@pytest.mark.usefixtures("collector")
def test_cyclic_garbage_made_after_the_start_is_still_collected() -> None:
    tune_garbage_collector()

    class Node:
        partner: Node

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    gone = weakref.ref(first)
    del first, second
    assert gone() is not None  # a cycle: reference counting alone never frees it
    gc.collect()
    assert gone() is None
