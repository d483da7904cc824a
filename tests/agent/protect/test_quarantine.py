"""Quarantine: content-addressed 0600 objects, exact restore, and SIGKILL at every step."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import QuarantineError
from agent.protect.quarantine import PHASES, Quarantine

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[3]
SHM = Path("/dev/shm")


def _sample(path: Path, data: bytes = b"\x7fELF" + bytes(range(256)) * 40) -> Path:
    path.write_bytes(data)
    path.chmod(0o751)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    return path


def _quarantine(q: Quarantine, path: Path):
    return q.quarantine(path, verdict="block", reason="score_block", model_version=3, now=NOW)


def test_quarantined_file_is_content_addressed_and_not_executable(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "state" / "quarantine")
    src = _sample(tmp_path / "evil")
    data = src.read_bytes()
    rec = _quarantine(q, src)
    assert not src.exists()
    obj = q.objects / rec.sha256
    assert obj.read_bytes() == data
    assert stat.S_IMODE(obj.stat().st_mode) == 0o600
    assert stat.S_IMODE(q.root.stat().st_mode) == 0o700
    assert (rec.original_path, rec.mode, rec.verdict, rec.model_version) == (
        str(src),
        0o751,
        "block",
        3,
    )
    assert [r.id for r in q.list()] == [rec.id]


@pytest.mark.parametrize("where", ["same_fs", "cross_fs"])
def test_restore_round_trips_bytes_and_metadata(tmp_path: Path, where: str) -> None:
    if where == "cross_fs" and not (
        SHM.is_dir() and os.stat(SHM).st_dev != os.stat(tmp_path).st_dev
    ):
        pytest.skip("no second filesystem at /dev/shm")
    folder = (
        tmp_path
        if where == "same_fs"
        else Path(os.environ.get("TMPDIR_SHM", SHM)) / f"fw-{os.getpid()}"
    )
    folder.mkdir(exist_ok=True)
    try:
        src = _sample(folder / "tool.bin")
        if os.geteuid() == 0:
            os.chown(src, 1234, 4321)
        data = src.read_bytes()
        os.utime(src, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
        before = src.stat()
        q = Quarantine(tmp_path / "quarantine")
        rec = _quarantine(q, src)
        assert not src.exists()
        q.restore(rec.id)
        after = src.stat()
        assert (after.st_mode, after.st_uid, after.st_gid) == (
            before.st_mode,
            before.st_uid,
            before.st_gid,
        )
        assert (after.st_atime_ns, after.st_mtime_ns) == (before.st_atime_ns, before.st_mtime_ns)
        assert src.read_bytes() == data
        assert q.list() == []
        assert not (q.objects / rec.sha256).exists()
    finally:
        if where == "cross_fs":
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()


def test_restore_refuses_to_overwrite_and_delete_drops_the_bytes(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q")
    src = _sample(tmp_path / "a")
    rec = _quarantine(q, src)
    src.write_bytes(b"new file at the same path")
    with pytest.raises(QuarantineError, match="exists"):
        q.restore(rec.id)
    q.delete(rec.id)
    assert q.list() == [] and not (q.objects / rec.sha256).exists()
    with pytest.raises(QuarantineError, match="no quarantined file"):
        q.restore(rec.id)
    with pytest.raises(QuarantineError, match="no quarantined file"):
        q.delete("../../etc/passwd")


def test_shared_object_survives_deleting_one_of_two_records(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q")
    data = b"same bytes twice" * 10
    first = _quarantine(q, _sample(tmp_path / "one", data))
    second = q.quarantine(
        _sample(tmp_path / "two", data),
        verdict="block",
        reason="x",
        model_version=1,
        now=NOW + dt.timedelta(seconds=1),
    )
    assert first.sha256 == second.sha256 and first.id != second.id
    q.delete(first.id)
    assert (q.objects / first.sha256).exists()
    q.restore(second.id)
    assert (tmp_path / "two").read_bytes() == data


_CHILD = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from agent.protect.quarantine import Quarantine
    target, stop_at = sys.argv[1], sys.argv[2]
    def phase(name):
        if name == stop_at:
            print(name, flush=True)
            time.sleep(60)
    Quarantine(sys.argv[3]).quarantine(
        target, verdict="block", reason="score_block", model_version=1,
        now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), phase=phase,
    )
    """
)


