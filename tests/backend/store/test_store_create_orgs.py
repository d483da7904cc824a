"""`Store.create_orgs`: many organizations in one transaction, each as `create_org`, all or none."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from backend.errors import BatchInvalidError, ConflictError
from backend.store import Store, TokenKind

NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def test_create_orgs_makes_each_org_as_create_org_does(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.sqlite")
    first = store.create_org("alpha", NOW)
    made = store.create_orgs(["beta", "gamma", "delta"], NOW)
    assert [m.name for m in made] == ["beta", "gamma", "delta"]
    assert len({first.org_id, *(m.org_id for m in made)}) == 4
    assert store.org_ids() == [first.org_id, *(m.org_id for m in made)]
    for m in made:
        assert store.has_org(m.org_id)
        who = store.authenticate(m.enroll_token, NOW)
        assert (who.kind, who.org_id) == (TokenKind.ENROLL, m.org_id)
        assert store.enroll(m.org_id, NOW, enroll_token=m.enroll_token).endpoint_id
    store.close()
    again = Store(tmp_path / "b.sqlite")  # committed: a new connection sees every one
    assert again.org_ids() == [first.org_id, *(m.org_id for m in made)]
    again.close()


@pytest.mark.parametrize(
    ("names", "error"),
    [
        (["beta", "alpha", "gamma"], ConflictError),  # taken before
        (["beta", "gamma", "beta"], ConflictError),  # given twice
        (["beta", "", "gamma"], BatchInvalidError),  # blank
    ],
)
def test_create_orgs_creates_none_when_one_name_is_refused(
    tmp_path: Path, names: list[str], error: type[Exception]
) -> None:
    store = Store(tmp_path / "b.sqlite")
    alpha = store.create_org("alpha", NOW)
    with pytest.raises(error):
        store.create_orgs(names, NOW)
    assert store.org_ids() == [alpha.org_id]  # the fault landed before "gamma", none stayed
    assert store.create_orgs(["beta", "gamma"], NOW)  # and the names are free again
    store.close()
