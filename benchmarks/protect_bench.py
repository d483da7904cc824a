"""Real-time protection figures: exec overhead under fanotify against a bare responder (the floor).

Usage: sudo python benchmarks/protect_bench.py [--bundle DIR | --data fleetward-data] [--n 400]

Prints one `name: value unit` line per figure, with the core count:
- exec of a copy of /bin/true in a protected folder against the same exec in a plain folder,
  interleaved pair by pair; p50/p99 of the extra time, cached (same file again) and first seen
  (a new copy each time, so hashed, featurised, scored and decided);
- the same with a bare responder that allows every event without deciding (the floor);
- first-seen exec overhead and decision time (wall, and CPU of the deciding thread, which the
  load of a shared machine does not inflate) for a 1 MB executable;
- open permission events answered per second (`--protect-open`, cached file);
- RSS of the protecting process after the run.
The protector runs in a child process (its own pid is never blocked) with a real bundle, the
same `Scanner.scan_file` decision path as `fleetward-agent scan` (the daemon's is the same
read, features and `decide`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_AGENT = """
import json, os, sys, time, datetime as dt
from agent.decision import DecisionContext, Mode
from agent.model import load_bundle
from agent.protect.protector import ProtectConfig, Protector
from agent.protect.scan import Scanner
bundle, folder, protect_open = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
model = load_bundle(bundle)
t = model.manifest.thresholds
scanner = Scanner(model, DecisionContext(block_threshold=t.block, detect_threshold=t.detect))
took = []
def decide(path):
    started, cpu = time.perf_counter(), time.thread_time()
    result = scanner.scan_file(path)
    took.append((result.size or 0, time.perf_counter() - started, time.thread_time() - cpu))
    return result
p = Protector(decide, mode=lambda: Mode.ENFORCE, clock=lambda: dt.datetime.now(dt.UTC),
              config=ProtectConfig(protect_open=protect_open))
p.start([folder])
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "stats":
        print(json.dumps({"stats": p.stats.to_dict(), "took": took}), flush=True)
p.stop()
"""

_FLOOR = """
import os, select, sys
from agent.protect import fanotify as fan
folder = sys.argv[1]
fd = fan.fanotify_init(fan.FAN_CLOEXEC | fan.FAN_CLASS_CONTENT)
fan.fanotify_mark(fd, fan.FAN_MARK_ADD, fan.FAN_OPEN_EXEC_PERM | fan.FAN_EVENT_ON_CHILD, folder)
print("ready", flush=True)
while True:
    for e in fan.iter_events(os.read(fd, 24 * 256)):
        if e.fd >= 0:
            fan.respond(fd, e.fd, True)
            os.close(e.fd)
"""


def _bundle(args: argparse.Namespace) -> Path:
    if args.bundle:
        return Path(args.bundle)
    from model_store.corpus import load_corpus, make_corpus
    from model_store.train import recipe_for_version, train_model

    data = Path(args.data)
    corpus_dir, bundle = data / "corpus", data / "bundles" / "v2"
    if not (corpus_dir / "corpus.json").exists():
        make_corpus(corpus_dir, seed=7, size=args.size)
    if not (bundle / "manifest.json").exists():
        train_model(
            load_corpus(corpus_dir), recipe_for_version(2), bundle, now=dt.datetime.now(tz=dt.UTC)
        )
    return bundle


def _start(code: str, *argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for s in (proc.stdin, proc.stdout):
        if s is not None:
            s.close()


def _exec_s(path: Path) -> float:
    started = time.perf_counter()
    pid = os.posix_spawn(str(path), [str(path)], {})
    _, status = os.waitpid(pid, 0)
    took = time.perf_counter() - started
    assert os.waitstatus_to_exitcode(status) == 0, path
    return took


def _pairs(protected: list[Path], plain: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved: each protected exec next to a plain one (order alternating)."""
    a, b = [], []
    for i, (p, q) in enumerate(zip(protected, plain, strict=True)):
        if i % 2:
            a.append(_exec_s(p))
            b.append(_exec_s(q))
        else:
            b.append(_exec_s(q))
            a.append(_exec_s(p))
    return np.array(a), np.array(b)


def _us(x: float) -> str:
    return f"{x * 1e6:.0f} us"


def _report(name: str, protected: np.ndarray, plain: np.ndarray) -> float:
    """Print one figure; the overhead p50 in seconds."""
    extra = protected - plain
    print(
        f"{name}: exec p50 {_us(float(np.median(protected)))} vs plain "
        f"{_us(float(np.median(plain)))}; overhead p50 {_us(float(np.median(extra)))} "
        f"p99 {_us(float(np.percentile(extra, 99)))}"
    )
    return float(np.median(extra))


