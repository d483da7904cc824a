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
    """Per-block (1024 bytes) high-nibble counts, plus the file's byte counts.

    The byte counts come two bytes at a time (`_pair_byte_counts`); the nibble counts of whole
    blocks from bit planes (`_nibble_counts`), `_NIBBLE_PIECE` bytes at a time so that
    temporaries stay bounded whatever the file size; a trailing partial block is counted alone.
    """
    n = arr.size
    n_blocks = -(-n // _BLOCK)
    full = n // _BLOCK
    nibble_hist = np.empty((n_blocks, 16), dtype=np.int64)
    step = _NIBBLE_PIECE // _BLOCK
    for first in range(0, full, step):
        last = min(first + step, full)
        nibble_hist[first:last] = _nibble_counts(arr[first * _BLOCK : last * _BLOCK])
    if full < n_blocks:
        nibble_hist[full] = np.bincount(arr[full * _BLOCK :] >> 4, minlength=16)
    byte_counts = _pair_byte_counts(arr) if n >= _PAIR_MIN else count_bytes(arr)
    return nibble_hist, byte_counts


_NIBBLE_PIECE: Final = 256 * 1024  # about 1 MiB of temporaries per piece
_M8: Final = np.uint64(0x00FF00FF00FF00FF)
_SUM16: Final = np.uint64(0x0001000100010001)
_POPCOUNT8: Final = np.asarray([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _nibble_counts(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """How often each high nibble (0..15) occurs in each whole 1024-byte block of `blocks`.

    Bit k (4..7) of every byte is packed into a plane, one bit per byte (a block is 16 words of
    64 bits); a nibble value is one AND-combination of the four planes and their complements,
    and its count in a block is the popcount of that block's 16 words: no per-byte index array
    and no `np.bincount` (which widens every byte to an 8-byte index first).
    """
    n_blocks = blocks.size // _BLOCK
    planes = np.empty((4, 2, blocks.size // 64), dtype=np.uint64)  # [bit - 4, clear/set]
    for k in range(4):
        packed = np.packbits(blocks & np.uint8(0x10 << k), bitorder="little")
        planes[k, 1] = packed.view(np.uint64)
        np.invert(planes[k, 1], out=planes[k, 0])
    low = (planes[1][:, None] & planes[0][None, :]).reshape(4, -1)  # value bits 5, 4
    high = (planes[3][:, None] & planes[2][None, :]).reshape(4, -1)  # value bits 7, 6
    combos = (high[:, None] & low[None, :]).reshape(16, n_blocks, 16)  # [value, block, word]
    per_block = _block_popcounts(combos)
    out: npt.NDArray[np.int64] = per_block.T.astype(np.int64)
    return out


def _block_popcounts(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Set bits in each row of 16 words (`words` shaped (..., 16)), at most 1024 per row."""
    if not hasattr(np, "bitwise_count"):  # numpy < 2: a table of byte popcounts
        per_byte = np.take(_POPCOUNT8, words.view(np.uint8))
        summed: npt.NDArray[np.uint64] = per_byte.sum(axis=-1, dtype=np.uint64)
        return summed
    lanes = np.bitwise_count(words).view(np.uint64)  # 8 byte lanes of <= 64 per word
    pair = lanes[..., 0] + lanes[..., 1]  # byte lanes <= 128: no carry
    pair = (pair & _M8) + ((pair >> np.uint64(8)) & _M8)  # 16-bit lanes <= 256
    total: npt.NDArray[np.uint64] = (pair * _SUM16) >> np.uint64(48)  # the 4 lanes' sum
    return total


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
    # Sums per (entropy bin, nibble) of whole numbers: exact in any order, so equal to the
    # one-hot matrix product they replace, without a BLAS call (whose threads, woken for a
    # 16 MiB file, spin on the cores the exec being decided waits for).
    cells = (bins[:, None] * 16 + _NIBBLE_VALUES).ravel()
    out = np.bincount(cells, weights=windows.ravel(), minlength=256)
    normalised: npt.NDArray[np.float64] = out / out.sum()
    return normalised


_NIBBLE_VALUES: Final = np.arange(16, dtype=np.int64)


@dataclass(slots=True)
class _StringStats:
    count: int = 0
    total_len: int = 0
    max_len: int = 0
    long_count: int = 0
    char_counts: npt.NDArray[np.int64] | None = None
    markers: npt.NDArray[np.int64] | None = None


def _string_chunk(
    arr: npt.NDArray[np.uint8],
    acc: _StringStats,
    arr_counts: npt.NDArray[np.int64] | None = None,
) -> None:
    """Add the printable runs of one chunk (that starts and ends on a run boundary) to `acc`.

    `starts[i]` says a run of `MIN_STRING` printables starts at i: a long-enough run of L bytes
    is exactly a run of L - MIN_STRING + 1 in `starts`, so the lengths come from the edges of
    `starts` alone. The strings are gathered with the one byte after each (never printable, a
    run being maximal) as separator: no needle spans it, and only printable counts are used.
    Given `arr_counts` (the chunk's byte counts), mostly-string text counts what lies outside.
    """
    n_bytes = arr.size
    span = n_bytes - MIN_STRING + 1
    if span <= 0:
        return
    mask = np.less(arr - np.uint8(0x20), 0x7F - 0x20)  # 0x20 <= byte < 0x7F, in two passes
    starts = mask[:span].copy()
    for k in range(1, MIN_STRING):
        starts &= mask[k : span + k]
    del mask
    edges = np.flatnonzero(starts[1:] != starts[:-1]) + 1
    if edges.size == 0 and not starts[0]:
        return
    bounds = np.concatenate(([0], edges, [span]))
    first = 0 if starts[0] else 1
    lengths = np.diff(bounds)[first::2] + (MIN_STRING - 1)
    extents = lengths + 1  # each string and the byte after it
    begins = bounds[first::2][: lengths.size]
    if begins[-1] + lengths[-1] == n_bytes:
        extents[-1] -= 1  # the last string ends the chunk
    total = int(extents.sum())
    if total < _GATHER_BELOW * n_bytes:  # sparse strings (binaries): gather by index
        offsets = np.cumsum(extents) - extents
        idx = np.repeat(begins - offsets, extents)
        idx += np.arange(total)
        joined = arr[idx]
        del idx
    else:  # dense (text): one boolean mask over the chunk costs less than 8-byte indices
        keep = np.zeros(n_bytes, dtype=bool)
        for k in range(MIN_STRING + 1):
            keep[k : k + span] |= starts[: n_bytes - k]
        joined = arr[keep]
        del keep
    del starts
    acc.count += int(lengths.size)
    acc.total_len += int(lengths.sum())
    acc.max_len = max(acc.max_len, int(lengths.max()))
    acc.long_count += int((lengths >= 100).sum())
    outside = n_bytes - total
    if arr_counts is not None and outside < _GATHER_BELOW * n_bytes:
        gap_starts = np.concatenate(([0], begins + extents))
        gaps = np.concatenate((begins, [n_bytes])) - gap_starts
        idx = np.repeat(gap_starts - (np.cumsum(gaps) - gaps), gaps)
        idx += np.arange(outside)
        counts = arr_counts - count_bytes(arr[idx])  # what is not a string or a separator
        del idx
    elif joined.size >= _PAIR_MIN:
        counts = _pair_byte_counts(joined)
    else:
        counts = count_bytes(joined)
    acc.char_counts = counts if acc.char_counts is None else acc.char_counts + counts
    upper = joined - np.uint8(0x41)  # 'A'..'Z' -> 0..25, everything else wraps above
    upper = np.less(upper, 26, out=upper.view(bool)).view(np.uint8)
    upper <<= 5
    joined |= upper  # what `bytes.lower` does: ASCII only, +0x20 on 'A'..'Z'
    del upper
    found = _count_markers(joined)
    acc.markers = found if acc.markers is None else acc.markers + found


_GATHER_BELOW: Final = 0.25  # strings under this share of a chunk are gathered by index


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


def _string_features(
    arr: npt.NDArray[np.uint8], arr_counts: npt.NDArray[np.int64] | None = None
) -> list[float]:
    """Statistics of printable runs of at least `MIN_STRING` bytes (EMBER's strings).

    The file is cut into chunks of about `CHUNK_BYTES`, each cut moved forward to the next
    non-printable byte so that no string spans two chunks; temporaries stay bounded.
    `arr_counts`, the byte counts of all of `arr`, serve when it is a single chunk.
    """
    acc = _StringStats()
    start, n = 0, arr.size
    while start < n:
        stop = min(start + CHUNK_BYTES, n)
        while stop < n and 0x20 <= arr[stop] < 0x7F:  # move the cut past the current run
            tail = arr[stop : stop + 4096]
            nonprint = (tail < 0x20) | (tail >= 0x7F)
            stop += int(np.argmax(nonprint)) if nonprint.any() else tail.size
        whole = start == 0 and stop == n
        _string_chunk(arr[start:stop], acc, arr_counts if whole else None)
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
            np.asarray(_string_features(arr, counts), dtype=np.float64),
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
