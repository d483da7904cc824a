"""`fleetward backend ...`: a thin click layer over backend.server, backend.store, backend.admin.

Each command opens the store, makes one library call with `now` from the backend's clock, and
renders the result; domain errors become a one-line `ClickException`. The operator commands
call the same `backend.admin` functions as the `/v1/admin/...` routes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from agent.cli_errors import OneLineErrors
from agent.decision import Mode
from agent.policy import Ring
from backend import admin
from backend._clock import utc_now
from backend.cli_options import TufRepositoryDir, open_store_for_cli
from backend.errors import BackendError
from backend.server.app import serve
from backend.server.push import PushConfig
from backend.store import AggregateStore, PolicyRecord

__all__ = ["backend"]

_PUSH_DEFAULTS = PushConfig()

_DB = click.option(
    "--db",
    "db",
    required=True,
    help="SQLite database file (created if missing) or a postgresql:// URL.",
)
_REPO = click.option(
    "--repo",
    "repo_dir",
    required=True,
    type=TufRepositoryDir(),
    help="TUF repository directory (from `fleetward repo init`).",
)
_ORG = click.option("--org", "org_id", default=None, help="Org pseudonym; fleet-wide when omitted.")
T = TypeVar("T")


def _with_store(db: str, call: Callable[[AggregateStore], T]) -> T:
    """`call` on the store at `db` (a SQLite file or a `postgresql://` URL), closed after.

    A backend error is a one-line CLI error.
    """
    store = open_store_for_cli(db)
    try:
        return call(store)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _run(db: str, call: Callable[[AggregateStore], PolicyRecord]) -> None:
    record = _with_store(db, call)
    click.echo(f"policy v{record.version}: {record.action}")


@click.group(cls=OneLineErrors)
def backend() -> None:
    """The backend: enrollment, signed policy, telemetry aggregates, operator actions."""


@backend.command("serve")
@click.option(
    "--db",
    "db",
    required=True,
    help="SQLite database file (created if missing) or a postgresql:// URL.",
)
@_REPO
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "NORMAL"]),
    default="FULL",
    show_default=True,
    help="SQLite durability: FULL survives power loss, NORMAL only a process crash.",
)
@click.option(
    "--rollout-tick-s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Run the rollout controller's tick every N seconds (0: only on request).",
)
@click.option(
    "--max-push-channels",
    type=click.IntRange(1, 1_000_000),
    default=_PUSH_DEFAULTS.max_channels,
    show_default=True,
    help="Open push channels (GET /v1/push) at most; past that, 503 with Retry-After.",
)
@click.option(
    "--push-heartbeat-s",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=_PUSH_DEFAULTS.heartbeat_s,
    show_default=True,
    help="Seconds between keep-alives on an idle push channel (below your proxy's read timeout).",
)
def serve_cmd(
    db: str,
    repo_dir: Path,
    host: str,
    port: int,
    synchronous: str,
    rollout_tick_s: float,
    max_push_channels: int,
    push_heartbeat_s: float,
) -> None:
    """Serve the API, the TUF repository (/tuf/) and /metrics; tick rollouts on an interval.

    Example: fleetward backend serve --db fleet.db --repo repo --port 8080
    (or --db postgresql://fleetward@db.internal/fleetward --max-push-channels 50000)
    """
    push = PushConfig(max_channels=max_push_channels, heartbeat_s=push_heartbeat_s)
    serve(open_store_for_cli(db, synchronous=synchronous), repo_dir, host=host, port=port,
          rollout_tick_s=rollout_tick_s or None, push=push)  # fmt: skip


@backend.group("org")
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@_DB
def org_create(name: str, db: str) -> None:
    """Create an organization and print its pseudonymous id and enroll token.

    Example: fleetward backend org create acme --db fleet.db
    """
    made = _with_store(db, lambda s: s.create_org(name, utc_now()))
    click.echo(
        json.dumps({"org_id": made.org_id, "name": made.name, "enroll_token": made.enroll_token})
    )


@org.command("set-ring")
@click.argument("org_id")
@click.argument("ring", type=click.Choice([r.value for r in Ring]))
@click.option(
    "--delay-hours",
    "delay_h",
    type=click.FloatRange(min=0.0, max=8784.0),
    default=0.0,
    help="On `delayed`: hours after the broad ring completes before this org gets a version.",
)
@_DB
@_REPO
def set_ring(org_id: str, ring: str, delay_h: float, db: str, repo_dir: Path) -> None:
    """Put an org on an update ring (preview, staged, broad, delayed) in signed policy.

    Example: fleetward backend org set-ring 3f2a delayed --delay-hours 48 --db f.db --repo repo
    """
    pub = admin.repository_publisher(repo_dir)
    _run(
        db,
        lambda s: admin.set_ring(s, pub, Ring(ring), org_id=org_id, delay_h=delay_h, now=utc_now()),
    )


@backend.command("create-admin-token")
@_DB
def create_admin_token(db: str) -> None:
    """Print a new operator token for the /v1/admin routes (shown once, stored hashed).

    Example: fleetward backend create-admin-token --db fleet.db
    """
    click.echo(_with_store(db, lambda s: s.create_admin_token(utc_now())))


@backend.command("set-mode")
@click.argument("mode", type=click.Choice([m.value for m in Mode]))
@_DB
@_REPO
@_ORG
def set_mode(mode: str, db: str, repo_dir: Path, org_id: str | None) -> None:
    """Set the mode (`off` is the kill switch) and republish the signed policy.

    Example: fleetward backend set-mode off --db fleet.db --repo repo
    """
    pub = admin.repository_publisher(repo_dir)
    _run(db, lambda s: admin.set_mode(s, pub, Mode(mode), org_id=org_id, now=utc_now()))


@backend.command("assign-model")
@click.argument("version", type=click.IntRange(min=1))
@click.option(
    "--shadow", "shadow", type=click.IntRange(min=1), default=None, help="Shadow model version."
)
@_DB
@_REPO
@_ORG
def assign_model(
    version: int, shadow: int | None, db: str, repo_dir: Path, org_id: str | None
) -> None:
    """Assign the model version agents should run, and republish the signed policy.

    Example: fleetward backend assign-model 3 --shadow 4 --db fleet.db --repo repo
    """
    pub = admin.repository_publisher(repo_dir)
    _run(
        db,
        lambda s: admin.assign_model(
            s, pub, version, shadow_model_version=shadow, org_id=org_id, now=utc_now()
        ),
    )


def _list_group(which: str) -> click.Group:
    @click.group(which)
    def group() -> None:
        """Add or remove entries (sha256) and republish the signed policy."""

    @group.command("add")
    @click.argument("sha256")
    @click.option("--reason", default="")
    @click.option(
        "--expires",
        "expires",
        default=None,
        help="ISO time with offset, e.g. 2030-01-01T00:00:00+00:00.",
    )
    @_DB
    @_REPO
    @_ORG
    def add(
        sha256: str, reason: str, expires: str | None, db: str, repo_dir: Path, org_id: str | None
    ) -> None:
        """Add an entry, optionally expiring.

        Example: fleetward backend allowlist add <sha256> --reason tool --db fleet.db --repo repo
        """
        try:
            expires_at = dt.datetime.fromisoformat(expires) if expires else None
            if expires_at is not None and expires_at.tzinfo is None:
                raise ValueError("needs a UTC offset")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expires") from None
        pub = admin.repository_publisher(repo_dir)
        _run(
            db,
            lambda s: admin.add_list_entry(
                s,
                pub,
                which,
                sha256,
                org_id=org_id,
                now=utc_now(),
                reason=reason,
                expires_at=expires_at,
            ),
        )

    @group.command("remove")
    @click.argument("sha256")
    @_DB
    @_REPO
    @_ORG
    def remove(sha256: str, db: str, repo_dir: Path, org_id: str | None) -> None:
        """Remove an entry.

        Example: fleetward backend blocklist remove <sha256> --db fleet.db --repo repo
        """
        pub = admin.repository_publisher(repo_dir)
        _run(
            db,
            lambda s: admin.remove_list_entry(s, pub, which, sha256, org_id=org_id, now=utc_now()),
        )

    return group


@backend.group("token")
def token() -> None:
    """Enroll tokens (expiry, use limit, rotation) and revocation of any token."""


@token.command("create-enroll-token")
@click.argument("org_id")
@click.option("--expires", default=None, help="ISO time with offset, e.g. 2030-01-01T00:00Z.")
@click.option("--max-uses", type=int, default=None, help="Endpoints it may enroll at most.")
@click.option("--rotate", is_flag=True, help="Revoke the org's other enroll tokens.")
@_DB
def create_enroll_token(
    org_id: str, expires: str | None, max_uses: int | None, rotate: bool, db: str
) -> None:
    """Issue an enroll token for an org (printed once), optionally expiring or rotating.

    Example: fleetward backend token create-enroll-token org_1a2b --max-uses 50 --rotate --db f.db
    """
    try:
        expires_at = dt.datetime.fromisoformat(expires) if expires else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    made = _with_store(
        db,
        lambda s: s.create_enroll_token(
            org_id, utc_now(), expires_at=expires_at, max_uses=max_uses, rotate=rotate
        ),
    )
    click.echo(
        json.dumps(
            {
                "org_id": made.org_id,
                "token_id": made.token_id,
                "enroll_token": made.token,
                "expires_at": made.expires_at.isoformat() if made.expires_at else None,
                "max_uses": made.max_uses,
            }
        )
    )


@token.command("tokens")
@click.argument("org_id")
@_DB
def tokens(org_id: str, db: str) -> None:
    """List an org's tokens (ids, kinds, limits, uses, revocation; never the secrets).

    Example: fleetward backend token tokens org_1a2b --db fleet.db
    """
    found = _with_store(db, lambda s: s.tokens(org_id))
    for t in found:
        state = f"revoked {t.revoked_at.isoformat()}" if t.revoked_at else "active"
        limits = f"uses {t.uses}" + (f"/{t.max_uses}" if t.max_uses else "")
        expiry = f" expires {t.expires_at.isoformat()}" if t.expires_at else ""
        click.echo(f"{t.token_id} {t.kind.value} {t.endpoint_id or '-'} {limits}{expiry} {state}")


@token.command("revoke-token")
@click.argument("token_id")
@_DB
def revoke_token(token_id: str, db: str) -> None:
    """Revoke a token by its id (from `token tokens`); it is refused at once.

    Example: fleetward backend token revoke-token tok_0123456789abcdef --db fleet.db
    """
    _with_store(db, lambda s: s.revoke_token(token_id, utc_now()))
    click.echo(f"revoked {token_id}")


@token.command("revoke-endpoint")
@click.argument("endpoint_id")
@_DB
def revoke_endpoint(endpoint_id: str, db: str) -> None:
    """Revoke an endpoint's token: its next check-in or batch gets 401.

    Example: fleetward backend token revoke-endpoint ep_0123456789abcdef01234567 --db fleet.db
    """
    n = _with_store(db, lambda s: s.revoke_endpoint(endpoint_id, utc_now()))
    click.echo(f"revoked {n} token(s) of {endpoint_id}")


backend.add_command(_list_group("allowlist"))
backend.add_command(_list_group("blocklist"))