def _copies(src: Path, folder: Path, n: int, pad_to: int = 0, tag: str = "c") -> list[Path]:
    """Distinct executables (trailing bytes differ, ELF ignores them)."""
    data = src.read_bytes()
    out = []
    for i in range(n):
        body = data + i.to_bytes(8, "little") + os.urandom(8)
        if pad_to > len(body):
            body += os.urandom(pad_to - len(body))
        path = folder / f"{tag}{i}"
        path.write_bytes(body)
        path.chmod(0o755)
        out.append(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--data", default="fleetward-data")
    ap.add_argument("--size", type=int, default=1500)
    ap.add_argument("--n", type=int, default=400, help="execs per figure")
    ap.add_argument("--opens", type=int, default=20000)
    args = ap.parse_args()
    bundle = _bundle(args)
    print(f"cores: {os.cpu_count()}")
    print(f"load_average_start: {_load()}")
    true = Path(shutil.which("true") or "/bin/true")
    with tempfile.TemporaryDirectory(prefix="protect-bench-") as tmp:
        prot, plain = Path(tmp) / "protected", Path(tmp) / "plain"
        prot.mkdir()
        plain.mkdir()
        shutil.copy(true, prot / "true")
        shutil.copy(true, plain / "true")
        n = args.n
        for _ in range(20):  # page cache, dynamic loader
            _exec_s(plain / "true")
            _exec_s(prot / "true")
        base_p, base_q = _pairs([prot / "true"] * n, [plain / "true"] * n)
        _report("no_responder", base_p, base_q)

        floor = _start(_FLOOR, str(prot))
        try:
            fp, fq = _pairs([prot / "true"] * n, [plain / "true"] * n)
        finally:
            _stop(floor)
        floor_s = _report("floor_bare_responder", fp, fq)

        agent = _start(_AGENT, str(bundle), str(prot), "0")
        try:
            _exec_s(prot / "true")  # first seen once, then cached
            cp, cq = _pairs([prot / "true"] * n, [plain / "true"] * n)
            cached_s = _report("protected_cached", cp, cq)
            print(f"cached_over_floor: {cached_s / floor_s:.2f}x (p50 overheads, this run)")
            m = max(n // 4, 20)
            firsts = _copies(true, prot, m, tag="f")
            sp, sq = _pairs(firsts, [plain / "true"] * m)
            _report("protected_first_seen_35kB", sp, sq)
            n_big = max(n // 6, 20)
            big = _copies(true, prot, n_big, pad_to=1 << 20, tag="b")
            big_plain = _copies(true, plain, n_big, pad_to=1 << 20, tag="b")
            for q in big_plain:
                _exec_s(q)
            bp, bq = _pairs(big, big_plain)
            _report("protected_first_seen_1MB", bp, bq)
            assert agent.stdin is not None and agent.stdout is not None
            agent.stdin.write("stats\n")
            agent.stdin.flush()
            info = json.loads(agent.stdout.readline())
            took_1mb = [t for size, t, _ in info["took"] if size >= 1 << 20]
            cpu_1mb = [c for size, _, c in info["took"] if size >= 1 << 20]
            took_small = [t for size, t, _ in info["took"] if size < 1 << 20]
            print(
                f"decision_first_seen_1MB: p50 {float(np.median(took_1mb)) * 1e3:.2f} ms "
                f"p99 {float(np.percentile(took_1mb, 99)) * 1e3:.2f} ms (n={len(took_1mb)}); "
                f"CPU of the deciding thread p50 {float(np.median(cpu_1mb)) * 1e3:.2f} ms"
            )
            print(
                f"decision_first_seen_35kB: p50 {float(np.median(took_small)) * 1e3:.2f} ms "
                f"(n={len(took_small)})"
            )
            print(f"protector_stats: {json.dumps(info['stats'], sort_keys=True)}")
            rss_kb = _rss_kb(agent.pid)
        finally:
            _stop(agent)
        print(f"rss_protecting_agent: {rss_kb / 1024:.0f} MB")

        print(f"rss_full_agent_run_protect: {_full_agent_rss_mb(bundle, Path(tmp), true):.0f} MB")

        target = prot / "true"
        opener = _start(_AGENT, str(bundle), str(prot), "1")
        try:
            os.close(os.open(target, os.O_RDONLY))  # decided once, then cached
            started = time.perf_counter()
            for _ in range(args.opens):
                os.close(os.open(target, os.O_RDONLY))
            rate = args.opens / (time.perf_counter() - started)
        finally:
            _stop(opener)
        started = time.perf_counter()
        for _ in range(args.opens):
            os.close(os.open(target, os.O_RDONLY))
        plain_rate = args.opens / (time.perf_counter() - started)
        print(
            f"open_events_answered: {rate:,.0f} /s (cached; same loop unprotected "
            f"{plain_rate:,.0f} opens/s)"
        )
    print(f"load_average_end: {_load()}")


def _load() -> str:
    """1, 5 and 15 minute load averages: on a shared machine they say what a figure is worth."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _full_agent_rss_mb(bundle: Path, tmp: Path, true: Path) -> float:
    """RSS of a real `fleetward-agent run --protect` (TUF client, daemon, protector, watcher)
    after 40 first-seen and 200 cached execs in its protected folder."""
    sys.path.insert(0, str(ROOT))
    from model_store.repository import init_repository, publish_model, publish_policy
    from tests.tuf_harness import ORG, policy_bytes, serving

    now = dt.datetime.now(tz=dt.UTC)
    repo, state, folder = tmp / "repo", tmp / "state", tmp / "full"
    folder.mkdir()
    init_repository(repo, now=now)
    manifest = json.loads((bundle / "manifest.json").read_text())
    publish_model(repo, bundle, now=now)
    publish_policy(repo, policy_bytes(1, model_version=manifest["version"]), now=now)
    copies = _copies(true, folder, 40, tag="a")
    with serving(repo) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--repo-url", server.url, "--org", ORG,
             "--state-dir", str(state), "--root", str(repo / "metadata" / "1.root.json"),
             "--protect", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "real-time protection on" in line:
                    break
            deadline = time.monotonic() + 60
            while not (state / "install.json").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # the first check-in's install settles
            for path in copies:
                _exec_s(path)
            for _ in range(200):
                _exec_s(copies[0])
            return _rss_kb(proc.pid) / 1024
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
