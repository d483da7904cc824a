"""The serve process's heap freezer: frozen objects are skipped, a thaw reclaims their garbage."""

from __future__ import annotations

import gc
import weakref

import pytest

from backend.server._gc import HeapFreezer, start_freezer


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_step_moves_the_live_heap_to_the_permanent_generation():
    freezer = HeapFreezer(thaw_every=10)
    assert freezer.step() == "frozen"
    assert gc.get_freeze_count() > 0


def test_cyclic_garbage_frozen_waits_for_the_thaw_which_reclaims_it():
    freezer = HeapFreezer(thaw_every=2)
    node = _Node()
    ref = weakref.ref(node)
    assert freezer.step() == "frozen"  # the node is frozen while alive
    del node
    gc.collect()
    assert ref() is not None  # frozen: a full collection does not walk it (the leak bound)
    assert freezer.step() == "thawed"
    assert ref() is None  # the thaw's collection reclaimed it
    assert gc.get_freeze_count() == 0


def test_refuses_a_thaw_period_below_two_steps():
    with pytest.raises(ValueError, match="thaw_every"):
        HeapFreezer(thaw_every=1)


def test_the_thread_freezes_until_stopped_and_thaws_on_stop():
    stop = start_freezer(every_s=0.01, thaw_every=1000)
    try:
        for _ in range(500):  # up to 5 s on a loaded machine; usually the first 10 ms
            if gc.get_freeze_count() > 0:
                break
            stop.wait(0.01)
        assert gc.get_freeze_count() > 0
    finally:
        stop.set()
    for _ in range(500):
        if gc.get_freeze_count() == 0:
            break
        stop.wait(0.01)
    assert gc.get_freeze_count() == 0
