"""The fold writer alone: capture a run's hand-overs, then replay them into a fresh store.

Prints `cores: N`, then the CPU seconds of each captured job as the writer process does it now
(`--mode process`: each fold's rows, loaded as the writer loads them, with the sketches in row
order, then its new pairs' vectors, a checkpoint after each chunk and each job) or as it did
before `00fa0de` (`--mode append-only`: rows only, vectors at the joins, no checkpoint: the
coordinator copied the WAL back hourly), and the totals.

    python benchmarks/fold_writer_bench.py capture DIR [sim_bench.py arguments...]
    python benchmarks/fold_writer_bench.py replay DIR [--mode process|append-only] [--db PATH]

`capture` runs `sim_bench.py` with those arguments (give `--workers 2` or a size from 200,000
endpoints up, so that the writer process is used) and copies every hand-over to DIR: the
writer's setup, each fold's column files and sketch bytes, each join's vector job. `replay`
writes them, in order, into a new store with the run's orgs (16 KiB pages, as the simulator's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.store import Store
from fleet_sim.link import fold_writer
from fleet_sim.link.fold import FoldedRows
from fleet_sim.link.in_process import InProcessLink


def capture(out: Path, bench_args: list[str]) -> None:
    """Run sim_bench.py, copying each hand-over to the writer process into `out`."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    real = fold_writer.ProcessFoldWriter._send
    seq = [0]

    def send(self: fold_writer.ProcessFoldWriter, job: dict[str, str]) -> None:
        seq[0] += 1
        if seq[0] == 1:
            for name in ("setup.json", "arrays.npz"):
                shutil.copy(Path(self._dir.name) / name, out / name)
        if "path" in job:
            shutil.copytree(job["path"], out / f"job-{seq[0]:04d}")
        (out / f"job-{seq[0]:04d}.json").write_text(json.dumps(job))
        real(self, job)

    fold_writer.ProcessFoldWriter._send = send  # type: ignore[method-assign]
    sys.path.insert(0, str(Path(__file__).parent))
    import sim_bench

    sys.argv = ["sim_bench.py", *bench_args]
    sim_bench.main()
    print(f"captured {seq[0]} hand-overs in {out}")


def replay(src: Path, mode: str, db: Path) -> None:
    """Write the captured jobs into a fresh store at `db`; print each job's CPU seconds."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    meta = json.loads((src / "setup.json").read_text())
    with np.load(src / "arrays.npz") as arrays:
        features = arrays["features"]
    fresh = Store(db, synchronous="NORMAL", page_size=16384)
    with fresh.write_transaction() as conn:
        conn.executemany(
            "INSERT INTO orgs (id, org_id, name, created_at) VALUES (?, ?, ?, '2026-11-01')",
            [
                (i + 1, o, n)
                for i, (o, n) in enumerate(zip(meta["org_ids"], meta["org_names"], strict=True))
            ],
        )
    fresh.close()
    store = Store(db, synchronous="NORMAL", busy_timeout_ms=fold_writer.STORE_BUSY_TIMEOUT_MS)
    link = InProcessLink(store, tuple(meta["org_names"]), features, tuple(meta["sha256"]))
    link.org_ids = list(meta["org_ids"])
    link.checkpoint_chunks = mode == "process"
    total = 0.0
    for path in sorted(src.glob("job-*.json")):
        job: dict[str, Any] = json.loads(path.read_text())
        now = dt.datetime.fromisoformat(job["now"])
        cpu = time.process_time()
        if "path" in job:
            where = src / path.stem
            if mode == "process":  # as the writer process loads them: sketches in row order
                rows = fold_writer._load_rows(where)
            else:
                cols = {k: np.load(where / f"{k}.npy") for k in fold_writer._COLS}
                rows = FoldedRows(**cols, sketches=(where / "sketches.bin").read_bytes())
                cpu = time.process_time()
            what = f"rows {len(rows):,} (days {', '.join(map(str, np.unique(rows.day)))})"
            link.write_rows(rows, now)
            if mode == "process":
                link.write_vectors(now)
        else:
            what = "vectors (a join)"
            link.write_vectors(now)
        if mode == "process":
            store.checkpoint()
        spent = time.process_time() - cpu
        total += spent
        print(f"{path.stem}: {what}: {spent:.2f} s CPU")
    store.close()  # the close's checkpoint: not in the total (the coordinator's, in both modes)
    print(f"fold_writer_replay_{mode}: {total:.2f} s CPU, store {db.stat().st_size:,} bytes")


def main() -> None:
    print(f"cores: {os.cpu_count()}")
    if len(sys.argv) > 2 and sys.argv[1] == "capture":
        capture(Path(sys.argv[2]), sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["replay"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--mode", choices=["process", "append-only"], default="process")
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()
    replay(args.dir, args.mode, args.db or args.dir / "replay.sqlite")


if __name__ == "__main__":
    main()
