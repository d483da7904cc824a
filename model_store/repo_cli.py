"""`fleetward repo ...`: a thin click layer over `model_store.repository`.

Each command makes one library call with `now` read from the model store's clock, and turns
domain errors into a one-line `ClickException`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from model_store._clock import utc_now
from model_store.errors import ModelStoreError
from model_store.repository import (
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
def publish_model_cmd(repo_dir: Path, bundle_dir: Path) -> None:
    """Self-test a bundle and sign it as models/vN/model.onnx + manifest.json.

    Example: fleetward repo publish-model data/repo data/bundles/v2
    """
    try:
        result = publish_model(repo_dir, bundle_dir, now=utc_now())
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    _published(result)


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
