"""The console's rollouts page shows the current ring of a ringed rollout."""

from __future__ import annotations

from agent.policy import Ring
from backend import admin
from backend.rollout import service as svc
from tests.backend.conftest import NOW
from tests.backend.console.conftest import ConsoleEnv


def test_rollouts_page_shows_the_ring_of_a_ringed_rollout(console: ConsoleEnv) -> None:
    pre = console.store.create_org("early-bird", NOW).org_id
    console.store.create_org("everyone-else", NOW)
    publish = console.app.state.routes.publish
    admin.assign_model(console.store, publish, 1, org_id=None, now=NOW)
    admin.set_ring(console.store, publish, Ring.PREVIEW, org_id=pre, now=NOW)
    svc.start_rollout(console.store, publish, 2, now=NOW, rings=True)
    console.login()
    page = console.client.get("/console/rollouts").text
    assert "<dt>Ring</dt><dd>preview</dd>" in page
    assert "in ring preview" in page  # the start decision says where it began
