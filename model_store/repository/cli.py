"""`fleetward repo ...`: a thin click layer over `model_store.repository`.

Each command makes one library call with `now` read from the model store's clock, and turns
domain errors into a one-line `ClickException`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from model_store._clock import utc_now
from model_store.errors import GateRefusedError, ModelStoreError
from model_store.gate import GateConfig, GateReport, backend_surge_predictor
from model_store.repository.signing import (
    ROLES,
    PublishResult,
    RepoVersions,
    init_repository,
    publish_model,
    publish_policy,
    refresh,
    rotate_key,
)

__all__ = ["repo"]

_DEFAULT_GATE = GateConfig()


def _versions(v: RepoVersions) -> str:
    return f"root v{v.root}, targets v{v.targets}, snapshot v{v.snapshot}, timestamp v{v.timestamp}"


def _published(result: PublishResult) -> None:
    click.echo(f"published {', '.join(result.target_paths)} ({_versions(result.versions)})")


@click.group()
def repo() -> None:
    """The signed (TUF) update repository that agents fetch models and policy from.

    Serve only DIR/metadata and DIR/targets; DIR/keys holds the private keys.
    """


@repo.command("init")
@click.argument("repo_dir", type=click.Path(file_okay=False, path_type=Path))
def init_cmd(repo_dir: Path) -> None:
    """Create keys (root 2-of-3, targets, snapshot, timestamp) and signed metadata in DIR.

    Example: fleetward repo init data/repo
    """
    try:
        versions = init_repository(repo_dir, now=utc_now())
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"initialised {repo_dir}: {_versions(versions)}; trust anchor "
        f"{repo_dir / 'metadata' / '1.root.json'}"
    )


@repo.command("publish-model")
@click.argument("repo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--golden",
    "golden",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Corpus directory (fleetward corpus make); its held-out split is the golden set.",
)
@click.option(
    "--db",
    default=None,
    help="Backend store (SQLite path or postgresql:// URL): also gate the per-org FP surge.",
)
@click.option(
    "--max-org-fp-per-day",
    type=click.FloatRange(min=0),
    default=_DEFAULT_GATE.max_org_new_fp_alerts_per_day,
    show_default=True,
    help="Per-org budget of predicted new false-positive alerts per day (with --db).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where gate.html and gate.json go (default: REPO_DIR/gate-reports/vN-<time>).",
)
@click.option("--force", is_flag=True, help="Publish even if the gate fails (needs --reason).")
@click.option("--reason", default=None, help="Why a forced publish ships; signed with it.")
def publish_model_cmd(
    repo_dir: Path,
    bundle_dir: Path,
    golden: Path,
    db: str | None,
    max_org_fp_per_day: float,
    report_dir: Path | None,
    force: bool,
    reason: str | None,
) -> None:
    """Gate a bundle, then sign it as models/vN/model.onnx + manifest.json.

    The release gate checks schema, canaries, FP ceiling, detection floor, score shift against
    the current model and (with --db) the per-org FP surge. Its HTML and JSON report is saved
    either way. A refused bundle is signed only with --force --reason "...", and the reason is
    signed into the targets metadata.

    Example: fleetward repo publish-model data/repo data/bundles/v2 --golden data/corpus
    --db data/backend.db
    """
    if force != (reason is not None):
        raise click.UsageError("--force and --reason go together")
    if reason is not None and not reason.strip():
        raise click.UsageError("--reason must not be empty")
    config = GateConfig(max_org_new_fp_alerts_per_day=max_org_fp_per_day)
    try:
        result = publish_model(
            repo_dir,
            bundle_dir,
            now=utc_now(),
            golden=golden,
            gate_config=config,
            surge=backend_surge_predictor(db) if db is not None else None,
            force_reason=reason,
            report_dir=report_dir,
        )
    except GateRefusedError as exc:
        click.echo(f"report: {', '.join(exc.report_paths)}", err=True)
        raise click.ClickException(str(exc)) from exc
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.gate is not None:
        _print_gate(result.gate)
        click.echo(f"report: {', '.join(map(str, result.report_paths))}")
        if not result.gate.passed:
            click.echo(f"FORCED past failed {', '.join(result.gate.failed)}: {reason}")
    _published(result)


def _print_gate(report: GateReport) -> None:
    for c in report.checks:
        value = "-" if c.value is None else f"{c.value:.4g}"
        bound = "-" if c.bound is None else f"{c.bound:.4g}"
        status = "pass" if c.passed else "FAIL"
        click.echo(f"  {status:4} {c.name:21} {value:>9} (bound {bound}): {c.reason}")
    if report.pair is not None:
        p = report.pair
        click.echo(
            f"  v{p.old_version} -> v{p.new_version}: NFR {p.nfr:.4f} ({p.negative_flips} of "
            f"{p.samples}), positive flips {p.pfr:.4f}, mean |dscore| {p.mean_abs_score_shift:.4f}"
        )


@repo.command("publish-policy")
@click.argument("repo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def publish_policy_cmd(repo_dir: Path, policy_file: Path) -> None:
    """Validate a policy document and sign it as one target per org (the kill switch lives here).

    Example: fleetward repo publish-policy data/repo policy.json
    """
    try:
        result = publish_policy(repo_dir, policy_file.read_bytes(), now=utc_now())
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    _published(result)


@repo.command("rotate-key")
@click.argument("repo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("role", type=click.Choice(ROLES))
@click.option("--keyid", default=None, help="Key to replace (default: the role's first key).")
def rotate_key_cmd(repo_dir: Path, role: str, keyid: str | None) -> None:
    """Replace a role's key, sign a new root with old and new keys, re-sign the role.

    Example: fleetward repo rotate-key data/repo targets
    """
    try:
        result = rotate_key(repo_dir, role, now=utc_now(), keyid=keyid)
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "role": result.role,
                "revoked_keyid": result.revoked_keyid,
                "new_keyid": result.new_keyid,
                "root_version": result.versions.root,
            }
        )
    )


@repo.command("refresh")
@click.argument("repo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def refresh_cmd(repo_dir: Path) -> None:
    """Re-sign the timestamp (1 day) and any role close to expiry; run it at least daily.

    Example: fleetward repo refresh data/repo
    """
    try:
        versions = refresh(repo_dir, now=utc_now())
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"refreshed: {_versions(versions)}")
