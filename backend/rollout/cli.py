"""`fleetward rollout ...`: a thin click layer over `backend.rollout.service`.

Each command opens the store, makes one library call with `now` from the backend's clock and
renders the result; domain errors become a one-line `ClickException`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from backend._clock import utc_now
from backend.admin import repository_publisher
from backend.cli_options import TufRepositoryDir, open_store_for_cli
from backend.errors import BackendError
from backend.rollout import service as svc
from backend.rollout.core import Rollout, RolloutConfig
from backend.rollout.rings import RING_ORDER
from backend.store import AggregateStore

__all__ = ["parse_duration", "rollout"]

T = TypeVar("T")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DB = click.option(
    "--db",
    "db",
    required=True,
    help="The backend's SQLite database file or postgresql:// URL.",
)
_REPO = click.option(
    "--repo",
    "repo_dir",
    required=True,
    type=TufRepositoryDir(),
    help="TUF repository directory the signed policy is published to.",
)


def parse_duration(text: str) -> dt.timedelta:
    """Parse `90s`, `30m`, `24h` or `2d` (a bare number is hours).

    Raises:
        ValueError: not a duration.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 2d)")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "h"])


def _call(db: str, fn: Callable[[AggregateStore], T]) -> T:
    store = open_store_for_cli(db)
    try:
        return fn(store)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _show(r: Rollout) -> None:
    click.echo(
        f"rollout {r.rollout_id}: {r.state.value}, v{r.from_version} -> v{r.to_version}, "
        f"stage {r.stage_index + 1}/{len(r.config.stages)} ({r.percent:g} %)"
        + (f" in ring {r.ring.value}" if r.ring else "")
    )


@click.group()
def rollout() -> None:
    """Staged rollouts of a model version with an automatic statistical halt."""


@rollout.command("start")
@_DB
@_REPO
@click.option("--to", "to_version", required=True, type=click.IntRange(1), help="Version.")
@click.option("--stages", default="1,5,25,100", show_default=True, help="Percentages.")
@click.option("--org", "org_id", default=None, help="Org pseudonym; fleet-wide when omitted.")
@click.option("--hold", default="24h", show_default=True, help="Minimum time per stage.")
@click.option(
    "--max-fp-increase",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.0, 10.0),
    help="Allowed relative increase of alerts per endpoint-day (0.25 = +25 %).",
)
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.001, 0.2))
@click.option("--min-endpoint-days", default=30.0, show_default=True, type=float)
@click.option("--tick", default="1h", show_default=True, help="Time between decisions.")
@click.option("--rollback/--no-rollback", default=True, show_default=True)
@click.option(
    "--rings",
    is_flag=True,
    help=f"Run the stages ring by ring: {', '.join(r.value for r in RING_ORDER)}.",
)
@click.option(
    "--pause-after",
    "inconclusive_looks",
    default=0,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Pause after this many inconclusive advance looks in a stage (0: keep waiting).",
)
def start_cmd(
    db: str, repo_dir: Path, to_version: int, stages: str, org_id: str | None, hold: str,
    max_fp_increase: float, alpha: float, min_endpoint_days: float, tick: str, rollback: bool,
    rings: bool, inconclusive_looks: int,
) -> None:  # fmt: skip
    """Start rolling VERSION out in stages, published in signed policy.

    Example: fleetward rollout start --db b.db --repo repo --to 2 --stages 1,5,25,100 --hold 24h
    """
    try:
        config = RolloutConfig(
            stages=tuple(float(s) for s in stages.split(",")),
            hold=parse_duration(hold),
            max_fp_increase=max_fp_increase,
            alpha=alpha,
            min_endpoint_days=min_endpoint_days,
            min_org_endpoint_days=max(1.0, min_endpoint_days / 3),
            rollback=rollback,
            tick=parse_duration(tick),
            inconclusive_looks=inconclusive_looks,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    publish = repository_publisher(repo_dir)
    r = _call(
        db,
        lambda s: svc.start_rollout(
            s, publish, to_version, now=utc_now(), config=config, org_id=org_id, rings=rings
        ),
    )
    _show(r)


@rollout.command("status")
@_DB
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(db: str, as_json: bool) -> None:
    """Show stage, cohort sizes, the last statistics and the next decision time.

    Example: fleetward rollout status --db b.db --json
    """
    st: dict[str, Any] = _call(db, lambda s: svc.rollout_status(s, now=utc_now()))
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    if st.get("rollout") is None and "state" not in st:
        click.echo("no rollout")
        return
    click.echo(
        f"rollout {st['rollout_id']}: {st['state']}, v{st['from_version']} -> "
        f"v{st['to_version']}, {st['percent']:g} % (stage {st['stage_index'] + 1}/"
        f"{len(st['stages'])}), canary {st['cohort']['canary_endpoints']} / control "
        f"{st['cohort']['control_endpoints']} endpoints"
        + (f", ring {st['ring']}" if st.get("ring") else "")
    )
    last = st["last_decision"]
    if last:
        click.echo(f"last: {last['action']} at {last['at']}: {last['reason']}")
    if st["next_decision_at"]:
        click.echo(f"next decision at {st['next_decision_at']}")


@rollout.command("pause")
@_DB
def pause_cmd(db: str) -> None:
    """Freeze the running rollout at its stage.

    Example: fleetward rollout pause --db b.db
    """
    _show(_call(db, lambda s: svc.pause_rollout(s, now=utc_now())))


@rollout.command("resume")
@_DB
def resume_cmd(db: str) -> None:
    """Resume a paused rollout.

    Example: fleetward rollout resume --db b.db
    """
    _show(_call(db, lambda s: svc.resume_rollout(s, now=utc_now())))


@rollout.command("abort")
@_DB
@_REPO
def abort_cmd(db: str, repo_dir: Path) -> None:
    """Stop the rollout and put every endpoint back on the previous version.

    Example: fleetward rollout abort --db b.db --repo repo
    """
    publish = repository_publisher(repo_dir)
    _show(_call(db, lambda s: svc.abort_rollout(s, publish, now=utc_now())))


@rollout.command("tick")
@_DB
@_REPO
def tick_cmd(db: str, repo_dir: Path) -> None:
    """Take one decision now (a scheduler or `backend serve` calls this every tick).

    Example: fleetward rollout tick --db b.db --repo repo
    """
    publish = repository_publisher(repo_dir)
    d = _call(db, lambda s: svc.tick_rollout(s, publish, now=utc_now()))
    click.echo("no running rollout" if d is None else f"{d.action.value}: {d.reason}")
