"""The overview's largest organizations: ties on size in creation order, not by pseudonym.

The store draws each org's id at random (`secrets`), so an order by id is a new order for every
store. Here the draws are replaced by counters running up (ids in creation order) and down (the
reverse), the two extremes of that randomness.
"""

from __future__ import annotations

import re

import pytest

import backend.store.sqlite as sqlite_store
from tests.backend.conftest import NOW
from tests.backend.console.conftest import ConsoleEnv
from tests.pseudonyms import CountingIds

SIZES = {"a": 1, "b": 2, "c": 1, "d": 0, "e": 2, "f": 1}  # name -> endpoints enrolled


@pytest.mark.parametrize("step", [1, -1])
def test_largest_orgs_tied_on_size_are_listed_in_creation_order(
    console: ConsoleEnv, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    monkeypatch.setattr(sqlite_store, "secrets", CountingIds(step))
    ids = {name: console.store.create_org(name, NOW).org_id for name in SIZES}
    assert list(ids.values()) == sorted(ids.values(), reverse=step < 0)  # the draws were replaced
    for name, n in SIZES.items():
        for _ in range(n):
            console.store.enroll(ids[name], NOW)
    console.login()
    page = console.client.get("/console/").text
    table = page.split('id="top-h"')[1]
    listed = re.findall(r'<td><a href="[^"]*/orgs/([^"]+)">', table)
    names = {o: name for name, o in ids.items()}
    assert [names[o] for o in listed] == ["b", "e", "a", "c", "f", "d"]
