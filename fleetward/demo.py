"""`fleetward demo`: the README's first command's main job.

Builds (or reuses) the corpus and the v1/v2 bundles on the embedded defaults, then scans the
held-out samples with each bundle through the agent's own scanner and prints what each
version blocks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from agent.decision import DecisionContext
from agent.model import load_bundle
from agent.scan import Scanner
from fleetward._clock import utc_now
from model_store.cli import bundle_path, progress_bar, train_table
from model_store.corpus import Corpus, load_corpus, make_corpus
from model_store.errors import ModelStoreError
from model_store.train import TrainResult, recipe_for_version, split_of, train_model

__all__ = ["DemoResult", "demo", "run_demo"]

console = Console()


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Per-version scan figures on the held-out samples."""

    version: int
    scanned: int
    blocked_malicious: int
    malicious: int
    blocked_benign: int
    benign: int


def _ensure_corpus(root: Path, size: int, seed: int) -> Corpus:
    path = root / "corpus"
    if (path / "corpus.json").exists():
        return load_corpus(path)
    with progress_bar() as bar:
        task = bar.add_task("generating corpus", total=size)
        return make_corpus(
            path, seed=seed, size=size, progress=lambda d, t: bar.update(task, completed=d, total=t)
        )


def run_demo(root: Path, *, size: int = 2500, seed: int = 7) -> list[DemoResult]:
    """Build what is missing under `root`, then scan the test split with v1 and v2."""
    corpus = _ensure_corpus(root, size, seed)
    trained: list[TrainResult] = []
    for version in (1, 2):
        out = bundle_path(root, version)
        if not (out / "manifest.json").exists():
            with console.status(f"training v{version}"):
                trained.append(
                    train_model(
                        corpus, recipe_for_version(version), out, now=utc_now()
                    )
                )
    if trained:
        console.print(train_table(trained))
    test = [r for r in corpus.records if split_of(r.sha256) == "test"]
    labels = {r.sha256: r.label for r in test}
    results = []
    for version in (1, 2):
        model = load_bundle(bundle_path(root, version))
        ctx = DecisionContext(
            block_threshold=model.manifest.thresholds.block,
            detect_threshold=model.manifest.thresholds.detect,
        )
        scanner = Scanner(model, ctx)
        blocked_mal = blocked_ben = 0
        for rec in test:
            res = scanner.scan_file(str(corpus.sample_path(rec)))
            if (
                res.decision is not None
                and res.decision.verdict.is_alert
                and res.decision.reason.value == "score_block"
            ):
                if labels[rec.sha256]:
                    blocked_mal += 1
                else:
                    blocked_ben += 1
        n_mal = sum(labels.values())
        results.append(
            DemoResult(version, len(test), blocked_mal, n_mal, blocked_ben, len(test) - n_mal)
        )
    rows = [dataclasses.asdict(r) for r in results]
    (root / "demo.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return results


@click.command()
@click.option(
    "--out",
    default="fleetward-data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the corpus, bundles and reports go (reused when present).",
)
@click.option("--size", default=2500, show_default=True, help="Synthetic samples in the corpus.")
def demo(out: str, size: int) -> None:
    """Build the corpus and the v1/v2 bundles, then scan held-out samples with both.

    Example: fleetward demo --out fleetward-data
    """
    try:
        results = run_demo(Path(out), size=size)
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(
        title="fleetward-agent scan of the held-out samples (real files, real ONNX bundles)"
    )
    for col in ("model", "files", "malware blocked", "recall", "benign blocked (FP)", "FP rate"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"v{r.version}",
            str(r.scanned),
            f"{r.blocked_malicious}/{r.malicious}",
            f"{r.blocked_malicious / max(r.malicious, 1):.3f}",
            f"{r.blocked_benign}/{r.benign}",
            f"{r.blocked_benign / max(r.benign, 1):.4f}",
        )
    console.print(table)
    console.print(f"written: {Path(out) / 'demo.json'}")
