"""The transition analysis's label switch: labels as known then by default, corrected on request.

Mirrors `test_labels_known_time.py` for `predict_transition` and `fleetward transition`: a
backdated import today leaves the default report unchanged (labels as the backend knew them
at `now`), while `corrected_labels` / `--corrected-labels` reads every label from its
`labelled_at` and sees the reversal.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.analysis.transition import predict_transition
from backend.store import Store
from fleetward.cli import main
from tests.backend.history import END, ROLLOUT, START, History, copy_store, history

__all__ = ["history"]

TODAY = END + dt.timedelta(days=30)


def _cli(db: Path, history: History, out: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(
        main,
        ["transition", "--from", "1", "--to", "2", "--db", str(db),
         "--bundles", str(history.bundles[1].parent), "--now", ROLLOUT.isoformat(),
         "--out", str(out), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads((out / "transition.json").read_text())
    return data


def test_backdated_labels_change_the_transition_only_with_corrected_labels(
    history: History, tmp_path: Path
) -> None:
    db = tmp_path / "copy.db"
    store = copy_store(history, db)
    old, new = history.bundles[1], history.bundles[2]
    before = predict_transition(store, old, new, now=ROLLOUT)
    before_c = predict_transition(store, old, new, now=ROLLOUT, corrected_labels=True)
    assert before_c.to_dict() == before.to_dict()  # nothing backdated yet: the same truth
    cli_before = _cli(db, history, tmp_path / "cli-before")
    # today an analyst reverses every benign sample's label, dated back to the start
    benign = sorted(set(history.vectors) - history.malicious)
    store.append_labels(
        [LabelChange(s, LabelValue.MALICIOUS, LabelSource.ANALYST, START) for s in benign],
        now=TODAY,
    )
    after = predict_transition(store, old, new, now=ROLLOUT)
    after_c = predict_transition(store, old, new, now=ROLLOUT, corrected_labels=True)
    store.close()
    assert after.to_dict() == before.to_dict()  # the default: as known at the switch
    # the corrected truth: the reversed samples are malicious, so no negative flip is left
    assert before.fleet_predicted_new_fp_alerts_per_day > 0
    assert after_c.fleet_predicted_new_fp_alerts_per_day == 0
    assert not after_c.transition_allowlist
    assert sum(o.positive_flips for o in after_c.per_org.values()) > sum(
        o.positive_flips for o in before.per_org.values()
    )
    cli_after = _cli(db, history, tmp_path / "cli-after")
    cli_after_c = _cli(db, history, tmp_path / "cli-after-c", "--corrected-labels")
    key = "fleet_predicted_new_fp_alerts_per_day"
    assert cli_after[key] == cli_before[key] == before.fleet_predicted_new_fp_alerts_per_day
    assert cli_after_c[key] == 0


def test_transition_command_applies_the_evidence_allowlist_by_scope(
    history: History, tmp_path: Path, repo_dir: Path
) -> None:
    db = tmp_path / "copy.db"
    store = copy_store(history, db)
    # Fleet-level evidence made deliberate rather than hoped for from one training run: an
    # analyst labelled the benign negative flips benign at START (known before the switch).
    report = predict_transition(store, history.bundles[1], history.bundles[2], now=ROLLOUT)
    flips = {s for o in report.per_org.values() for s in o.allowlist_sha256s}
    benign_flips = sorted(flips - history.malicious)
    assert benign_flips, "the history has no benign negative flip to allowlist"
    store.append_labels(
        [LabelChange(s, LabelValue.BENIGN, LabelSource.ANALYST, START) for s in benign_flips],
        now=START,
    )
    result = CliRunner().invoke(
        main,
        ["transition", "--from", "1", "--to", "2", "--db", str(db),
         "--bundles", str(history.bundles[1].parent), "--now", ROLLOUT.isoformat(),
         "--out", str(tmp_path / "out"), "--apply-allowlist", str(repo_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "allowlisted" in result.output and "fleet-wide" in result.output
    store.close()
    fresh = Store(db)  # another process wrote the policy: read it afresh
    policy = fresh.current_policy()
    fresh.close()
    assert policy is not None
    doc = policy.document
    ours = "fleetward-transition"  # the entries this command added (the history has others)
    fleet = [e for e in doc.default.allowlist if e.author == ours]
    org_only = [(o, e) for o, p in doc.orgs.items() for e in p.allowlist if e.author == ours]
    assert {e.sha256 for e in fleet} >= set(benign_flips)  # the label rule: fleet-wide
    # fleet-wide only on fleet-level evidence; in-house use stays in its own org
    assert all(", label:" in e.reason or ", prevalent:" in e.reason for e in fleet)
    assert all(", established:" in e.reason and o in e.reason for o, e in org_only)
