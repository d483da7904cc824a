"""The corpus: real benign files chosen by stated rules, everyday benign families, manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.features import FEATURE_NAMES, extract_features
from model_store.corpus import REAL_FAMILY, load_corpus, make_corpus
from model_store.corpus import generator as corpus_module
from model_store.corpus._everyday import EVERYDAY_BUILDERS
from model_store.corpus._maintainer import maintainer_script
from model_store.corpus._real import default_benign_dirs, select_real_files
from model_store.errors import CorpusError


def _tree(root: Path) -> Path:
    """Three folders: one with many files of two kinds, one small, one holding a duplicate."""
    big, small, dup = root / "big", root / "small", root / "dup"
    for d in (big, small, dup):
        d.mkdir(parents=True)
    for i in range(20):
        (big / f"m{i:02d}.py").write_text(f"print({i})\n")
    for i in range(3):
        (big / f"lib{i}.so").write_bytes(b"\x7fELF" + bytes([i]) * 100)
    (small / "a.txt").write_text("alpha\n")
    (small / "empty").write_bytes(b"")
    (small / "huge.bin").write_bytes(b"x" * 5000)
    (dup / "copy.txt").write_text("alpha\n")
    (root / "link").symlink_to(small / "a.txt")
    return root


def test_real_files_are_capped_per_folder_spread_over_suffixes_and_deterministic(tmp_path):
    root = _tree(tmp_path / "tree")
    pick = select_real_files([root], max_files=100, per_folder=4, max_bytes=4096)
    again = select_real_files([root], max_files=100, per_folder=4, max_bytes=4096)
    assert pick == again
    by_folder: dict[str, list[Path]] = {}
    for f in pick:
        by_folder.setdefault(f.folder, []).append(f.path)
        assert f.source == str(root.resolve())
    assert len(by_folder[str(root / "big")]) == 4
    assert {p.suffix for p in by_folder[str(root / "big")]} == {".py", ".so"}
    names = {p.name for p in (f.path for f in pick)}
    assert "empty" not in names and "huge.bin" not in names and "link" not in names
    assert len(select_real_files([root], max_files=3, per_folder=4, max_bytes=4096)) == 3


def test_native_binaries_join_past_the_per_folder_cap_up_to_native_max(tmp_path):
    """A folder of shared objects gives all of them, not six: the real compiled code the models
    must learn is benign (dogfooding found system codec and compression libraries blocked)."""
    root = tmp_path / "tree"
    libs = root / "lib-dynload"
    libs.mkdir(parents=True)
    for i in range(20):
        (libs / f"_mod{i:02d}.cpython-311-x86_64-linux-gnu.so").write_bytes(
            b"\x7fELF" + bytes([i]) * 100
        )
        (libs / f"mod{i:02d}.py").write_text(f"x = {i}\n")
    (libs / "fake.so").write_bytes(b"not native at all")
    (libs / "Hello.class").write_bytes(b"\xca\xfe\xba\xbe" + b"\0" * 50)
    (libs / "launcher.exe").write_bytes(b"MZ" + b"\0" * 100)

    def native(path: Path) -> bool:
        return path.read_bytes()[:4] == b"\x7fELF" or path.name == "launcher.exe"

    capped = select_real_files([root], max_files=100, per_folder=6)
    assert len(capped) == 6
    pick = select_real_files([root], max_files=100, per_folder=6, native_max=100)
    assert {f.path for f in capped} <= {f.path for f in pick}
    added = {f.path for f in pick} - {f.path for f in capped}
    assert added and all(native(p) for p in added)  # never fake.so nor the Java class
    assert sum(native(f.path) for f in pick) == 21  # every ELF and the PE launcher
    assert pick == select_real_files([root], max_files=100, per_folder=6, native_max=100)
    assert len(select_real_files([root], max_files=100, per_folder=6, native_max=5)) == 11


def test_corpus_records_real_files_with_their_folder_deduplicated_by_sha256(tmp_path):
    root = _tree(tmp_path / "tree")
    corpus = make_corpus(tmp_path / "c", seed=1, size=40, benign_dirs=[root], python_benign=False)
    real = [r for r in corpus.records if r.is_real]
    assert real and all(r.family == REAL_FAMILY and r.label == 0 for r in real)
    assert len({r.sha256 for r in real}) == len(real)
    alpha = [r for r in real if Path(r.path).read_text(errors="replace") == "alpha\n"]
    assert len(alpha) == 1  # small/a.txt and dup/copy.txt: one sample
    meta = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert meta["real_benign"]["sources"] == [str(root)]
    assert meta["real_benign"]["files"] == len(real)
    loaded = load_corpus(tmp_path / "c")
    assert [r.folder for r in loaded.records] == [r.folder for r in corpus.records]
    assert np.array_equal(loaded.features, corpus.features)


def test_the_python_installation_is_the_default_real_source():
    dirs = default_benign_dirs()
    assert dirs and all(d.is_dir() for d in dirs)
    picked = select_real_files(dirs, max_files=50, per_folder=2)
    assert len(picked) == 50 and len({f.folder for f in picked}) >= 25


def test_a_missing_benign_dir_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="not a directory"):
        make_corpus(tmp_path / "c", size=10, benign_dirs=[tmp_path / "nope"])


@pytest.mark.parametrize(
    ("family", "magics"),
    [
        ("locale_catalog", (b"\xde\x12\x04\x95",)),
        ("tz_data", (b"TZif2",)),
        ("font", (b"\0\x01\0\0", b"OTTO", b"wOF2")),
        ("image", (b"\x89PNG", b"\xff\xd8\xff", b"GIF89a", b"BM", b"\0\0\x01\0", b"<svg")),
        ("archive", (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"PK\x03\x04")),
    ],
)
def test_everyday_binary_families_carry_their_format_magic(family, magics):
    rng = np.random.default_rng(0)
    _, build = EVERYDAY_BUILDERS[family]
    for _ in range(30):
        data = build(rng, 0)
        if family == "archive" and data.endswith(b"\0" * 1024):
            assert data[257:262] == b"ustar"  # tar
            continue
        assert data.startswith(magics), data[:16]


def test_tiny_text_covers_empty_and_one_byte_files():
    rng = np.random.default_rng(0)
    _, build = EVERYDAY_BUILDERS["tiny_text"]
    sizes = {len(build(rng, 0)) for _ in range(400)}
    assert {0, 1} <= sizes and max(sizes) < 400


def test_real_folders_are_named_without_the_installation_s_location():
    picked = select_real_files([sys.base_prefix, sys.prefix], max_files=40, per_folder=2)
    assert picked
    labels = {"python"} | ({"python-env"} if sys.prefix != sys.base_prefix else set())
    assert {f.folder.split("/")[0] for f in picked} <= labels
    assert not any(f.folder.startswith("/") for f in picked)
    assert [f.folder for f in picked] == sorted(f.folder for f in picked)


def test_maintainer_scripts_are_valid_sh_with_debhelper_sections_and_escaped_versions(tmp_path):
    rng = np.random.default_rng(0)
    scripts = [maintainer_script(rng, 0) for _ in range(200)]
    for i, data in enumerate(scripts):
        facts = extract_features(data)
        assert facts[FEATURE_NAMES.index("script_sh")] == 1.0, data[:40]
        path = tmp_path / f"s{i}"
        path.write_bytes(data)
        shell = "bash" if data.split(b"\n", 1)[0].endswith(b"bash") else "sh"
        checked = subprocess.run([shell, "-n", str(path)], capture_output=True, check=False)
        assert checked.returncode == 0, (checked.stderr, data.decode())
    text = b"\n".join(scripts)
    assert b"# Automatically added by dh_" in text and b"dpkg-maintscript-helper " in text
    assert b"\\+" in text and b"\\~" in text  # dh_installdeb's escaped versions
    sizes = sorted(len(s) for s in scripts)
    assert sizes[10] < 400 and sizes[-10] > 1500  # a few lines up to a few KB
    assert len(set(scripts)) == len(scripts)


def test_supplement_families_join_without_redrawing_the_planned_samples(tmp_path, monkeypatch):
    with_supplement = make_corpus(tmp_path / "a", seed=5, size=200, python_benign=False)
    monkeypatch.setattr(corpus_module, "SUPPLEMENT_FAMILIES", ())
    without = make_corpus(tmp_path / "b", seed=5, size=200, python_benign=False)
    added = [r for r in with_supplement.records if r.family == "maintainer_script"]
    assert len(added) == round(0.04 * 200) and all(r.label == 0 for r in added)
    kept = [r for r in with_supplement.records if r.family != "maintainer_script"]
    assert kept == list(without.records)
    assert not any(r.family == "maintainer_script" for r in without.records)
