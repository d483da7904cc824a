"""The shards' daily fold alone (`EventFolder.fold_parts`), on events captured from a real run.

The fold is a pure function of its parts, so timing it on a captured day isolates it from the
rest of the simulation (and from the other processes sharing the machine, as far as CPU time
does: the figures are `time.thread_time`, the fold's own CPU seconds).

    --capture DIR   run the bench scenario (`sim_bench.scenario`) and save, from each shard
                    worker, the parts of its fold of the first whole day (`Shard._fold`'s
                    input) with what the folder needs, as DIR/shard<e_lo>.npz
    DIR             fold each captured shard's day `--repeat` times, print the CPU seconds
                    of each fold and a digest of the rows (same digest: same rows and sketches)
    --compare FILE  alternate with another version's fold module (e.g. `git show
                    54fc0f1:fleet_sim/fold.py > /tmp/fold_before.py`), same input, and say
                    whether the digests agree

Prints `cores: N` first. Usage:
    .venv/bin/python benchmarks/fold_bench.py --capture /tmp/folds --endpoints 1000000
    .venv/bin/python benchmarks/fold_bench.py /tmp/folds --repeat 5 --compare /tmp/fold_before.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from fleet_sim._memory import keep_freed_memory, trim_freed_memory  # noqa: E402
from fleet_sim.link.fold import EventFolder, FoldedRows  # noqa: E402

_COLS = ("day", "org", "sample", "model", "verdict", "count", "first", "last")


def capture(out: Path, endpoints: int, orgs: int, workers: int, data: Path) -> None:
    """Run 4 days of the bench scenario; each shard saves its second fold (day 1)."""
    from sim_bench import scenario

    from fleet_sim.parallel import shard as shard_mod
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


def load(
    path: Path, folder_type: Any = EventFolder
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    z = np.load(path)
    parts = [
        {k: z[f"p{i}_{k}"] for k in ("ep", "sample", "model", "verdict", "t_ms")}
        for i in range(int(z["n_parts"]))
    ]
    folder = folder_type(z["sha256"].tolist(), int(z["n_orgs"]), e_lo=int(z["e_lo"]))
    return folder, parts, {"ep_org": z["ep_org"], "t_base_ms": int(z["t_base_ms"])}


def digest(rows: Any) -> str:
    """The rows' columns and each row's sketch (not the blob's layout: `start` may differ)."""
    h = hashlib.sha256()
    for c in _COLS:
        a = getattr(rows, c)
        h.update(c.encode() + str(a.dtype).encode() + a.tobytes())
    h.update(b"".join(rows.sketch_list()))
    h.update(rows.size.tobytes())
    return h.hexdigest()[:16]


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("fold_compared", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fold_compared"] = mod  # (dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def time_folds(src: Path, repeat: int, compare: Path | None) -> None:
    """Each fold as a shard worker does it: glibc keeping freed blocks, trimmed after a fold."""
    keep_freed_memory()
    kinds = {"now": EventFolder}
    if compare is not None:
        kinds["compared"] = _module(compare).EventFolder
    for path in sorted(src.glob("shard*.npz")):
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        digests, ready = {}, {}
        for name, kind in kinds.items():  # each folder's hashes and tables: once a shard
            folder, parts, kw = load(path, kind)
            t = time.thread_time()
            digests[name] = digest(folder.fold_parts(parts, **kw))
            trim_freed_memory()
            print(f"{path.stem}_{name}_first_fold: {time.thread_time() - t:.2f} s cpu "
                  "(hashing the endpoints included)")  # fmt: skip
            ready[name] = (folder, parts, kw)
        n = sum(p["ep"].size for p in parts)
        for _ in range(repeat):  # alternating
            for name, (folder, parts, kw) in ready.items():
                t = time.thread_time()
                rows = folder.fold_parts(parts, **kw)
                cpu[name].append(time.thread_time() - t)
                if digest(rows) != digests[name]:
                    raise SystemExit(f"{name}: a fold of the same events differed")
                del rows
                trim_freed_memory()
        for name, xs in cpu.items():
            print(
                f"{path.stem}_{name}_fold: min {min(xs):.3f} s, median {np.median(xs):.3f} s "
                f"cpu ({n:,} events in {len(parts)} parts), digest {digests[name]}",
                flush=True,
            )
        if compare is not None:
            print(f"{path.stem}_same_rows: {digests['now'] == digests['compared']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--endpoints", type=int, default=1_000_000)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path("fleetward-data"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compare", type=Path, default=None)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_at_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.capture:
        capture(args.dir, args.endpoints, args.orgs, args.workers, args.data)
    else:
        time_folds(args.dir, args.repeat, args.compare)


if __name__ == "__main__":
    main()
