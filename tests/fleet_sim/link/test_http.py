"""`fleetward sim run --backend URL`: a real `backend serve` subprocess receives the telemetry."""

from __future__ import annotations

import datetime as dt
import json

import httpx
from click.testing import CliRunner

from backend._clock import utc_now
from backend.store import Store
from fleetward.cli import main
from model_store.repository import init_repository
from tests.backend.conftest import ServerProcess, free_port
from tests.fleet_sim.conftest import SCENARIOS

SIZE = "--endpoints 40 --orgs 4 --days 0.4"


def test_backend_url_lands_every_sent_event_in_the_server_aggregates(sim_data, tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, now=utc_now())  # TUF expiries are relative to real time
    db = tmp_path / "server.db"
    store = Store(db)
    token = store.create_admin_token(dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    store.close()
    server = ServerProcess(db, repo, free_port())
    server.start()
    try:
        out = tmp_path / "run"
        r = CliRunner().invoke(
            main,
            ["sim", "run", str(SCENARIOS / "kill-switch.toml"), *SIZE.split()]
            + ["--backend", server.url, "--admin-token", token]
            + ["--data", str(sim_data), "--out", str(out)],
        )
        assert r.exception is None or isinstance(r.exception, SystemExit), r.output
        report = json.loads((out / "report.json").read_text())
        sent = sum(a["counters"]["backend_events_sent"] for a in report["arms"].values())
        delivered = sum(a["counters"]["events_delivered"] for a in report["arms"].values())
        assert sent == delivered > 0
        rows = httpx.get(
            server.url + "/v1/admin/aggregates", headers={"authorization": f"Bearer {token}"}
        ).json()
        assert sum(row["count"] for row in rows) == sent
        assert all(row["org_id"].startswith("org_") for row in rows)
    finally:
        server.stop()
