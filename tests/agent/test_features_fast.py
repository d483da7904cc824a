"""The vectorised `static-v1` extraction gives bit-identical vectors to the previous one.

`tests/agent/_features_oracle.py` is `agent.features` as it was before the speed-up (marker
search by byte pairs, byte counts by pairs, lower-casing without a table). Vectors are compared
as float32 arrays with `np.array_equal`: over random bytes, over bytes shaped like ELF, PE,
scripts and text with markers planted (self-overlapping ones too), and over real files of the
Python installation of every one of those formats, one past the 16 MiB cap.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import features
from agent._headers import parse_headers
from tests.agent import _features_oracle as oracle

NEEDLES = [nd for group in features._MARKERS.values() for nd in group]
PREFIXES = [
    b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00",
    b"MZ\x90\x00\x03" + bytes(55) + b"\x80\x00\x00\x00",
    b"#!/bin/sh\n",
    b"#!/usr/bin/env python3\n",
    b"",
]


def _same(data: bytes, total_size: int | None = None) -> bool:
    old = oracle.extract_features(data, total_size=total_size)
    # the default thresholds keep small inputs on the simple paths; zero sends every input
    # through the vectorised ones too (pair counts in many slices, the pair-table search),
    # and strings are gathered by index however dense they are
    with (
        patch.object(features, "_SMALL_TEXT", 0),
        patch.object(features, "_PAIR_MIN", 0),
        patch.object(features, "_PAIR_SLICE", 512),
        patch.object(features, "_GATHER_BELOW", 2.0),
    ):
        fast = features.extract_features(data, total_size=total_size)
    new = features.extract_features(data, total_size=total_size)
    return all(v.dtype == np.float32 and np.array_equal(v, old) for v in (new, fast))


def _case(draw: st.DrawFn, text: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return bytes(
        c ^ 0x20 if f and chr(c).isalpha() else c for c, f in zip(text, flips, strict=True)
    )


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """A header, then printable text, binary noise and markers (any case, some doubled)."""
    parts = [draw(st.sampled_from(PREFIXES))]
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            parts.append(_case(draw, draw(st.sampled_from(NEEDLES))))
        elif kind == 1:  # a self-overlapping run such as /usr/usr/ or a doubled needle
            nd = draw(st.sampled_from(NEEDLES))
            parts.append(nd + nd[1:] + nd)
        elif kind == 2:
            parts.append(
                draw(
                    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
                ).encode()
            )
        else:
            parts.append(draw(st.binary(max_size=300)))
    return b"".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=20_000))
def test_random_bytes_give_bit_identical_vectors(data: bytes) -> None:
    assert _same(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped(), st.integers(0, 3))
def test_elf_pe_script_and_text_shapes_give_bit_identical_vectors(data: bytes, repeat: int) -> None:
    data *= 1 + repeat * 7  # long enough to cross blocks and the pair-count threshold
    assert _same(data)
    assert _same(data, total_size=len(data) + 12345)


@settings(max_examples=200, deadline=None)
@given(shaped())
def test_marker_counts_equal_bytes_count(data: bytes) -> None:
    joined = data.replace(b"\n", b" ").lower()
    want = [sum(joined.count(nd) for nd in group) for group in features._MARKERS.values()]
    with patch.object(features, "_SMALL_TEXT", 0):
        got = features._count_markers(np.frombuffer(joined, dtype=np.uint8))
    assert got.tolist() == want


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 9000), st.integers(1, 256), st.integers(0, 2**32 - 1), st.booleans())
def test_block_histograms_equal_a_bincount_per_block(
    size: int, alphabet: int, seed: int, table_popcount: bool
) -> None:
    """Bit-plane nibble counts (numpy 2 popcount, or the byte table numpy 1 falls back to)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, alphabet, size, dtype=np.uint8) ^ np.uint8(rng.integers(0, 256))
    blocks = [arr[i : i + 1024] for i in range(0, arr.size, 1024)]
    want_nibbles = [np.bincount(b >> 4, minlength=16).tolist() for b in blocks]
    with patch.object(features, "_NIBBLE_PIECE", 2048), patch.object(features, "_PAIR_MIN", 0):
        if table_popcount:
            with patch.object(features, "np", _NumpyWithout("bitwise_count")):
                nibbles, counts = features._block_histograms(arr)
        else:
            nibbles, counts = features._block_histograms(arr)
    assert nibbles.tolist() == want_nibbles
    assert counts.tolist() == np.bincount(arr, minlength=256).tolist()


class _NumpyWithout:
    """numpy as the module sees it, minus one attribute (numpy 1.x has no bitwise_count)."""

    def __init__(self, missing: str) -> None:
        self._missing = missing

    def __getattr__(self, name: str) -> object:
        if name == self._missing:
            raise AttributeError(name)
        return getattr(np, name)


def test_a_planted_self_overlap_is_counted_as_bytes_count_does() -> None:
    text = np.frombuffer(b"/usr/usr/usr/ mzmz | sh| sh", dtype=np.uint8)
    with patch.object(features, "_SMALL_TEXT", 0):
        counts = features._count_markers(text).tolist()
    found = dict(zip(features._MARKERS, counts, strict=True))
    assert found["paths"] == b"/usr/usr/usr/".count(b"/usr/") == 2
    assert found["mz"] == 2 and found["shell"] == 2


def _past_the_cap(folder: Path) -> Path:
    """A file of real ELF bytes (this installation's extension modules, end to end, repeated)
    past `features.MAX_BYTES`, so the cap is crossed however this Python was built."""
    parts = sorted(Path(sys.base_prefix).glob("lib/python3*/lib-dynload/*.so"))
    assert parts, "no extension modules to build a big file from"
    path = folder / "big.so"
    with path.open("wb") as out:
        written, i = 0, 0
        while written <= features.MAX_BYTES + (1 << 20):
            written += out.write(parts[i % len(parts)].read_bytes())
            i += 1
    return path


def _python_files(folder: Path) -> dict[str, list[Path]]:
    """Real files of this Python installation, a few per format (deterministic)."""
    base = Path(sys.base_prefix)
    venv = Path(sys.prefix)
    picks = {
        "elf": sorted((base / "lib").glob("python3*/lib-dynload/*.so"))[:6],
        "pe": sorted(venv.glob("lib/python3*/site-packages/pip/_vendor/distlib/*.exe"))[:4],
        "script": sorted((base / "bin").glob("*"))[:12],
        "text": sorted((base / "lib").glob("python3*/*.py"))[:6]
        + sorted((base / "lib").glob("python3*/site-packages/*.dist-info/LICENSE*"))[:3],
    }
    big = sorted((base / "lib").glob("libpython3*.so.1.0"))[:1]  # a shared build has it
    picks["big"] = [p for p in big if p.stat().st_size > features.MAX_BYTES]
    picks["big"].append(_past_the_cap(folder))  # a static build has none: never an empty list
    return {kind: [p for p in paths if p.is_file()] for kind, paths in picks.items()}


def test_real_files_of_every_shape_give_bit_identical_vectors(tmp_path: Path) -> None:
    files = _python_files(tmp_path)
    assert files["big"] and all(p.stat().st_size > features.MAX_BYTES for p in files["big"])
    seen = set()
    for paths in files.values():
        for path in paths:
            new, old = features.extract_file(path), oracle.extract_file(path)
            assert np.array_equal(new, old), path
            seen.add(parse_headers(path.read_bytes()[: 64 * 1024]).fmt)
    assert {"elf", "pe", "script", "other"} <= seen, seen  # every shape was covered
