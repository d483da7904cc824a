"""`fleetward transition` and `rescore` take `--db postgresql://...` like every other command.

An outside probe found both refused a URL (`--db` was a click path that must exist), so a
PostgreSQL backend could not be analysed from the command line. Here the same telemetry and
labels go into a SQLite file and a fresh PostgreSQL database, and each command's JSON report
is the same from either. The local engine reads a non-SQLite store row by row through the store
protocol (`backend.analysis.transition`), the reference the SQLite bulk read is tested against.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from agent.decision import Reason, Verdict
from agent.features import extract_features
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis.labels import LabelChange, LabelSource, LabelValue, import_labels
from backend.ingest import aggregate
from backend.store import AggregateStore, Store, open_store
from fleetward.cli import main
from tests.backend.test_cli_postgres import pg_url  # noqa: F401 - the fixture

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=10)


def _fill(store: AggregateStore) -> dict[str, str]:
    """A week of two orgs' decisions on 24 samples with real feature vectors, and labels.

    Returns the orgs' pseudonyms (each store draws its own) by name.
    """
    orgs = {name: store.create_org(name, T0).org_id for name in ("acme", "globex")}
    rng = np.random.default_rng(7)
    samples = [bytes(rng.integers(0, 256, 600 + 97 * i, dtype=np.uint8)) for i in range(24)]
    shas = [f"{i:02x}" * 32 for i in range(24)]
    for day in range(7):
        for org in orgs.values():
            events = []
            for i, (sha, data) in enumerate(zip(shas, samples, strict=True)):
                if (i + day) % 3 == 0:
                    continue
                vec = extract_features(data).astype("<f4").tobytes()
                at = TelemetryEvent.ms(T0 + dt.timedelta(days=day, hours=i))
                events.append(
                    TelemetryEvent(org, "ep_1", sha, 1, 0.2, Verdict.ALLOW,
                                   Reason.SCORE_BELOW, at, "static-v1", vec)
                )  # fmt: skip
            batch = TelemetryBatch(f"k-{org}-{day}-xxxx", org, "ep_1", 0, tuple(events))
            rows, feats = aggregate(events)
            store.ingest(batch, rows, feats, T0 + dt.timedelta(days=day, hours=23))
    labels = [
        LabelChange(sha, LabelValue.MALICIOUS if i % 4 == 0 else LabelValue.BENIGN,
                    LabelSource.ANALYST, T0)
        for i, sha in enumerate(shas)
    ]  # fmt: skip
    import_labels(store, labels, now=T0 + dt.timedelta(days=1))
    return orgs


def _named(text: str, orgs: dict[str, str]) -> object:
    """The report with org names for pseudonyms (lists keep their order: ties among orgs follow
    the store's creation order, the same in both stores, not their pseudonyms)."""
    for name, org_id in orgs.items():
        text = text.replace(org_id, name)
    return json.loads(text)


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception


def test_transition_and_rescore_read_a_postgresql_store_as_they_read_sqlite(
    pg_url: str,  # noqa: F811 - the fixture
    bundles: dict[int, Path],
    tmp_path: Path,
) -> None:
    sqlite = Store(tmp_path / "b.db", synchronous="NORMAL")
    pg = open_store(pg_url)
    try:
        orgs = {"sqlite": _fill(sqlite), "pg": _fill(pg)}
    finally:
        sqlite.close()
        pg.close()
    b1, b2 = bundles[1], bundles[2]
    (tmp_path / "base.toml").write_text(f'name = "base"\n[models]\n1 = "{b1}"\n')
    (tmp_path / "exp.toml").write_text(f'name = "v2"\n[models]\n1 = "{b2}"\n')
    reports = {}
    for name, db in (("sqlite", str(tmp_path / "b.db")), ("pg", pg_url)):
        out = tmp_path / name
        _run(["transition", "--from", "1", "--to", "2", "--db", db, "--out", str(out / "t"),
              "--bundles", str(b1.parent), "--now", NOW.isoformat()])  # fmt: skip
        _run(["rescore", "--db", db, "--baseline", str(tmp_path / "base.toml"),
              "--experiment", str(tmp_path / "exp.toml"), "--out", str(out / "r"),
              "--now", NOW.isoformat()])  # fmt: skip
        reports[name] = [
            _named((out / "t" / "transition.json").read_text(), orgs[name]),
            _named((out / "r" / "rescore.json").read_text(), orgs[name]),
        ]
    assert "acme" in json.dumps(reports["pg"][0])  # the orgs' decisions were read
    assert reports["pg"] == reports["sqlite"]


def test_analysis_commands_say_in_one_line_when_the_store_cannot_be_opened(
    tmp_path: Path,
) -> None:
    for db in (str(tmp_path / "missing.db"), "postgresql://postgres@127.0.0.1:1/nowhere"):
        result = CliRunner().invoke(
            main, ["transition", "--from", "1", "--to", "2", "--db", db, "--out", str(tmp_path),
                   "--bundles", str(tmp_path)],
        )  # fmt: skip
        assert result.exit_code != 0
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert lines and "Traceback" not in result.output, result.output
