"""`fleetward corpus ...` and `fleetward model ...`: thin click layers over the model store."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from model_store._clock import utc_now
from model_store.corpus import load_corpus, make_corpus
from model_store.errors import ModelStoreError
from model_store.train import (
    CongruentResult,
    TrainResult,
    recipe_for_version,
    train_congruent,
    train_model,
)

__all__ = ["corpus", "model"]

console = Console(soft_wrap=True)  # messages hold paths: never hard-wrapped (the terminal wraps)


@click.group()
def corpus() -> None:
    """Build the synthetic sample corpus."""


@corpus.command("make")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Empty output directory."
)
@click.option("--seed", default=7, show_default=True, help="Generator seed.")
@click.option(
    "--size",
    default=3000,
    show_default=True,
    help="Synthetic samples drawn from the family plan (maintainer scripts add 4 % on top).",
)
@click.option(
    "--benign-dir",
    "benign_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A directory of real benign files to add (repeatable), besides the Python installation.",
)
@click.option(
    "--no-python-benign",
    is_flag=True,
    help="Do not take real benign files from the Python installation fleetward runs in.",
)
@click.option(
    "--benign-max",
    default=2000,
    show_default=True,
    help="At most this many real files by the per-folder rule (native binaries come on top).",
)
@click.option(
    "--benign-per-folder", default=6, show_default=True, help="At most this many per folder."
)
@click.option(
    "--benign-native-max",
    default=1000,
    show_default=True,
    help="At most this many native binaries (ELF, PE, Mach-O) past the per-folder rule.",
)
def corpus_make(
    out: str,
    seed: int,
    size: int,
    benign_dirs: tuple[str, ...],
    no_python_benign: bool,
    benign_max: int,
    benign_per_folder: int,
    benign_native_max: int,
) -> None:
    """Generate a seeded corpus (synthetic malware, real and synthetic benign), features cached.

    Real benign files come from the Python installation fleetward runs in (sys.base_prefix,
    sys.prefix) and from each --benign-dir; each keeps its source folder in the manifest.

    Example: fleetward corpus make --out data/corpus --seed 7 --size 3000 --benign-dir ~/src
    """
    try:
        with progress_bar() as bar:
            task = bar.add_task("generating samples", total=size)
            result = make_corpus(
                out,
                seed=seed,
                size=size,
                benign_dirs=benign_dirs,
                python_benign=not no_python_benign,
                benign_max=benign_max,
                benign_per_folder=benign_per_folder,
                benign_native_max=benign_native_max,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    mal = int(result.labels.sum())
    n = len(result.records)
    real = sum(1 for r in result.records if r.is_real)
    folders = len({r.folder for r in result.records if r.is_real})
    console.print(
        f"corpus at {out}: {n} samples ({mal} malicious, {n - mal} benign,"
        f" of which {real} real files from {folders} folders)"
    )


@click.group()
def model() -> None:
    """Train, calibrate and bundle detection models."""


@model.command("train")
@click.option(
    "--corpus", "corpus_dir", required=True, type=click.Path(exists=True, file_okay=False)
)
@click.option(
    "--version", "version", required=True, type=click.IntRange(min=1), help="Bundle version."
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write."
)
@click.option(
    "--target-fpr",
    default=0.001,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="False-positive rate the block threshold is calibrated to.",
)
@click.option(
    "--congruent-with",
    "congruent_with",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Reference bundle whose correct answers the new version should keep (lower NFR).",
)
def model_train(
    corpus_dir: str, version: int, out: str, target_fpr: float, congruent_with: str | None
) -> None:
    """Train gradient-boosted trees on static-v1, calibrate, export to ONNX and bundle.

    Example: fleetward model train --corpus data/corpus --version 2 --out data/bundles/v2

    Congruent with v1: fleetward model train --corpus data/corpus --version 2
    --out data/bundles/v2c --congruent-with data/bundles/v1
    """
    try:
        loaded = load_corpus(corpus_dir)
        recipe = recipe_for_version(version, target_fpr=target_fpr)
        if congruent_with is not None:
            with console.status(f"training v{version}, congruent and plain"):
                both = train_congruent(loaded, recipe, out, congruent_with, now=utc_now())
        else:
            with console.status(f"training v{version}"):
                result = train_model(loaded, recipe, out, now=utc_now())
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if congruent_with is None:
        console.print(train_table([result]))
        return
    console.print(train_table([both.congruent]))
    console.print(congruent_table(both))
    console.print(f"{out} holds the congruent model; the plain one was trained for comparison only")


def congruent_table(both: CongruentResult) -> Table:
    """The congruent model beside the plain one: NFR against the reference, TPR and FPR."""
    table = Table(
        title=f"regression against v{both.reference_version} ({both.samples} held-out samples)"
    )
    for col in ("model", "NFR", "TPR", "FPR"):
        table.add_column(col, justify="right")
    for name, r, nfr in (
        ("plain", both.plain, both.nfr_plain),
        ("congruent", both.congruent, both.nfr_congruent),
    ):
        table.add_row(
            f"v{r.manifest.version} {name}",
            f"{nfr:.4f}",
            f"{r.holdout.tpr:.3f}",
            f"{r.holdout.fpr:.4f}",
        )
    return table


def train_table(results: list[TrainResult]) -> Table:
    """Holdout TPR/FPR at the calibrated threshold, one row per version.

    "FPR real" is on real benign files of folders held out of training (leave-folder-out),
    "FPR synth" on held-out synthetic benign; each with the number of files it is over.
    """
    table = Table(title="held-out test split at the calibrated block threshold")
    for col in (
        "version",
        "eras",
        "threshold",
        "TPR",
        "FPR",
        "FPR real",
        "FPR synth",
        "TPR (all-era test)",
        "ONNX parity",
    ):
        table.add_column(col, justify="right")
    for r in results:
        m = r.manifest
        table.add_row(
            f"v{m.version}",
            ",".join(map(str, m.extra["recipe"]["eras"])),
            f"{m.thresholds.block:.4f}",
            f"{r.holdout.tpr:.3f}",
            f"{r.holdout.fpr:.4f}",
            f"{r.holdout_real.fpr:.4f} of {r.holdout_real.n_benign}",
            f"{r.holdout_synthetic.fpr:.4f} of {r.holdout_synthetic.n_benign}",
            f"{r.test_all_eras.tpr:.3f}",
            f"{r.parity_max_abs_diff:.1e}",
        )
    return table


def progress_bar() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def bundle_path(root: Path, version: int) -> Path:
    """Where the demo keeps bundle `version` under `root`."""
    return root / "bundles" / f"v{version}"
