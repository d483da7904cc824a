"""Model figures on a real machine: FP rates on system folders never trained on, TPR, small files.

Usage: python benchmarks/model_bench.py [--data DIR] [--max-files 3000] [--name-files N] [DIR ...]

Builds the corpus and the v1/v2 bundles with the defaults `fleetward demo` uses (timing each
step) into --data (a fresh temporary directory unless given; an existing one is reused and its
build times are not printed), then prints, with the machine's core count:

- per folder (default /usr/share, /usr/include, /usr/lib, /etc: those that exist), the block
  rate and the alert rate (block + detect) of v1 and v2 on up to --max-files regular files spread
  evenly over the folder. Files under a training source (the Python installation, any
  --benign-dir) and files whose sha256 is in the corpus are left out, so every figure is on files
  the models never saw. Every file there is benign: each alert is a false positive. Goal: at most
  0.1 % blocks and 1 % alerts. Each alerted file is named (score, path; up to --name-files per
  folder and version), so a block can be traced to its file.
- TPR at the block threshold on the held-out (test) split of synthetic malware: all, era 1,
  era 2. Goal: v2 >= 0.90, v1 >= 0.80, and v2 above v1 on era 2.
- the verdict of `hello world`, an empty file, a 1-byte file, the README and the EICAR test
  file, decided by the agent's own scanner (`agent.protect.scan.Scanner`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.decision import DecisionContext
from agent.features import extract_features
from agent.model import LoadedModel, load_bundle
from agent.protect.scan import Scanner, iter_files, read_sample
from model_store.corpus import Corpus, load_corpus, make_corpus
from model_store.train import recipe_for_version, split_of, train_model

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("/usr/share", "/usr/include", "/usr/lib", "/etc")
SIZE = 3000  # fleetward demo's corpus size
# The EICAR test string, in two parts so that this file is not itself the test file.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _build(data: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    if not (data / "corpus" / "corpus.json").exists():
        t0 = time.perf_counter()
        make_corpus(data / "corpus", seed=7, size=SIZE)
        times["corpus"] = time.perf_counter() - t0
    corpus = load_corpus(data / "corpus")
    for v in (1, 2):
        out = data / "bundles" / f"v{v}"
        if not (out / "manifest.json").exists():
            t0 = time.perf_counter()
            train_model(corpus, recipe_for_version(v), out, now=dt.datetime.now(tz=dt.UTC))
            times[f"train_v{v}"] = time.perf_counter() - t0
    return times


def _folder_vectors(
    folder: str, max_files: int, skip_roots: list[str], known: set[str]
) -> tuple[npt.NDArray[np.float32], list[str], int, int]:
    """Up to `max_files` files spread over `folder`: (vectors, paths, left out, unreadable)."""
    files = [p for p, early in iter_files([folder]) if early is None]
    inside = [p for p in files if not any(p == r or p.startswith(r + os.sep) for r in skip_roots)]
    left_out = len(files) - len(inside)
    if len(inside) > max_files:
        step = len(inside) / max_files
        inside = [inside[int(i * step)] for i in range(max_files)]
    vectors, paths, errors = [], [], 0
    for p in inside:
        try:
            sha, data, size = read_sample(p, max_file_bytes=256 << 20)
        except OSError:
            errors += 1
            continue
        if sha in known:
            left_out += 1
            continue
        vectors.append(extract_features(data, total_size=size))
        paths.append(p)
    return np.stack(vectors), paths, left_out, errors


def _alerts(
    model: LoadedModel, x: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Per file: blocked, alerted (block or detect), and the score."""
    scores = model.scorer.score_batch(x)
    th = model.manifest.thresholds
    detect = th.detect if th.detect is not None else th.block
    return scores >= th.block, scores >= min(detect, th.block), scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="Corpus and bundles (built when missing).")
    ap.add_argument("--max-files", type=int, default=3000, help="Files per folder at most.")
    ap.add_argument(
        "--name-files", type=int, default=20, help="Alerted files named per folder and version."
    )
    ap.add_argument("folders", nargs="*", default=list(FOLDERS))
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="model-bench-"))
    times = _build(data)
    for name, secs in times.items():
        print(f"{name}_s: {secs:.1f}")
    if times:
        print(f"corpus_and_training_s: {sum(times.values()):.1f}")
    corpus = load_corpus(data / "corpus")
    models = {v: load_bundle(data / "bundles" / f"v{v}") for v in (1, 2)}
    for v, m in models.items():
        th = m.manifest.thresholds
        print(f"v{v}_thresholds: block {th.block:.4f} detect {th.detect}")
    sources = [str(Path(s).resolve()) for s in _sources(data)]
    known = {r.sha256 for r in corpus.records}
    print(f"training_sources: {', '.join(sources)}")
    for folder in args.folders:
        if not Path(folder).is_dir():
            print(f"folder {folder}: missing, skipped")
            continue
        if any(s == folder or s.startswith(folder.rstrip("/") + "/") for s in sources):
            note = " (training sources inside it left out)"
        else:
            note = ""
        x, paths, left_out, errors = _folder_vectors(folder, args.max_files, sources, known)
        parts, named = [], []
        for v, m in models.items():
            blocked, alerted, scores = _alerts(m, x)
            blocks, alerts = int(blocked.sum()), int(alerted.sum())
            named += [
                f"  v{v} {'block' if blocked[i] else 'detect'} {scores[i]:.3f} {paths[i]}"
                for i in np.flatnonzero(alerted)[: args.name_files]
            ]
            parts.append(
                f"v{v} blocks {blocks} ({100 * blocks / len(x):.2f} %), "
                f"alerts {alerts} ({100 * alerts / len(x):.2f} %)"
            )
        print(
            f"folder {folder}: {len(x)} files, {left_out} left out as seen in training,"
            f" {errors} unreadable{note}; " + "; ".join(parts)
        )
        for line in named:
            print(line)
    _tpr(corpus, models)
    _small_files(models)


