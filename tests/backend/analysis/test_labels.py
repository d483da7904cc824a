"""Golden labels: files, the as-of lookup, the CLI and the analyst API route."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from backend.analysis.labels import (
    LabelBook,
    LabelChange,
    LabelFileError,
    LabelSource,
    LabelValue,
    parse_label_file,
)
from backend.store import Store
from fleetward.cli import main

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
SHA = "ab" * 32


def test_label_reversal_is_read_as_of_its_time(tmp_path: Path):
    store = Store(tmp_path / "b.db")
    store.append_labels(
        [
            LabelChange(SHA, LabelValue.BENIGN, LabelSource.CUSTOMER_REPORT, T0),
            LabelChange(SHA, LabelValue.MALICIOUS, LabelSource.ANALYST, T0 + dt.timedelta(days=3)),
        ],
        now=T0,
    )
    assert store.label_as_of(SHA, T0 - dt.timedelta(seconds=1)) is None
    first = store.label_as_of(SHA, T0 + dt.timedelta(days=1))
    assert first is not None and first.label is LabelValue.BENIGN
    later = store.label_as_of(SHA, T0 + dt.timedelta(days=3))
    assert later is not None and later.label is LabelValue.MALICIOUS
    book = LabelBook(store.iter_labels())
    for days in (-1, 1, 3, 9):
        t = T0 + dt.timedelta(days=days)
        assert book.label_as_of(SHA, t) == store.label_as_of(SHA, t)
    store.close()


def test_label_files_in_jsonl_and_csv(tmp_path: Path):
    jl = tmp_path / "l.jsonl"
    jl.write_text(
        json.dumps({"sha256": SHA, "label": "malicious", "source": "feed", "family": "x"})
        + "\n\n"
        + json.dumps({"sha256": "cd" * 32, "label": 0, "labelled_at": "2026-10-02T00:00:00+00:00"})
        + "\n"
    )
    got = parse_label_file(jl, default_time=T0)
    assert [c.label for c in got] == [LabelValue.MALICIOUS, LabelValue.BENIGN]
    assert got[0].labelled_at == T0 and got[0].family == "x"
    assert got[1].source is LabelSource.ANALYST
    cs = tmp_path / "l.csv"
    cs.write_text(f"sha256,label,source,labelled_at\n{SHA},benign,customer_report,\n")
    (only,) = parse_label_file(cs, default_time=T0)
    assert only.source is LabelSource.CUSTOMER_REPORT and only.labelled_at == T0


@pytest.mark.parametrize(
    "line",
    [
        '{"sha256": "zz", "label": "benign"}',
        '{"label": "benign"}',
        '{"sha256": "' + SHA + '", "label": "maybe"}',
        '{"sha256": "' + SHA + '", "label": "benign", "labelled_at": "2026-10-01T00:00:00"}',
        "not json",
    ],
)
def test_bad_label_lines_are_refused_with_their_line(tmp_path: Path, line: str):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(LabelFileError, match="bad.jsonl:1"):
        parse_label_file(p, default_time=T0)


def test_labels_import_command(tmp_path: Path):
    p = tmp_path / "l.jsonl"
    p.write_text(json.dumps({"sha256": SHA, "label": "malicious"}) + "\n")
    db = tmp_path / "b.db"
    result = CliRunner().invoke(main, ["labels", "import", str(p), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "recorded 1 label change(s)" in result.output
    store = Store(db)
    assert len(list(store.iter_labels())) == 1
    store.close()
    p.write_text('{"sha256": "x"}\n')
    bad = CliRunner().invoke(main, ["labels", "import", str(p), "--db", str(db)])
    assert bad.exit_code == 1 and "Error" in bad.output


def test_analyst_route_records_labels(live_server):
    with httpx.Client() as client:
        url = f"{live_server.url}/v1/admin/labels"
        body = {"labels": [{"sha256": SHA, "label": "malicious", "source": "analyst"}]}
        assert client.post(url, json=body).status_code == 401
        r = client.post(url, json=body, headers=live_server.admin())
        assert r.status_code == 201, r.text
        assert r.json() == {"recorded": 1, "samples": 1, "malicious": 1}
        bad = client.post(
            url, json={"labels": [{"sha256": SHA, "label": "?"}]}, headers=live_server.admin()
        )
        assert bad.status_code == 422 and "labels.0" in bad.json()["detail"]
    assert live_server.store.label_as_of(SHA, dt.datetime(2100, 1, 1, tzinfo=dt.UTC)) is not None
    assert "/v1/admin/labels" in httpx.get(f"{live_server.url}/openapi.json").json()["paths"]
