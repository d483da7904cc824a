"""`fleetward-agent`: the endpoint's command line (agent dependencies only, no rich, no extras).

Each command parses arguments, makes one library call and renders the result; domain errors
become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TextIO

import click

from agent._clock import utc_now
from agent.cli_errors import OneLineErrors
from agent.decision import DENY_VERDICTS, DecisionContext, Mode
from agent.errors import AgentError, StateError, TrustAnchorError
from agent.model import load_bundle
from agent.protect.quarantine import Quarantine, QuarantineRecord
from agent.protect.scan import FileStatus, Scanner, ScanResult, ScanSummary

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleetward")
def main() -> None:
    """The fleetward endpoint agent: scan files with a signed detection model."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--bundle",
    "bundle_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Model bundle directory (model.onnx + manifest.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
@click.option(
    "--allowlist",
    type=click.Path(exists=True, dir_okay=False),
    help="File of sha256 entries to allow (one per line, or JSON entries).",
)
@click.option(
    "--blocklist",
    type=click.Path(exists=True, dir_okay=False),
    help="File of sha256 entries to block, same format as --allowlist.",
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in Mode]),
    default=Mode.ENFORCE.value,
    show_default=True,
    help="enforce, detect_only (alert, never block) or off.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Print every file, not only findings and errors."
)
@click.option(
    "--quarantine",
    "quarantine_blocked",
    is_flag=True,
    help="Move blocked and blocklisted files into the state directory's quarantine.",
)
@click.option(
    "--state-dir",
    default="/var/lib/fleetward",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's state directory (holds the quarantine).",
)
def scan(
    paths: tuple[str, ...],
    bundle_dir: str,
    as_json: bool,
    allowlist: str | None,
    blocklist: str | None,
    mode: str,
    verbose: bool,
    quarantine_blocked: bool,
    state_dir: Path,
) -> None:
    """Scan files and directories recursively with a model bundle.

    Exit codes, as clamscan: 0 nothing found, 1 something blocked or detected, 2 errors only.

    Example: fleetward-agent scan /usr/bin ~/Downloads --bundle bundles/v2 --json

    Example: fleetward-agent scan ~/Downloads --bundle bundles/v2 --quarantine
    """
    try:
        model = load_bundle(bundle_dir)
        now = utc_now()
        ctx = DecisionContext(
            block_threshold=model.manifest.thresholds.block,
            detect_threshold=model.manifest.thresholds.detect,
            mode=Mode(mode),
            allowlist=_list_file(allowlist, now),
            blocklist=_list_file(blocklist, now),
        )
    except AgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    summary = ScanSummary()
    started = time.perf_counter()
    out = _stdout()
    vault = Quarantine(state_dir / "quarantine") if quarantine_blocked else None
    actions: list[tuple[QuarantineRecord, str]] = []
    for result in Scanner(model, ctx).scan(paths):
        summary.add(result)
        if vault is not None and result.decision and result.decision.verdict in DENY_VERDICTS:
            try:
                rec = vault.quarantine(
                    result.path,
                    verdict=result.decision.verdict.value,
                    reason=result.decision.reason.value,
                    model_version=result.model_version,
                    now=now,
                )
                click.echo(f"quarantined {rec.original_path} as {rec.id}", err=True)
                actions.append((rec, "quarantined"))
            except AgentError as exc:
                click.echo(f"error: {exc}", err=True)
        if as_json:
            out.write(json.dumps(result.to_dict()) + "\n")
            continue
        shown = str(result.to_dict()["path"])
        if result.status is FileStatus.SCANNED and result.decision is not None:
            d = result.decision
            if verbose or d.verdict.is_alert or d.verdict.value == "error":
                score = d.score if d.score is not None else "n/a"
                out.write(f"{shown}: {d.verdict.value.upper()} ({d.reason.value}, score {score})\n")
        elif verbose or result.status is FileStatus.ERROR:
            out.write(f"{shown}: {result.status.value.upper()} ({result.note})\n")
    out.flush()
    elapsed = time.perf_counter() - started
    v = summary.verdicts
    click.echo(
        f"scanned {summary.scanned} files ({summary.bytes_scanned / 1e6:.1f} MB) in {elapsed:.1f}s "
        f"with model v{model.version}: {v.get('block', 0)} blocked, {v.get('detect', 0)} detected, "
        f"{v.get('blocklisted', 0)} blocklisted, {v.get('allowlisted', 0)} allowlisted, "
        f"{summary.skipped} skipped, {summary.errors} errors",
        err=as_json,
    )
    _report_actions(state_dir, actions)
    sys.exit(summary.exit_code)