def _phases(cross: bool) -> list[tuple[str, bool]]:
    return [(p, cross) for p in PHASES if cross or p not in ("staged", "unlinked")]


@pytest.mark.parametrize(("stop_at", "cross"), _phases(False) + _phases(True))
def test_sigkill_at_each_phase_leaves_the_file_in_place_or_quarantined(
    tmp_path: Path, stop_at: str, cross: bool
) -> None:
    if cross and not (SHM.is_dir() and os.stat(SHM).st_dev != os.stat(tmp_path).st_dev):
        pytest.skip("no second filesystem at /dev/shm")
    folder = SHM / f"fw-q-{os.getpid()}-{stop_at}" if cross else tmp_path / "files"
    folder.mkdir()
    try:
        src = _sample(folder / "evil.bin")
        data = src.read_bytes()
        qroot = tmp_path / "q"
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(src), stop_at, str(qroot)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        ) as proc:
            assert proc.stdout is not None
            landed = proc.stdout.readline().strip()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        assert landed == stop_at, "the kill did not land at the intended phase"
        q = Quarantine(qroot)
        records = q.list()
        in_place = src.exists() and src.read_bytes() == data
        quarantined = [r for r in records if (q.objects / r.sha256).read_bytes() == data]
        assert in_place or quarantined, "the file was lost"
        if not in_place:
            assert [r.original_path for r in quarantined] == [str(src)]
            q.restore(quarantined[0].id)
            assert src.read_bytes() == data and stat.S_IMODE(src.stat().st_mode) == 0o751
        else:
            assert not quarantined or stop_at in ("staged", "moved")
        assert not list(qroot.glob(".stage-*"))
    finally:
        if cross:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()


def test_scan_quarantine_moves_blocked_files_and_the_commands_manage_them(
    tmp_path: Path, bundles
) -> None:
    import hashlib
    import json

    from click.testing import CliRunner

    from agent.cli import main as agent_cli

    folder = tmp_path / "files"
    folder.mkdir()
    evil = _sample(folder / "evil.bin", b"\x7fELF synthetic dropper " * 50)
    keep = folder / "notes.txt"
    keep.write_text("plain text\n")
    blocklist = tmp_path / "block.txt"
    blocklist.write_text(hashlib.sha256(evil.read_bytes()).hexdigest() + " test dropper\n")
    state = tmp_path / "state"
    runner = CliRunner()
    out = runner.invoke(
        agent_cli,
        [
            "scan",
            str(folder),
            "--bundle",
            str(bundles[1]),
            "--blocklist",
            str(blocklist),
            "--quarantine",
            "--state-dir",
            str(state),
        ],
    )
    assert out.exit_code == 1, out.output
    assert not evil.exists() and keep.exists(), out.output
    listed = runner.invoke(agent_cli, ["quarantine", "list", "--state-dir", str(state), "--json"])
    [record] = [json.loads(line) for line in listed.output.splitlines()]
    assert (record["original_path"], record["verdict"]) == (str(evil), "blocklisted")
    gone = runner.invoke(
        agent_cli, ["quarantine", "delete", record["id"], "--state-dir", str(state)]
    )
    assert gone.exit_code == 0 and Quarantine(state / "quarantine").list() == []
    empty = runner.invoke(agent_cli, ["quarantine", "list", "--state-dir", str(state)])
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", "no quarantined files\n")
    empty_json = runner.invoke(
        agent_cli, ["quarantine", "list", "--state-dir", str(state), "--json"]
    )
    assert (empty_json.stdout, empty_json.stderr) == ("", "")
    missing = runner.invoke(
        agent_cli, ["quarantine", "restore", record["id"], "--state-dir", str(state)]
    )
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines() == [
        f"Error: no quarantined file with id '{record['id']}'"
    ]
