"""Feature schema `static-v1`: a fixed-length float32 vector computed from a file's bytes.

The layout follows the EMBER feature set (Anderson & Roth, 2018) in spirit: byte histogram,
byte-entropy histogram over a sliding window, printable-string statistics, general facts, and
header facts for ELF / PE / Mach-O / scripts. Everything is a pure function of the bytes, so the
same file gives the same vector on every OS; the backend, the simulator and rescoring import
this module rather than re-implementing any of it.

Files are read in chunks of `CHUNK_BYTES` up to `MAX_BYTES` (16 MiB): features describe that
prefix, while `log_size` records the real size and `truncated` says the cap was hit. The cap
bounds memory on an endpoint and matches what a user-facing scan can afford per file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from agent._bytes import byte_counts as count_bytes
from agent._headers import FORMATS, INTERPRETERS, HeaderFacts, parse_headers

__all__ = [
    "FEATURE_NAMES",
    "MAX_BYTES",
    "SCHEMA",
    "VECTOR_LENGTH",
    "FeatureSchema",
    "extract_features",
    "extract_file",
    "is_supported_schema",
]

SCHEMA_NAME: Final = "static-v1"
MAX_BYTES: Final = 16 * 1024 * 1024
CHUNK_BYTES: Final = 1024 * 1024
WINDOW: Final = 2048  # byte-entropy window; it slides by half a window
_BLOCK: Final = WINDOW // 2
MIN_STRING: Final = 5

_MARKERS: Final[dict[str, tuple[bytes, ...]]] = {
    "paths": (b"c:\\", b"\\windows\\", b"/usr/", b"/bin/", b"/etc/", b"/tmp/", b"/home/"),
    "urls": (b"http://", b"https://", b"ftp://"),
    "registry": (b"hkey_", b"hklm\\", b"hkcu\\", b"software\\microsoft"),
    "mz": (b"mz",),
    "shell": (b"#!/bin/sh", b"/bin/bash", b"bash -c", b"chmod +x", b"wget ", b"curl ", b"| sh"),
    "powershell": (b"powershell", b"-encodedcommand", b"iex", b"invoke-", b"downloadstring"),
    "crypto": (b"aes", b"rsa", b"encrypt", b"decrypt", b"crypt32", b"bitcoin"),
    "credentials": (b"password", b"passwd", b"login data", b"cookies", b"wallet", b"token"),
}


def _block_names() -> list[str]:
    names = [f"byte_hist_{i:02x}" for i in range(256)]
    names += [f"byte_entropy_{h:x}_{n:x}" for h in range(16) for n in range(16)]
    names += ["str_count_log", "str_mean_len", "str_max_len_log", "str_long_count_log"]
    names += ["str_printables_log", "str_char_entropy"]
    names += [f"str_char_{c:02x}" for c in range(0x20, 0x7F)]
    names += [f"str_marker_{m}_log" for m in _MARKERS]
    names += ["log_size", "log_scanned", "truncated", "entropy", "zero_ratio"]
    names += ["printable_ratio", "high_ratio", "text_ratio"]
    names += [f"format_{f}" for f in FORMATS]
    names += ["hdr_parse_error", "hdr_64bit", "hdr_library", "hdr_executable"]
    names += ["hdr_machine_x86", "hdr_machine_arm", "hdr_segments_log", "hdr_load_commands_log"]
    names += ["pe_gui", "pe_timestamp_zero", "pe_entry_outside", "pe_entry_in_last"]
    names += ["overlay_ratio", "sec_count_log", "sec_entropy_mean", "sec_entropy_max"]
    names += [
        "sec_entropy_min",
        "sec_entropy_std",
        "sec_high_entropy",
        "sec_exec",
        "sec_write_exec",
    ]
    names += ["sec_largest_ratio"]
    names += [f"script_{i}" for i in INTERPRETERS]
    names += ["lines_log", "line_mean_len_log", "line_max_len_log", "long_line_ratio"]
    return names


FEATURE_NAMES: Final[tuple[str, ...]] = tuple(_block_names())
VECTOR_LENGTH: Final = len(FEATURE_NAMES)


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """The name, version and vector length a bundle manifest must name to be loadable."""

    name: str
    vector_length: int


SCHEMA: Final = FeatureSchema(name=SCHEMA_NAME, vector_length=VECTOR_LENGTH)

_PRINTABLE = np.zeros(256, dtype=bool)
_PRINTABLE[0x20:0x7F] = True
_TEXT = _PRINTABLE.copy()
_TEXT[[0x09, 0x0A, 0x0D]] = True
_LN2 = float(np.log(2.0))
_ENTROPY_BIN_SCALE = 4.0  # entropy of a nibble histogram is 0..4 bits -> 16 bins


def is_supported_schema(name: str, vector_length: int) -> bool:
    """Tell whether this agent can produce the vectors a bundle was trained on."""
    return name == SCHEMA.name and vector_length == SCHEMA.vector_length


def _entropy_bits(counts: npt.NDArray[np.float64]) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / _LN2)


def _block_histograms(
    arr: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per-block (1024 bytes) byte counts reduced to high-nibble counts, plus the byte counts.

    One bincount per chunk serves both the byte histogram and the byte-entropy histogram;
    temporaries stay bounded by `CHUNK_BYTES` whatever the file size.
    """
    n = arr.size
    n_blocks = -(-n // _BLOCK)
    nibble_hist = np.zeros((n_blocks, 16), dtype=np.int64)
    byte_counts = np.zeros(256, dtype=np.int64)
    per_chunk = CHUNK_BYTES // 4 // _BLOCK  # 256 KiB: the intp index array stays at 2 MiB
    for first in range(0, n_blocks, per_chunk):
        last = min(first + per_chunk, n_blocks)
        piece = arr[first * _BLOCK : last * _BLOCK]
        full = piece.size // _BLOCK
        idx = np.empty((full, _BLOCK), dtype=np.intp)  # block * 256 + byte, in one pass
        np.add(
            piece[: full * _BLOCK].reshape(full, _BLOCK),
            (np.arange(full, dtype=np.intp) * 256)[:, None],
            out=idx,
            casting="unsafe",
        )
        counts = np.bincount(idx.ravel(), minlength=full * 256).reshape(full, 16, 16)
        nibble_hist[first : first + full] = counts.sum(axis=2)
        byte_counts += counts.reshape(full, 256).sum(axis=0)
        if full < last - first:  # trailing partial block
            rest = count_bytes(piece[full * _BLOCK :])
            nibble_hist[first + full] = rest.reshape(16, 16).sum(axis=1)
            byte_counts += rest
    return nibble_hist, byte_counts


def _byte_entropy_hist(nibble_hist: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """16x16 histogram: window entropy bin x high nibble, windows of 2048 sliding by 1024."""
    n_blocks = nibble_hist.shape[0]
    if n_blocks == 0:
        return np.zeros(256, dtype=np.float64)
    blocks = nibble_hist.astype(np.float64)
    windows = blocks if n_blocks == 1 else blocks[:-1] + blocks[1:]
    totals = windows.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(windows > 0, windows / totals, 1.0)
        ent = -(np.where(windows > 0, p * np.log(p), 0.0)).sum(axis=1) / _LN2
    bins = np.minimum((ent * _ENTROPY_BIN_SCALE).astype(np.int64), 15)
    onehot = np.zeros((windows.shape[0], 16), dtype=np.float64)
    onehot[np.arange(windows.shape[0]), bins] = 1.0
    out: npt.NDArray[np.float64] = onehot.T @ windows
    normalised: npt.NDArray[np.float64] = (out / out.sum()).ravel()
    return normalised


@dataclass(slots=True)
class _StringStats:
    count: int = 0
    total_len: int = 0
    max_len: int = 0
    long_count: int = 0
    char_counts: npt.NDArray[np.int64] | None = None
    markers: npt.NDArray[np.int64] | None = None


def _string_chunk(arr: npt.NDArray[np.uint8], acc: _StringStats) -> None:
    """Add the printable runs of one chunk (that starts and ends on a run boundary) to `acc`."""
    n_bytes = arr.size
    if n_bytes < MIN_STRING:
        return
    mask = (arr >= 0x20) & (arr < 0x7F)
    # starts5[i]: a run of MIN_STRING printables starts at i; dilating it marks every byte
    # of every long-enough run, with a handful of boolean passes and no per-run loop.
    starts5 = mask[: n_bytes - MIN_STRING + 1].copy()
    for k in range(1, MIN_STRING):
        starts5 &= mask[k : n_bytes - MIN_STRING + 1 + k]
    del mask
    inside = np.zeros(n_bytes, dtype=bool)
    for k in range(MIN_STRING):
        inside[k : k + starts5.size] |= starts5
    del starts5
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    bounds = np.concatenate(([0], edges, [n_bytes]))
    lengths = np.diff(bounds)[(0 if inside[0] else 1) :: 2]
    if lengths.size == 0:
        return
    chars = arr[inside]
    del inside
    acc.count += int(lengths.size)
    acc.total_len += int(lengths.sum())
    acc.max_len = max(acc.max_len, int(lengths.max()))
    acc.long_count += int((lengths >= 100).sum())
    counts = _pair_byte_counts(chars) if chars.size >= _PAIR_MIN else count_bytes(chars)
    acc.char_counts = counts if acc.char_counts is None else acc.char_counts + counts
    # Strings joined by newlines, lower-cased: markers cannot span two strings.
    joined = np.insert(chars, np.cumsum(lengths)[:-1], np.uint8(10))
    del chars
    upper = joined - np.uint8(0x41)  # 'A'..'Z' -> 0..25, everything else wraps above
    upper = np.less(upper, 26, out=upper.view(bool)).view(np.uint8)
    upper <<= 5
    joined |= upper  # what `bytes.lower` does: ASCII only, +0x20 on 'A'..'Z'
    del upper
    found = _count_markers(joined)
    acc.markers = found if acc.markers is None else acc.markers + found


def _pair_byte_counts(arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Occurrences of each byte value, counted two bytes at a time (half the bincount work).

    Byte pairs read as uint16 are counted in slices (bounded temporaries, as in `count_bytes`);
    a byte value's count is its row sum plus its column sum in the 256 x 256 pair table.
    """
    n = arr.size // 2 * 2
    pairs = arr[:n].view(np.uint16)
    table = np.zeros(1 << 16, dtype=np.int64)
    for start in range(0, pairs.size, _PAIR_SLICE):
        table += np.bincount(pairs[start : start + _PAIR_SLICE], minlength=1 << 16)
    square = table.reshape(256, 256)
    out: npt.NDArray[np.int64] = square.sum(axis=0) + square.sum(axis=1)
    if n < arr.size:
        out[arr[-1]] += 1
    return out


_PAIR_SLICE: Final = 128 * 1024
_PAIR_MIN: Final = 128 * 1024  # below this, the 64 Ki pair table costs more than it saves


def _needle_table() -> list[tuple[int, int, npt.NDArray[np.uint8], bool]]:
    """(marker group, first-bigram code, needle bytes, can overlap itself) per needle."""
    table = []
    for group, needles in enumerate(_MARKERS.values()):
        for nd in needles:
            border = any(nd[:k] == nd[-k:] for k in range(1, len(nd)))
            table.append((group, nd[0] << 8 | nd[1], np.frombuffer(nd, dtype=np.uint8), border))
    return table


_NEEDLES: Final = _needle_table()
_NEEDLE_BOUNDS: Final = np.asarray([c + d for _, c, _, _ in _NEEDLES for d in (0, 1)])
_SMALL_TEXT: Final = 32 * 1024
_FIRST_BIGRAM = np.zeros(1 << 16, dtype=bool)
_FIRST_BIGRAM[[code for _, code, _, _ in _NEEDLES]] = True


def _count_markers(text: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Per marker group, the sum over its needles of `bytes.count` in `text` (equal counts).

    One pass finds every position where some needle's first two bytes start (a table lookup
    on the byte pairs); each needle is then checked only there, a byte at a time over the
    candidates. `bytes.count` counts non-overlapping matches from the left: the same greedy
    count is taken for the needles that can overlap themselves (`/usr/` in `/usr/usr/`).
    """
    n = text.size
    if n < _SMALL_TEXT:  # below this, 39 passes of `bytes.count` cost less than the setup
        raw = text.tobytes()
        return np.asarray([sum(raw.count(nd) for nd in group) for group in _MARKERS.values()])
    found = np.zeros(len(_MARKERS), dtype=np.int64)
    pairs = text[:-1].astype(np.uint16)
    pairs <<= 8
    pairs |= text[1:]
    cand = np.flatnonzero(np.take(_FIRST_BIGRAM, pairs))
    if cand.size == 0:
        return found
    codes = pairs[cand]
    del pairs
    order = np.argsort(codes, kind="stable")  # by needle start, positions ascending within
    codes, cand = codes[order], cand[order]
    bounds = np.searchsorted(codes, _NEEDLE_BOUNDS).tolist()
    for (group, _, needle, border), lo, hi in zip(_NEEDLES, bounds[::2], bounds[1::2], strict=True):
        if lo == hi:
            continue
        pos = cand[lo:hi]
        size = needle.size
        pos = pos[pos <= n - size]
        for k in range(2, size):
            if pos.size == 0:
                break
            pos = pos[text[pos + k] == needle[k]]
        count = int(pos.size)
        if border and count > 1 and bool((np.diff(pos) < size).any()):
            count, end = 0, -1
            for p in pos.tolist():
                if p >= end:
                    count, end = count + 1, p + size
        found[group] += count
    return found


def _string_features(arr: npt.NDArray[np.uint8]) -> list[float]:
    """Statistics of printable runs of at least `MIN_STRING` bytes (EMBER's strings).

    The file is cut into chunks of about `CHUNK_BYTES`, each cut moved forward to the next
    non-printable byte so that no string spans two chunks; temporaries stay bounded.
    """
    acc = _StringStats()
    start, n = 0, arr.size
    while start < n:
        stop = min(start + CHUNK_BYTES, n)
        while stop < n and 0x20 <= arr[stop] < 0x7F:  # move the cut past the current run
            tail = arr[stop : stop + 4096]
            nonprint = (tail < 0x20) | (tail >= 0x7F)
            stop += int(np.argmax(nonprint)) if nonprint.any() else tail.size
        _string_chunk(arr[start:stop], acc)
        start = stop
    if acc.count == 0 or acc.char_counts is None or acc.markers is None:
        return [0.0] * (6 + 0x7F - 0x20 + len(_MARKERS))
    char_dist = acc.char_counts[0x20:0x7F].astype(np.float64)
    total_chars = float(char_dist.sum())
    stats = [
        float(np.log1p(acc.count)),
        acc.total_len / acc.count / 100.0,
        float(np.log1p(acc.max_len)),
        float(np.log1p(acc.long_count)),
        float(np.log1p(total_chars)),
        _entropy_bits(char_dist),
    ]
    dist: list[float] = (char_dist / total_chars).tolist()
    markers: list[float] = np.log1p(acc.markers).tolist()
    return stats + dist + markers


def _line_features(data: bytes, facts: HeaderFacts) -> list[float]:
    onehot = [float(facts.interpreter == i) for i in INTERPRETERS]
    if facts.fmt != "script":
        return onehot + [0.0, 0.0, 0.0, 0.0]
    lengths = np.diff(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10), prepend=-1)
    if lengths.size == 0:
        lengths = np.array([len(data)])
    return onehot + [
        float(np.log1p(lengths.size)),
        float(np.log1p(lengths.mean())),
        float(np.log1p(lengths.max())),
        float((lengths > 200).mean()),
    ]


def _header_features(facts: HeaderFacts, size: int) -> list[float]:
    ent = np.asarray(facts.section_entropies, dtype=np.float64)
    sizes = np.asarray(facts.section_sizes, dtype=np.float64)
    sec = [0.0] * 9
    if ent.size:
        sec = [
            float(np.log1p(ent.size)),
            float(ent.mean()) / 8.0,
            float(ent.max()) / 8.0,
            float(ent.min()) / 8.0,
            float(ent.std()) / 8.0,
            float((ent > 7.0).sum()),
            float(facts.exec_sections),
            float(facts.write_exec_sections),
            float(sizes.max() / size) if size else 0.0,
        ]
    return (
        [float(facts.fmt == f) for f in FORMATS]
        + [
            float(facts.parse_error),
            float(facts.is_64bit),
            float(facts.is_library),
            float(facts.is_executable),
            float(facts.machine_x86),
            float(facts.machine_arm),
            float(np.log1p(facts.n_segments)),
            float(np.log1p(facts.n_load_commands)),
            float(facts.pe_gui),
            float(facts.pe_timestamp_zero),
            float(facts.pe_entry_outside_sections),
            float(facts.pe_entry_in_last_section),
            facts.overlay_ratio,
        ]
        + sec
    )


def extract_features(data: bytes, *, total_size: int | None = None) -> npt.NDArray[np.float32]:
    """Compute the `static-v1` vector of `data` (at most `MAX_BYTES` of it).

    Args:
        data: the file's bytes, or its first `MAX_BYTES` bytes.
        total_size: the file's real size when `data` is a prefix; defaults to `len(data)`.

    Returns:
        A float32 vector of length `VECTOR_LENGTH`, identical for identical input everywhere.
    """
    data = data[:MAX_BYTES]
    size = len(data)
    real_size = size if total_size is None else max(total_size, size)
    arr = np.frombuffer(data, dtype=np.uint8)
    nibble_hist, counts = _block_histograms(arr)
    byte_counts = counts.astype(np.float64)
    byte_hist = byte_counts / size if size else byte_counts
    facts = parse_headers(data)
    general = [
        float(np.log1p(real_size)),
        float(np.log1p(size)),
        float(real_size > size),
        _entropy_bits(byte_counts) / 8.0,
        float(byte_hist[0]),
        float(byte_hist[0x20:0x7F].sum()),
        float(byte_hist[0x80:].sum()),
        float(byte_hist[_TEXT].sum()),
    ]
    vec = np.concatenate(
        [
            byte_hist,
            _byte_entropy_hist(nibble_hist),
            np.asarray(_string_features(arr), dtype=np.float64),
            np.asarray(general, dtype=np.float64),
            np.asarray(_header_features(facts, size), dtype=np.float64),
            np.asarray(_line_features(data, facts), dtype=np.float64),
        ]
    )
    assert vec.size == VECTOR_LENGTH, (vec.size, VECTOR_LENGTH)
    return vec.astype(np.float32)


def extract_file(
    path: str | os.PathLike[str] | bytes, *, max_bytes: int = MAX_BYTES
) -> npt.NDArray[np.float32]:
    """Read up to `max_bytes` of a file in `CHUNK_BYTES` chunks and return its vector.

    Raises:
        OSError: the file cannot be opened or read (the caller reports it and goes on).
    """
    with open(path, "rb") as fh:
        real_size = os.fstat(fh.fileno()).st_size
        chunks: list[bytes] = []
        remaining = min(max_bytes, MAX_BYTES)
        while remaining > 0:
            chunk = fh.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    data = b"".join(chunks)
    return extract_features(data, total_size=max(real_size, len(data)))
