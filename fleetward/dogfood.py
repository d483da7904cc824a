"""`fleetward dogfood`: the false-positive rate of model versions on a real machine's benign files.

No real malware is brought here (DESIGN.md, "Data"), so the files on this machine (`/usr/lib`,
`/usr/bin`, the Python installation) are the one real corpus there is, and all of it is benign:
every alert is a false positive. `run_dogfood` reads each file once with the agent's own reader
and feature code, scores it with every bundle, decides with the agent's own decision code, and
reports per version, per folder (each path given) and per file format (the `format_*` facts
of `agent.features`) the block rate, the alert rate and the worst offenders.

The same run then acts as one endpoint of a "dogfood" org: it enrolls against an in-process
backend (the real Starlette app over a SQLite file, reached through an httpx client), sends the
decisions of the first version as telemetry (the second version as its shadow) through the
agent's spool and sender, and asks `backend.analysis.transition.predict_transition` for that org's
predicted new false-positive alerts of moving from the first version to the second. The scan's
own count of files that alert under the new version and not the old sits beside it; they use the
same features and decision code, so they agree unless the prediction is wrong.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from agent.breaker import BreakerState
from agent.decision import Verdict
from agent.engine import evaluate
from agent.errors import AgentError
from agent.features import FEATURE_NAMES, extract_features
from agent.model import LoadedModel, load_bundle
from agent.protect.scan import iter_files, read_sample
from backend.report import html_page, html_table

__all__ = [
    "DogfoodResult",
    "FileFinding",
    "FormatFigures",
    "VersionFigures",
    "dogfood",
    "file_format",
    "run_dogfood",
    "write_dogfood_report",
]

# the format facts of the feature schema: one-hot `format_<name>` columns
_FORMATS = [
    (n.removeprefix("format_"), i) for i, n in enumerate(FEATURE_NAMES) if n.startswith("format_")
]
_MAX_FILE_BYTES = 256 * 1024 * 1024


def file_format(vector: npt.NDArray[np.float32]) -> str:
    """The file format the feature vector's format facts name (`other` when none is set)."""
    for name, col in _FORMATS:
        if vector[col] > 0.5:
            return "macho" if name == "macho_fat" else name
    return "other"


@dataclass(frozen=True, slots=True)
class FileFinding:
    """One scanned file: where, what format, and each version's score and verdict."""

    path: str
    sha256: str
    size: int
    file_format: str
    scores: dict[int, float | None]
    verdicts: dict[int, str]
    folder: str = ""  # the path given on the command line that the file was found under

    def is_alert(self, version: int) -> bool:
        """Would this version alert (block, detect) on the file?"""
        return Verdict(self.verdicts[version]).is_alert


@dataclass(frozen=True, slots=True)
class FormatFigures:
    """Files of one format and how many of them a version alerts on."""

    files: int
    alerts: int
    blocks: int = 0

    @property
    def fp_rate(self) -> float:
        """Alerts over files (every file is benign)."""
        return self.alerts / self.files if self.files else 0.0

    @property
    def block_rate(self) -> float:
        """Blocks over files."""
        return self.blocks / self.files if self.files else 0.0


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """One model version on the benign corpus."""

    version: int
    files: int
    alerts: int
    by_format: dict[str, FormatFigures]
    by_folder: dict[str, FormatFigures] = field(default_factory=dict)
    blocks: int = 0

    @property
    def fp_rate(self) -> float:
        """Alerts over files."""
        return self.alerts / self.files if self.files else 0.0


