"""`fleetward-agent`: the endpoint's command line (agent dependencies only, no rich, no extras).

Each command parses arguments, makes one library call and renders the result; domain errors
become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
import time

import click

from agent.decision import DecisionContext, Mode
from agent.errors import AgentError
from agent.model import load_bundle
from agent.policy import active_sha256s, read_list_file
from agent.scan import FileStatus, Scanner, ScanSummary
from agent._clock import utc_now

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleetward")
def main() -> None:
    """The fleetward endpoint agent: scan files with a signed detection model."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model bundle directory (model.onnx + manifest.json).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
@click.option("--allowlist", type=click.Path(exists=True, dir_okay=False),
              help="File of sha256 entries to allow (one per line, or JSON entries).")
@click.option("--blocklist", type=click.Path(exists=True, dir_okay=False),
              help="File of sha256 entries to block, same format as --allowlist.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.ENFORCE.value,
              show_default=True, help="enforce, detect_only (alert, never block) or off.")
@click.option("-v", "--verbose", is_flag=True, help="Print every file, not only findings and errors.")
def scan(
    paths: tuple[str, ...],
    bundle_dir: str,
    as_json: bool,
    allowlist: str | None,
    blocklist: str | None,
    mode: str,
    verbose: bool,
) -> None:
    """Scan files and directories recursively with a model bundle.

    Exit codes, as clamscan: 0 nothing found, 1 something blocked or detected, 2 errors only.

    Example: fleetward-agent scan /usr/bin ~/Downloads --bundle bundles/v2 --json
    """
    try:
        model = load_bundle(bundle_dir)
        now = utc_now()
        ctx = DecisionContext(
            block_threshold=model.manifest.thresholds.block,
            detect_threshold=model.manifest.thresholds.detect,
            mode=Mode(mode),
            allowlist=active_sha256s(read_list_file(allowlist), now) if allowlist else frozenset(),
            blocklist=active_sha256s(read_list_file(blocklist), now) if blocklist else frozenset(),
        )
    except AgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    summary = ScanSummary()
    started = time.perf_counter()
    out = click.get_text_stream("stdout", errors="backslashreplace")
    for result in Scanner(model, ctx).scan(paths):
        summary.add(result)
        if as_json:
            out.write(json.dumps(result.to_dict()) + "\n")
            continue
        shown = str(result.to_dict()["path"])
        if result.status is FileStatus.SCANNED and result.decision is not None:
            d = result.decision
            if verbose or d.verdict.is_alert or d.verdict.value == "error":
                out.write(f"{shown}: {d.verdict.value.upper()} ({d.reason.value}, score {d.score if d.score is not None else 'n/a'})\n")
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
    sys.exit(summary.exit_code)


if __name__ == "__main__":
    main()