def _sources(data: Path) -> list[str]:
    import json

    meta = json.loads((data / "corpus" / "corpus.json").read_text())
    return list(meta.get("real_benign", {}).get("sources", []))


def _tpr(corpus: Corpus, models: dict[int, LoadedModel]) -> None:
    test = np.asarray([split_of(r.sha256, r.folder) == "test" for r in corpus.records])
    mal = test & (corpus.labels == 1)
    eras = corpus.eras
    caught: dict[int, dict[str, float]] = {}
    for v, m in models.items():
        scores = m.scorer.score_batch(corpus.features[mal])
        hits = scores >= m.manifest.thresholds.block
        e = eras[mal]
        caught[v] = {
            "all": float(hits.mean()),
            "era1": float(hits[e == 1].mean()),
            "era2": float(hits[e == 2].mean()),
        }
        print(
            f"v{v}_tpr_at_block: all {caught[v]['all']:.3f} era1 {caught[v]['era1']:.3f}"
            f" era2 {caught[v]['era2']:.3f} ({int(mal.sum())} held-out malware,"
            f" {int((e == 2).sum())} of era 2)"
        )
    print(f"v2_above_v1_on_era2: {caught[2]['era2'] > caught[1]['era2']}")


def _small_files(models: dict[int, LoadedModel]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "hello world": b"hello world\n",
            "empty file": b"",
            "1-byte file": b"x",
            "README.md": (ROOT / "README.md").read_bytes(),
            "EICAR test file": EICAR + b"\r\n",
        }
        for name, content in files.items():
            path = Path(tmp) / name.replace(" ", "_")
            path.write_bytes(content)
            verdicts = []
            for v, m in models.items():
                th = m.manifest.thresholds
                ctx = DecisionContext(block_threshold=th.block, detect_threshold=th.detect)
                r = Scanner(m, ctx).scan_file(str(path))
                d = r.decision
                assert d is not None
                verdicts.append(f"v{v} {d.verdict.value} ({d.reason.value}, score {d.score:.4f})")
            print(f"small_file {name}: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