@dataclass(frozen=True, slots=True)
class DogfoodResult:
    """Per-version FP figures, the worst offenders, and the backend's prediction beside them."""

    paths: tuple[str, ...]
    files_seen: int
    files_scanned: int
    skipped: int
    errors: int
    versions: tuple[VersionFigures, ...]
    worst: tuple[FileFinding, ...]
    scan_new_alerts: int
    scan_gone_alerts: int
    telemetry: dict[str, Any] = field(default_factory=dict)
    prediction: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON twin of the HTML report."""
        return {
            "paths": list(self.paths),
            "files_seen": self.files_seen,
            "files_scanned": self.files_scanned,
            "skipped": self.skipped,
            "errors": self.errors,
            "versions": [
                {
                    "version": v.version,
                    "files": v.files,
                    "alerts": v.alerts,
                    "blocks": v.blocks,
                    "fp_rate": v.fp_rate,
                    "by_format": {
                        k: {
                            "files": f.files,
                            "alerts": f.alerts,
                            "blocks": f.blocks,
                            "fp_rate": f.fp_rate,
                        }
                        for k, f in sorted(v.by_format.items())
                    },
                    "by_folder": {
                        k: {
                            "files": f.files,
                            "alerts": f.alerts,
                            "blocks": f.blocks,
                            "fp_rate": f.fp_rate,
                            "block_rate": f.block_rate,
                        }
                        for k, f in v.by_folder.items()
                    },
                }
                for v in self.versions
            ],
            "worst_offenders": [asdict(w) for w in self.worst],
            "scan_new_alerts": self.scan_new_alerts,
            "scan_gone_alerts": self.scan_gone_alerts,
            "telemetry": self.telemetry,
            "prediction": self.prediction,
        }


def _select(paths: Sequence[str], max_files: int | None) -> tuple[list[tuple[str, str]], int, int]:
    """(file, the given path it is under) for every regular file, thinned evenly to `max_files`."""
    files, skipped, errors = [], 0, 0
    for root in paths:
        for path, early in iter_files([root]):
            if early is None:
                files.append((path, root))
            elif early.status.value == "error":
                errors += 1
            else:
                skipped += 1
    if max_files is not None and len(files) > max_files:
        step = len(files) / max_files  # an even spread over the whole tree, not its first dirs
        files = [files[int(i * step)] for i in range(max_files)]
    return files, skipped, errors


def _score_all(model: LoadedModel, vectors: npt.NDArray[np.float32]) -> list[float | None]:
    out: list[float | None] = []
    for start in range(0, len(vectors), 1024):
        chunk = vectors[start : start + 1024]
        try:
            out.extend(float(s) for s in model.scorer.score_batch(chunk))
        except AgentError:  # fail-open, as the agent does: the file is allowed
            out.extend(None for _ in range(len(chunk)))
    return out


def _figures(findings: Sequence[FileFinding], version: int) -> VersionFigures:
    by: dict[str, list[int]] = {}
    folders: dict[str, list[int]] = {}
    for f in findings:
        alert = int(f.is_alert(version))
        block = int(f.verdicts[version] == Verdict.BLOCK.value)
        for cell in (
            by.setdefault(f.file_format, [0, 0, 0]),
            folders.setdefault(f.folder, [0, 0, 0]),
        ):
            cell[0] += 1
            cell[1] += alert
            cell[2] += block
    return VersionFigures(
        version,
        len(findings),
        sum(c[1] for c in by.values()),
        {k: FormatFigures(c[0], c[1], c[2]) for k, c in by.items()},
        {k: FormatFigures(c[0], c[1], c[2]) for k, c in folders.items()},
        sum(c[2] for c in by.values()),
    )


def run_dogfood(
    paths: Sequence[str],
    bundles: Sequence[Path],
    *,
    now: dt.datetime,
    workdir: Path,
    max_files: int | None = 20_000,
    worst: int = 25,
    with_backend: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DogfoodResult:
    """Scan `paths` with every bundle (all files benign) and, optionally, report to a backend.

    The first bundle is the "old" version and the last the "new" one for the transition.

    Raises:
        AgentError: a bundle does not load or fails its self-test.
        ValueError: fewer than one bundle, or no readable file under `paths`.
    """
    if not bundles:
        raise ValueError("give at least one bundle")
    models = [load_bundle(b) for b in bundles]
    files, skipped, errors = _select(paths, max_files)
    kept: list[tuple[str, str, int, str]] = []
    vectors: list[npt.NDArray[np.float32]] = []
    for i, (path, root) in enumerate(files):
        try:
            sha, data, size = read_sample(path, max_file_bytes=_MAX_FILE_BYTES)
        except OSError:
            errors += 1
            continue
        kept.append((path, sha, size, root))
        vectors.append(extract_features(data, total_size=size))
        if progress is not None and i % 200 == 0:
            progress(i, len(files))
    if not kept:
        raise ValueError("no readable regular file under the given paths")
    matrix = np.stack(vectors).astype(np.float32)
    scores = {m.version: _score_all(m, matrix) for m in models}
    findings = []
    for row, (path, sha, size, root) in enumerate(kept):
        verdicts = {}
        for m in models:
            ev = evaluate(
                sha,
                scores[m.version][row],
                policy=None,
                thresholds=m.manifest.thresholds,
                breaker=BreakerState(),
                now=now,
            )
            verdicts[m.version] = ev.decision.verdict.value
        findings.append(
            FileFinding(
                path,
                sha,
                size,
                file_format(matrix[row]),
                {m.version: scores[m.version][row] for m in models},
                verdicts,
                root,
            )
        )
    old, new = models[0].version, models[-1].version
    ranked = sorted(
        findings, key=lambda f: -max((s for s in f.scores.values() if s is not None), default=0.0)
    )
    result = DogfoodResult(
        paths=tuple(paths),
        files_seen=len(files),
        files_scanned=len(findings),
        skipped=skipped,
        errors=errors,
        versions=tuple(_figures(findings, m.version) for m in models),
        worst=tuple(ranked[:worst]),
        scan_new_alerts=sum(1 for f in findings if f.is_alert(new) and not f.is_alert(old)),
        scan_gone_alerts=sum(1 for f in findings if f.is_alert(old) and not f.is_alert(new)),
    )
    if not with_backend:
        return result
    from fleetward._dogfood_backend import report_and_predict

    telemetry, prediction = report_and_predict(
        findings, matrix, models, bundles, now=now, workdir=workdir
    )
    return DogfoodResult(
        **{**_fields(result), "telemetry": telemetry, "prediction": prediction},
    )


def _fields(result: DogfoodResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in DogfoodResult.__dataclass_fields__}


def write_dogfood_report(result: DogfoodResult, out: Path) -> tuple[Path, Path]:
    """Write `dogfood.html` and `dogfood.json` under `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    json_path = out / "dogfood.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    versions = [v.version for v in result.versions]
    formats = sorted({k for v in result.versions for k in v.by_format})
    summary = html_table(
        ["model", "files", "blocks", "alerts (all false positives)", "FP rate"],
        [
            (f"v{v.version}", v.files, v.blocks, v.alerts, f"{v.fp_rate:.4%}")
            for v in result.versions
        ],
    )
    per_folder = html_table(
        ["folder", "files"] + [f"v{v} blocks, alerts (rates)" for v in versions],
        [
            [folder, result.versions[0].by_folder.get(folder, _EMPTY).files]
            + [_cell(v.by_folder.get(folder, _EMPTY)) for v in result.versions]
            for folder in result.paths
        ],
    )
    per_format = html_table(
        ["format", "files"] + [f"v{v} blocks, alerts (rates)" for v in versions],
        [
            [fmt, result.versions[0].by_format.get(fmt, _EMPTY).files]
            + [_cell(v.by_format.get(fmt, _EMPTY)) for v in result.versions]
            for fmt in formats
        ],
    )
    worst = html_table(
        ["path", "format", "bytes"] + [f"v{v} score, verdict" for v in versions],
        [
            [w.path, w.file_format, w.size]
            + [
                f"{w.scores[v]:.3f} {w.verdicts[v]}" if w.scores[v] is not None else "error"
                for v in versions
            ]
            for w in result.worst
        ],
    )
    pred = result.prediction
    if pred is None:
        beside = "<p>No backend prediction in this run.</p>"
    else:
        beside = html_table(
            [f"v{versions[0]} -> v{versions[-1]} for org {pred['org_id']}", "value"],
            [
                ("new alerts per day, predicted by the backend", pred["predicted_new_fp_per_day"]),
                ("files newly alerting, found by the scan", result.scan_new_alerts),
                ("negative flips (distinct samples), predicted", pred["negative_flips"]),
                (
                    "events sent / counted in aggregates",
                    "{} / {}".format(
                        result.telemetry.get("events_sent"), result.telemetry.get("events_counted")
                    ),
                ),
            ],
        )
    intro = (
        f"<p>{result.files_scanned} files scanned under {html.escape(', '.join(result.paths))}"
        f" ({result.skipped} skipped, {result.errors} unreadable). None of them is malware, so"
        " every alert is a false positive.</p>"
    )
    page = html_page(
        "Dogfood: model versions on this machine's benign files",
        [
            ("False-positive rate", summary),
            ("Per folder", per_folder),
            ("Per file format", per_format),
            (f"Transition v{versions[0]} -> v{versions[-1]}: prediction beside the scan", beside),
            ("Worst offenders (highest score)", worst),
        ],
        intro=intro,
        extra_css="td,th{text-align:left}",
    )
    html_path = out / "dogfood.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, json_path


_EMPTY = FormatFigures(0, 0)


def _cell(f: FormatFigures) -> str:
    return f"{f.blocks} ({f.block_rate:.3%}), {f.alerts} ({f.fp_rate:.3%})"


@click.command("dogfood")
@click.argument("paths", nargs=-1, required=True)
@click.option("--bundles", default="v1,v2", show_default=True, help="Versions, old first.")
@click.option(
    "--data",
    default="fleetward-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where `fleetward demo` put the bundles (DATA/bundles/vN).",
)
@click.option("--max-files", default=20_000, show_default=True, help="Evenly spread cap.")
@click.option("--no-backend", is_flag=True, help="Skip the enrolled agent and the prediction.")
@click.option(
    "--out",
    default="dogfood-report",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
def dogfood(
    paths: tuple[str, ...], bundles: str, data: Path, max_files: int, no_backend: bool, out: Path
) -> None:
    """Measure the FP rate of model versions on this machine's (benign) files.

    Example: fleetward dogfood /usr/lib /usr/bin --bundles v1,v2 --data fleetward-data --out dog
    """
    from fleetward._clock import utc_now

    try:
        dirs = [data / "bundles" / v.strip() for v in bundles.split(",") if v.strip()]
        for d in dirs:
            if not (d / "manifest.json").exists():
                raise ValueError(f"no bundle at {d} (run `fleetward demo --out {data}` first)")
        result = run_dogfood(
            list(paths),
            dirs,
            now=utc_now(),
            workdir=out,
            max_files=max_files,
            with_backend=not no_backend,
        )
    except (ValueError, AgentError) as exc:
        raise click.ClickException(str(exc)) from None
    html_path, _ = write_dogfood_report(result, out)
    for v in result.versions:
        click.echo(
            f"v{v.version}: {v.blocks}/{v.files} files block, {v.alerts}/{v.files} alert"
            f" (FP rate {v.fp_rate:.4%})"
        )
        for folder, f in v.by_folder.items():
            click.echo(
                f"  {folder}: {f.blocks}/{f.files} block ({f.block_rate:.3%}),"
                f" {f.alerts} alert ({f.fp_rate:.3%})"
            )
    if result.prediction is not None:
        click.echo(
            f"predicted new FP alerts/day {result.prediction['predicted_new_fp_per_day']:.0f}; "
            f"the scan found {result.scan_new_alerts} files newly alerting"
        )
    click.echo(f"report: {html_path}")