@main.command()
@click.option(
    "--repo-url", required=True, help="Update repository: URL/metadata/ and URL/targets/."
)
@click.option("--org", default=None, help="Organization whose signed policy applies.")
@click.option(
    "--backend",
    "backend_url",
    default=None,
    help="Backend URL: enroll once, then send telemetry (org from enrollment).",
)
@click.option("--enroll-token", default=None, help="The org's enroll token (first --backend run).")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's state directory (installed bundles, policy, TUF cache).",
)
@click.option(
    "--root",
    "root_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted root.json shipped with the agent (needed on first run).",
)
@click.option(
    "--trust-on-first-use",
    is_flag=True,
    help="Without --root, trust the repository's 1.root.json on first run (weaker).",
)
@click.option(
    "--interval",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between check-ins (+-10% jitter).",
)
@click.option(
    "--watch",
    "watch",
    multiple=True,
    type=click.Path(exists=True, path_type=str),
    help="Folder to scan each cycle (new or changed files, or all after a change).",
)
@click.option(
    "--scan-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between polls of the --watch folders (never delayed by a check-in).",
)
@click.option(
    "--check-in-deadline",
    type=click.FloatRange(min=0.1),
    help="Seconds a check-in's downloads may take in all before it is abandoned [300].",
)
@click.option(
    "--min-transfer-rate",
    type=click.FloatRange(min=0.0),
    help="Bytes/s each download must average after its first 5 s, 0 for none [4096].",
)
@click.option(
    "--protect",
    multiple=True,
    type=click.Path(exists=True, path_type=str),
    help="Folder or mount whose execs are decided before they run (fanotify; Linux, root).",
)
@click.option(
    "--protect-open", is_flag=True, help="With --protect, decide every open, not only execs."
)
@click.option(
    "--deadline-ms",
    default=250.0,
    show_default=True,
    type=click.FloatRange(min=1, max=60000),
    help="An exec or open not decided within this is allowed (and reported).",
)
@click.option("--once", is_flag=True, help="One check-in and one scan, then exit (tests, cron).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per decision.")
@click.option("--trace-update", is_flag=True, hidden=True, help="Print each update phase.")
def run(
    repo_url: str,
    org: str | None,
    backend_url: str | None,
    enroll_token: str | None,
    state_dir: Path,
    root_file: Path | None,
    trust_on_first_use: bool,
    interval: float,
    watch: tuple[str, ...],
    scan_interval: float,
    check_in_deadline: float | None,
    min_transfer_rate: float | None,
    protect: tuple[str, ...],
    protect_open: bool,
    deadline_ms: float,
    once: bool,
    as_json: bool,
    trace_update: bool,
) -> None:
    """Check in for signed updates and policy, install them atomically, and scan.

    Runs until SIGTERM or SIGINT; check-ins run beside scanning, so a slow or stalled
    repository never delays a decision. Offline, it keeps its last verified model and policy.

    Example: fleetward-agent run --repo-url http://updates.local:8080 --org acme
    --state-dir /var/lib/fleetward --root /etc/fleetward/root.json --watch /srv/incoming

    With --protect (Linux, root) an exec in the folder waits for the verdict: block and
    blocklisted are refused (EPERM) and quarantined. --watch folders are watched on write.

    Example: fleetward-agent run --repo-url http://updates.local:8080 --org acme
    --state-dir /var/lib/fleetward --protect /home --protect /tmp --deadline-ms 250
    """
    _skip_httpx_cli()
    from agent import daemon
    from agent.protect.realtime import RealtimeOptions

    options = daemon.RunOptions(
        repo_url=repo_url,
        state_dir=state_dir,
        org=org,
        backend_url=backend_url,
        enroll_token=enroll_token,
        root_file=root_file,
        trust_on_first_use=trust_on_first_use,
        interval_s=interval,
        daemon=daemon.DaemonConfig(watch=watch, scan_interval_s=scan_interval, once=once),
        realtime=RealtimeOptions(
            protect=protect, protect_open=protect_open, deadline_ms=deadline_ms, watch=watch
        ),
        update=daemon.update_config(
            deadline_s=check_in_deadline, min_bytes_per_s=min_transfer_rate
        ),
        trace_update=trace_update,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    out = _stdout()

    def on_result(res: ScanResult) -> None:
        if as_json:
            out.write(json.dumps(res.to_dict()) + "\n")
        elif res.decision is not None and res.decision.verdict.is_alert:
            out.write(
                f"{res.to_dict()['path']}: {res.decision.verdict.value.upper()} "
                f"({res.decision.reason.value})\n"
            )
        out.flush()

    try:
        daemon.run(
            options,
            stop=stop,
            clock=utc_now,
            on_line=lambda line: click.echo(line, err=True),
            on_result=on_result,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except TrustAnchorError as exc:  # the agent could never update: refuse to run at all
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _skip_httpx_cli() -> None:
    """Keep httpx's own command line (rich and pygments: 70 modules, ~4 MB) out of the agent.

    `import httpx` also imports `httpx._main` whenever its CLI extras are installed (they are,
    wherever `fleetward[all]` is). A None entry in `sys.modules` makes that import fail as it
    does without the extras, and httpx then defines a stub `main`; the agent never calls it.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _list_file(path: str | None, now: dt.datetime) -> frozenset[str]:
    """The active sha256 entries of an allowlist or blocklist file (none without a file).

    `agent.policy` (and pydantic, ~13 MB) is imported only when a list is given: `scan`'s
    peak memory is a documented figure (benchmarks/agent_bench.py).
    """
    if not path:
        return frozenset()
    from agent.policy import active_sha256s, read_list_file

    return active_sha256s(read_list_file(path), now)


@contextlib.contextmanager
def _user_error() -> Iterator[None]:
    """An `AgentError` inside ends the command with its one-line message and a non-zero exit."""
    try:
        yield
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc


def _stdout() -> TextIO:
    """Stdout that escapes what it cannot encode (file names are not always UTF-8)."""
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="backslashreplace")
    return stream


@main.command()
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's state directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(state_dir: Path, as_json: bool) -> None:
    """Show the active and last-known-good model, the policy and mode, and update health.

    Example: fleetward-agent status --state-dir /var/lib/fleetward --json
    """
    from agent.daemon import read_status

    try:
        info = read_status(state_dir, utc_now())
    except StateError as exc:
        raise click.ClickException(str(exc)) from exc
    from agent.protect.realtime import protection_note

    info["protection"] = protection_note(info.get("effective_mode"))
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


@main.group()
def quarantine() -> None:
    """List, restore or delete quarantined files.

    Example: fleetward-agent quarantine list --state-dir /var/lib/fleetward
    """


_STATE_DIR = click.option(
    "--state-dir",
    default="/var/lib/fleetward",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's state directory (holds the quarantine).",
)


@quarantine.command("list")
@_STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per record.")
def quarantine_list(state_dir: Path, as_json: bool) -> None:
    """List quarantined files: id, when, verdict, original path.

    Example: fleetward-agent quarantine list --state-dir /var/lib/fleetward --json
    """
    with _user_error():
        records = Quarantine(state_dir / "quarantine").list()
    if not records and not as_json:  # stdout stays empty for scripts; a person is told
        click.echo("no quarantined files", err=True)
    out = _stdout()
    for r in records:
        if as_json:
            out.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
        else:
            out.write(f"{r.id}  {r.quarantined_at}  {r.verdict:<11}  {r.original_path}\n")
    out.flush()


@quarantine.command("restore")
@click.argument("record_id", metavar="ID")
@_STATE_DIR
def quarantine_restore(record_id: str, state_dir: Path) -> None:
    """Put a quarantined file back: same path, bytes, mode, owner and times.

    Example: fleetward-agent quarantine restore 3f2a9c0d1e2b4a5f --state-dir /var/lib/fleetward
    """
    with _user_error():
        record = Quarantine(state_dir / "quarantine").restore(record_id)
    click.echo(f"restored {record.original_path}")
    _report_actions(state_dir, [(record, "restored")])


@quarantine.command("delete")
@click.argument("record_id", metavar="ID")
@_STATE_DIR
def quarantine_delete(record_id: str, state_dir: Path) -> None:
    """Delete a quarantined file for good.

    Example: fleetward-agent quarantine delete 3f2a9c0d1e2b4a5f --state-dir /var/lib/fleetward
    """
    with _user_error():
        record = Quarantine(state_dir / "quarantine").delete(record_id)
    click.echo(f"deleted {record.id} ({record.original_path})")
    _report_actions(state_dir, [(record, "deleted")])


def _report_actions(state_dir: Path, actions: list[tuple[QuarantineRecord, str]]) -> None:
    """Telemetry carries the action, when this state directory has enrolled with a backend.

    The batch goes through its own spool (`spool-actions`: the running agent's spool is not
    shared between processes) and one short attempt; what is not sent waits for the next
    action. A failure is one line on stderr, never an error: the action itself is done.
    """
    if not actions:
        return
    from agent.telemetry import (
        Action,
        ActionReport,
        SenderConfig,
        Spool,
        TelemetryPipe,
        TelemetrySender,
        load_credentials,
    )

    try:
        creds = load_credentials(state_dir)
    except AgentError as exc:
        click.echo(f"telemetry: {exc}", err=True)
        return
    if creds is None:
        return
    import httpx

    now = utc_now()
    config = SenderConfig(attempts=1, timeout_s=5.0)
    with httpx.Client(timeout=config.timeout_s) as client:
        spool = Spool(state_dir / "spool-actions")
        pipe = TelemetryPipe(
            TelemetrySender(client, creds.backend_url, creds.token, spool, config), creds
        )
        for record, action in actions:
            pipe.record(ActionReport.of_record(record, Action(action), now))
        report = pipe.flush(now)
    if report.error:
        click.echo(f"telemetry: {report.pending} pending ({report.error})", err=True)


@main.group()
def service() -> None:
    """Install or remove the agent as a systemd service.

    Example: sudo fleetward-agent service install -- --repo-url http://updates.local:8080
    --org acme --protect /home
    """


_UNIT_DIR = click.option(
    "--unit-dir",
    default="/etc/systemd/system",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the unit file goes.",
)


@service.command("install", context_settings={"ignore_unknown_options": True})
@_UNIT_DIR
@click.option("--no-start", is_flag=True, help="Only write the unit (no systemctl).")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def service_install(unit_dir: Path, no_start: bool, run_args: tuple[str, ...]) -> None:
    """Write fleetward-agent.service running `run RUN_ARGS`, then enable and start it.

    The unit restarts on failure, keeps its state in /var/lib/fleetward and holds only the
    capabilities the agent uses (fanotify, reading and quarantining any file).

    Example: sudo fleetward-agent service install -- --repo-url http://updates.local:8080
    --org acme --root /etc/fleetward/root.json --protect /home --protect /tmp
    """
    from agent.service import absolute_paths, install_service

    with click.Context(run) as ctx:  # refuse run options that `run` itself would refuse
        try:
            run.parse_args(ctx, [*run_args, "--state-dir", "/var/lib/fleetward"])
        except click.UsageError as exc:
            raise click.UsageError(f"run options: {exc.format_message()}") from exc
    path_options = {
        name
        for p in run.params
        if isinstance(p, click.Option) and isinstance(p.type, click.Path)
        for name in p.opts
    }
    args = absolute_paths(run_args, path_options, cwd=Path.cwd())
    with _user_error():
        path = install_service(args, unit_dir=unit_dir, start=not no_start)
    click.echo(f"wrote {path}" + ("" if no_start else "; enabled and started"))


@service.command("uninstall")
@_UNIT_DIR
@click.option("--no-stop", is_flag=True, help="Only remove the unit (no systemctl).")
def service_uninstall(unit_dir: Path, no_stop: bool) -> None:
    """Stop, disable and remove the service (the state directory stays).

    Example: sudo fleetward-agent service uninstall
    """
    from agent.service import uninstall_service

    with _user_error():
        path = uninstall_service(unit_dir=unit_dir, stop=not no_stop)
    click.echo(f"removed {path}" if path else "no fleetward-agent service installed")


if __name__ == "__main__":
    main()
