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


def test_label_change_refuses_a_sha256_with_a_trailing_newline():
    # `re.match` with `$` let "<64 hex>\n" through: a label that never matches a sample
    with pytest.raises(ValueError, match="64 hex"):
        LabelChange(SHA + "\n", LabelValue.MALICIOUS, LabelSource.ANALYST, T0)
    with pytest.raises(ValueError, match="lower-case"):
        LabelChange(SHA.upper(), LabelValue.MALICIOUS, LabelSource.ANALYST, T0)


@pytest.mark.parametrize("bad", [SHA[:-1], SHA + "a", SHA[:-1] + "g", "٠" * 64, ""])
def test_label_row_with_a_mistyped_sha256_is_refused_naming_the_row(tmp_path: Path, bad: str):
    p = tmp_path / "l.csv"
    p.write_text(f"sha256,label\n{SHA},malicious\n{bad},benign\n")
    with pytest.raises(LabelFileError) as info:
        parse_label_file(p, default_time=T0)
    # the message of `backend.validation.check_sha256`, the rule the HTTP API applies too
    assert str(info.value) == f"{p}:3: sha256: must be 64 hex characters"


def test_label_file_sha256_is_stored_lower_case_without_its_blanks(tmp_path: Path):
    p = tmp_path / "l.csv"
    p.write_text(f"sha256,label\n  {SHA.upper()} ,malicious\n")
    (only,) = parse_label_file(p, default_time=T0)
    assert only.sha256 == SHA


def test_labels_import_command_refuses_a_mistyped_sha256_in_one_line(tmp_path: Path):
    p = tmp_path / "l.jsonl"
    good = json.dumps({"sha256": SHA, "label": "malicious"})
    p.write_text(good + "\n" + json.dumps({"sha256": SHA[:-1], "label": "benign"}) + "\n")
    db = tmp_path / "b.db"
    result = CliRunner().invoke(main, ["labels", "import", str(p), "--db", str(db)])
    assert result.exit_code == 1
    assert result.output == f"Error: {p}:2: sha256: must be 64 hex characters\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    store = Store(db)
    assert list(store.iter_labels()) == []  # nothing of the file is recorded
    store.close()


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


def test_analyst_route_refuses_a_mistyped_sha256_in_one_line(live_server):
    body = {"labels": [{"sha256": SHA, "label": "benign"}, {"sha256": SHA[:-1], "label": "benign"}]}
    r = httpx.post(f"{live_server.url}/v1/admin/labels", json=body, headers=live_server.admin())
    assert r.status_code == 422
    # the API model's HexSha256 runs the same `check_sha256` (same words), and names the row
    assert r.json()["detail"] == "labels.1.sha256: must be 64 hex characters"
    assert live_server.store.label_as_of(SHA, dt.datetime(2100, 1, 1, tzinfo=dt.UTC)) is None
