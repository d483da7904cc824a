"""The shards' daily fold alone (`EventFolder.fold_parts`), on events captured from a real run.

The fold is a pure function of its parts, so timing it on a captured day isolates it from the
rest of the simulation (and from the other processes sharing the machine, as far as CPU time
does: the figures are `time.thread_time`, the fold's own CPU seconds).

    --capture DIR   run the bench scenario (`sim_bench.scenario`) and save, from each shard
                    worker, the parts of its fold of the first whole day (`Shard._fold`'s
                    input) with what the folder needs, as DIR/shard<e_lo>.npz
    DIR             fold each captured shard's day `--repeat` times, print the CPU seconds
                    of each fold and a digest of the rows (same digest: same output bytes)

Prints `cores: N` first. Usage:
    .venv/bin/python benchmarks/fold_bench.py --capture /tmp/folds --endpoints 1000000
    .venv/bin/python benchmarks/fold_bench.py /tmp/folds --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from fleet_sim.fold import EventFolder, FoldedRows  # noqa: E402

_COLS = ("day", "org", "sample", "model", "verdict", "count", "first", "last")


def capture(out: Path, endpoints: int, orgs: int, workers: int, data: Path) -> None:
    """Run 4 days of the bench scenario; each shard saves its second fold (day 1)."""
    from sim_bench import scenario

    from fleet_sim import shard as shard_mod
    from fleet_sim.run import ensure_assets, run_scenario
    from fleet_sim.scenario import scenario_from_dict

    out.mkdir(parents=True, exist_ok=True)
    fold = shard_mod.Shard._fold  # noqa: SLF001

    def saving(self: Any, parts: list[dict[str, Any]]) -> FoldedRows:
        f = self._folder  # noqa: SLF001
        path = out / f"shard{f.e_lo}.npz"
        total = sum(p["ep"].size for p in parts)
        seen = self.__dict__.setdefault("_bench_folds", [0])
        seen[0] += bool(total)
        if seen[0] == 2 and not path.exists():  # the day after the first (whole, warm)
            arrays = {f"p{i}_{k}": v for i, p in enumerate(parts) for k, v in p.items()}
            np.savez(
                path, **arrays, n_parts=len(parts), ep_org=self.fleet.world.ep_org,
                t_base_ms=self._epoch_ms, e_lo=f.e_lo, n_orgs=f.n_orgs,  # noqa: SLF001
                sha256=np.asarray(self.fleet.world.catalog.sha256),
            )  # fmt: skip
            print(f"captured {total:,} events in {len(parts)} parts -> {path}", flush=True)
        return fold(self, parts)

    shard_mod.Shard._fold = saving  # type: ignore[method-assign]  # noqa: SLF001
    corpus, bundles = ensure_assets(data, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    sc = scenario_from_dict(scenario(endpoints, orgs, 4, 1.0, False))
    with tempfile.TemporaryDirectory() as tmp:
        run_scenario(sc, corpus=corpus, bundles=bundles, out=tmp, workers=workers)


def load(path: Path) -> tuple[EventFolder, list[dict[str, Any]], dict[str, Any]]:
    z = np.load(path)
    parts = [
        {k: z[f"p{i}_{k}"] for k in ("ep", "sample", "model", "verdict", "t_ms")}
        for i in range(int(z["n_parts"]))
    ]
    folder = EventFolder(z["sha256"].tolist(), int(z["n_orgs"]), e_lo=int(z["e_lo"]))
    return folder, parts, {"ep_org": z["ep_org"], "t_base_ms": int(z["t_base_ms"])}


def digest(rows: FoldedRows) -> str:
    h = hashlib.sha256()
    for c in _COLS:
        a = getattr(rows, c)
        h.update(c.encode() + str(a.dtype).encode() + a.tobytes())
    h.update(b"".join(rows.sketch_list()))
    h.update(rows.size.tobytes())
    return h.hexdigest()[:16]


def time_folds(src: Path, repeat: int) -> None:
    for path in sorted(src.glob("shard*.npz")):
        folder, parts, kw = load(path)
        n = sum(p["ep"].size for p in parts)
        t = time.thread_time()
        folder.ranks(max(int(p["ep"].max()) for p in parts))
        print(f"{path.stem}_hash_endpoints: {time.thread_time() - t:.2f} s cpu (once per shard)")
        for i in range(repeat):
            t = time.thread_time()
            rows = folder.fold_parts(parts, **kw)
            cpu = time.thread_time() - t
            print(
                f"{path.stem}_fold_{i}: {cpu:.2f} s cpu, {n:,} events in {len(parts)} parts, "
                f"{len(rows):,} rows, digest {digest(rows)}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--endpoints", type=int, default=1_000_000)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path("fleetward-data"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_at_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.capture:
        capture(args.dir, args.endpoints, args.orgs, args.workers, args.data)
    else:
        time_folds(args.dir, args.repeat)


if __name__ == "__main__":
    main()
