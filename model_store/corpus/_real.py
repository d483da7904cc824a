"""Choosing real benign files from directories, deterministically and without one folder dominating.

The Python installation fleetward runs in (standard library, site-packages, shared objects, data
files, scripts) is real software that is on every machine fleetward runs on, and it is benign;
it is the default source. Any other directory joins with `--benign-dir`.

Rules, so that the same files give the same choice: directories and names are walked in sorted
order, symlinks are never followed, only regular files between `min_bytes` and `max_bytes` are
taken, each folder (a file's parent directory, the unit the splits hold out whole) gives at most
`per_folder` files spread over its sorted list and its suffixes, and the offers are taken
round-robin over file suffixes until `max_files`. Duplicates by content are dropped later, by
sha256, by the caller.

Native binaries (ELF, PE and Mach-O shared objects and programs, known by their magic bytes)
are the exception to the per-folder cap: up to `native_max` of them join on top of
`max_files`, spread over folders the same way. They are few among the thousands of `.py`
files, yet they are the real compiled code the models must not mistake for malware; with six
per folder the corpus held about 80, and dogfooding on folders never trained on found
compression, codec and math libraries (`libzstd`, `liblz4`, `libwebp`, `cmake`) blocked.

A folder is named by its source and its path inside it (`python/lib/python3.11/json`), not by
where the source sits on this machine: the splits hash that name, so a clone, a virtualenv or an
installation at another path holds out the same folders and trains the same model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RealFile",
    "default_benign_dirs",
    "is_native_binary",
    "select_real_files",
    "source_label",
]


@dataclass(frozen=True, slots=True)
class RealFile:
    """A chosen file: its path, the folder it counts in, and the source it came from.

    The folder is named as the module docstring says (source label, then the path inside it).
    """

    path: Path
    folder: str
    source: str


def default_benign_dirs() -> tuple[Path, ...]:
    """`sys.base_prefix` and `sys.prefix` (resolved, deduplicated, sorted)."""
    return tuple(sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}))


def source_label(root: str | os.PathLike[str]) -> str:
    """The location-free name of a source directory.

    `python` for the installation, `python-env` for the virtualenv it runs in, and the absolute
    path for any other directory (a user's own folder is where it is).
    """
    r = Path(root).resolve()
    if r == Path(sys.base_prefix).resolve():
        return "python"
    if r == Path(sys.prefix).resolve():
        return "python-env"
    return str(r)


def _walk(root: Path, min_bytes: int, max_bytes: int) -> Iterable[tuple[str, list[Path]]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        keep: list[Path] = []
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if not p.is_file() or p.is_symlink():
                continue
            if min_bytes <= st.st_size <= max_bytes:
                keep.append(p)
        if keep:
            yield dirpath, keep


# ELF, PE ("MZ") and Mach-O (32/64-bit, both byte orders). Not 0xCAFEBABE: Java classes share it.
_NATIVE_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf")
_NATIVE_SUFFIXES = frozenset({"", ".so", ".pyd", ".dll", ".exe", ".dylib", ".bin"})


def is_native_binary(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with ELF, PE or Mach-O magic (False when unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_NATIVE_MAGIC)


def _may_be_native(p: Path) -> bool:
    """Worth reading the magic of: a suffix native code carries (`libz.so.1` counts as `.so`)."""
    return p.suffix.lower() in _NATIVE_SUFFIXES or ".so." in p.name


def _spread(items: Sequence[Path], k: int) -> list[Path]:
    """Up to `k` files, taken round-robin over the folder's suffixes, each suffix spread evenly.

    A folder of `.py`, `.pyc` and `.so` files then gives some of each, so the rarer kinds
    (shared objects, data files) are not crowded out by the common ones.
    """
    if len(items) <= k:
        return list(items)
    groups: dict[str, list[Path]] = {}
    for p in items:
        groups.setdefault(p.suffix, []).append(p)
    orders = [[g[j] for j in _even_order(len(g))] for g in groups.values()]
    picked: list[Path] = []
    rank = 0
    while len(picked) < k:
        for order in orders:
            if rank < len(order) and len(picked) < k:
                picked.append(order[rank])
        rank += 1
    return picked


def _even_order(n: int) -> list[int]:
    """range(n) in an order whose every prefix is spread over it: 0, n/2, n/4, 3n/4, ..."""
    out: list[int] = []
    seen: set[int] = set()
    bits = max(1, (n - 1).bit_length())
    for i in range(1 << bits):
        rev = int(format(i, f"0{bits}b")[::-1], 2)
        j = rev * n >> bits
        if j not in seen:
            seen.add(j)
            out.append(j)
    out += [j for j in range(n) if j not in seen]
    return out


def select_real_files(
    roots: Sequence[str | os.PathLike[str]],
    *,
    max_files: int,
    per_folder: int,
    min_bytes: int = 1,
    max_bytes: int = 4 << 20,
    exclude: Sequence[str | os.PathLike[str]] = (),
    native_max: int = 0,
) -> list[RealFile]:
    """Pick real files under `roots` by the rules in the module docstring.

    Each folder offers at most `per_folder` files (`_spread`); the offers are then taken
    round-robin over file suffixes, so that a kind of file that is rare but real (shared
    objects, archives, data) is not crowded out by the thousands of `.py` and `.pyc` files, and
    within a suffix over folders. `exclude` lists directories never to take files from. Then
    up to `native_max` native binaries not yet chosen join, whatever their folder's cap,
    taken round-robin over folders.
    """
    if max_files <= 0 or per_folder <= 0:
        return []
    skip = tuple(str(Path(e).resolve()) for e in exclude)
    seen: set[str] = set()
    by_suffix: dict[str, list[tuple[int, int, RealFile]]] = {}
    natives: list[tuple[int, int, RealFile]] = []
    n_folder = 0
    labelled = {source_label(r): str(Path(r).resolve()) for r in roots}
    for label, root in sorted(labelled.items()):
        for folder, files in _walk(Path(root), min_bytes, max_bytes):
            if folder in seen or any(folder == s or folder.startswith(s + os.sep) for s in skip):
                continue
            seen.add(folder)
            name = "/".join((label, *Path(folder).relative_to(root).parts))
            for rank, p in enumerate(_spread(files, per_folder)):
                item = RealFile(p, name, root)
                by_suffix.setdefault(p.suffix.lower(), []).append((rank, n_folder, item))
            if native_max > 0:
                native = [p for p in files if _may_be_native(p) and is_native_binary(p)]
                natives += [(r, n_folder, RealFile(p, name, root)) for r, p in enumerate(native)]
            n_folder += 1
    queues = [sorted(v, key=lambda t: (t[0], t[1])) for _, v in sorted(by_suffix.items())]
    chosen: list[RealFile] = []
    depth = 0
    while len(chosen) < max_files and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < max_files:
                chosen.append(q[depth][2])
        depth += 1
    taken = {f.path for f in chosen}
    extra = [f for _, _, f in sorted(natives, key=lambda t: (t[0], t[1])) if f.path not in taken]
    chosen += extra[:native_max]
    return sorted(chosen, key=lambda f: (f.folder, f.path.name))
