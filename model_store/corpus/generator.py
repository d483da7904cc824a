"""The corpus: seeded synthetic families with realistic overlap, plus real benign files.

No real malware is brought here. Families are generated from byte-level building blocks and
string vocabularies that overlap on purpose: packed benign installers, admin tools with alarming
strings, org-specific in-house software (some of it packed with a custom packer), and malware
that borrows benign strings. Samples come in two eras: era 2 adds new malware (a loader shipped
through the same commercial protector that some orgs use for their in-house tools, and a Linux
coin miner), so that a model trained later catches them and makes mistakes of its own.

Benign data is real as well as synthetic. Real files come by default from the Python installation
fleetward runs in (`sys.base_prefix`, `sys.prefix`) and from any `benign_dirs`;
`model_store.corpus._real` chooses them (sorted walk, size caps, a cap per folder) and each keeps
its source folder (`SampleRecord.folder`), the unit that held-out evaluation keeps out of training
whole. Synthetic benign families cover the everyday data an agent meets besides programs
(`model_store.corpus._everyday`: tiny text files, logs, configuration, markup, source code, locale
and time-zone data, fonts, images, archives) and the package maintainer scripts a Debian-family
machine holds by the hundred (`model_store.corpus._maintainer`), the last drawn after the plan from
a stream of their own (`SUPPLEMENT_FAMILIES`), so adding them redrew no other sample.

Every sample's `static-v1` vector is computed once by `agent.features` and cached beside the
manifest (`features.static-v1.npy`, rows in manifest order).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.features import SCHEMA, extract_features
from model_store.corpus import _synth as syn
from model_store.corpus._everyday import EVERYDAY_BUILDERS
from model_store.corpus._maintainer import maintainer_script
from model_store.corpus._real import default_benign_dirs, is_native_binary, select_real_files
from model_store.corpus._vocab import VOCAB
from model_store.errors import CorpusError

__all__ = [
    "FAMILIES",
    "FIELD_ONLY_FAMILIES",
    "N_INHOUSE",
    "REAL_FAMILY",
    "SUPPLEMENT_FAMILIES",
    "Corpus",
    "Family",
    "SampleRecord",
    "load_corpus",
    "make_corpus",
]

Rng = np.random.Generator
Progress = Callable[[int, int], None]
N_INHOUSE = 24
# Families a vendor never has in its lab: customers' in-house software is met only in the field,
# through telemetry. Training, calibration and the release gate's golden set leave them out; the
# transition report and the simulator are where they show.
FIELD_ONLY_FAMILIES: tuple[str, ...] = ("inhouse",)
REAL_FAMILY = "real_benign"
_MANIFEST = "samples.jsonl"
_META = "corpus.json"
_FEATURES = f"features.{SCHEMA.name}.npy"


@dataclass(frozen=True, slots=True)
class Family:
    """A family of samples: label, the era it appears in, its share and its builder."""

    name: str
    label: int
    era: int
    weight: float
    build: Callable[[Rng, int], bytes]


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One sample of the corpus; its bytes live at `path` (relative to the corpus root)."""

    sha256: str
    family: str
    label: int
    era: int
    org_hint: int
    size: int
    path: str
    folder: str = ""  # real files: the source folder (the unit of leave-folder-out splits)

    @property
    def is_real(self) -> bool:
        """True for real files taken from a directory (not generated)."""
        return bool(self.folder)

    @property
    def is_malicious(self) -> bool:
        """True for samples of a malicious family."""
        return self.label == 1


def _size(rng: Rng, median_kb: float, sigma: float = 0.8, cap_kb: int = 3072) -> int:
    return int(min(max(rng.lognormal(np.log(median_kb * 1024), sigma), 2048), cap_kb * 1024))


def _strings(
    rng: Rng, main: tuple[str, ...], n: int, noise: tuple[str, ...] = (), p: float = 0.0
) -> bytes:
    vocab = list(main) + [s for s in noise if rng.random() < p]
    return syn.string_table(rng, vocab, n)


def _vocab(*names: str) -> tuple[str, ...]:
    return tuple(s for n in names for s in VOCAB[n])


def _inhouse_vocab(k: int) -> tuple[str, ...]:
    return (
        f"Acme{k} Internal Tools",
        f"\\\\fs{k:02d}.corp.example\\share",
        f"https://intranet{k}.corp.example/api",
        f"acme{k}_sync_service",
        f"Copyright (C) Acme{k} Corp IT",
        f"ACME{k}_CONFIG",
        f"/opt/acme{k}/bin",
        f"license-server-{k}.corp.example:27000",
        "config.ini",
        "service account",
        "token",
    )


# --- benign builders -------------------------------------------------------------------------


def _elf_tool(rng: Rng, _: int) -> bytes:
    size = _size(rng, 60)
    return syn.elf_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.6)), 0x6),
            (
                ".rodata",
                _strings(rng, _vocab("libc", "cli"), int(size * 0.006) + 20, VOCAB["shell"], 0.05),
                0x2,
            ),
            (".data", syn.data_bytes(rng, int(size * 0.15)), 0x3),
        ]
    )


def _elf_lib(rng: Rng, _: int) -> bytes:
    size = _size(rng, 180)
    return syn.elf_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.55)), 0x6),
            (".rodata", _strings(rng, _vocab("libc"), int(size * 0.008) + 40), 0x2),
            (".data", syn.data_bytes(rng, int(size * 0.2)), 0x3),
            (".gnu_debugdata", syn.compressed_bytes(rng, int(size * rng.uniform(0, 0.1))), 0x0),
        ],
        library=True,
    )


def _pe_app(rng: Rng, dll: int) -> bytes:
    size = _size(rng, 90)
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.5)), 0x60000020),
            (
                ".rdata",
                _strings(rng, VOCAB["winapp"], int(size * 0.006) + 30, VOCAB["admin"], 0.03),
                0x40000040,
            ),
            (".data", syn.data_bytes(rng, int(size * 0.15)), 0xC0000040),
            (
                ".rsrc",
                syn.data_bytes(rng, int(size * 0.1))
                + syn.compressed_bytes(rng, int(size * rng.uniform(0, 0.25))),
                0x40000040,
            ),
        ],
        dll=bool(dll),
        gui=rng.random() < 0.7,
    )


def _macho_app(rng: Rng, _: int) -> bytes:
    size = _size(rng, 80)
    return syn.macho_file(
        [
            ("__text", syn.code_bytes(rng, int(size * 0.6)), 0x80000400),
            ("__cstring", _strings(rng, _vocab("macos", "cli"), int(size * 0.005) + 20), 0x2),
            ("__const", syn.data_bytes(rng, int(size * 0.2)), 0x0),
        ],
        dylib=rng.random() < 0.3,
    )


def _script(
    rng: Rng,
    shebang: str,
    vocab: tuple[str, ...],
    n: int,
    noise: tuple[str, ...] = (),
    p: float = 0.0,
) -> bytes:
    lines = list(vocab) + [s for s in noise if rng.random() < p]
    picks = rng.integers(0, len(lines), size=n)
    body = "\n".join(("    " * int(rng.integers(0, 3))) + lines[i] for i in picks)
    return (shebang + "\n" + body + "\n").encode()


def _py_script(rng: Rng, _: int) -> bytes:
    return _script(
        rng,
        "#!/usr/bin/env python3",
        VOCAB["python"],
        int(rng.integers(20, 600)),
        VOCAB["admin"],
        0.05,
    )


def _sh_script(rng: Rng, _: int) -> bytes:
    return _script(
        rng, "#!/bin/sh", VOCAB["shell"], int(rng.integers(10, 300)), VOCAB["sh_downloader"], 0.01
    )


def _document(rng: Rng, _: int) -> bytes:
    size = _size(rng, 50)
    text = _strings(rng, VOCAB["doc"], max(10, size // 200)).replace(b"\0", b"\n")
    kind = rng.integers(0, 3)
    if kind == 0:
        return (
            b"%PDF-1.7\n"
            + text[: size // 4]
            + b"\nstream\n"
            + syn.compressed_bytes(rng, size)
            + b"\nendstream\n%%EOF\n"
        )
    if kind == 1:
        return b"PK\x03\x04" + syn.compressed_bytes(rng, size) + b"PK\x05\x06" + text[:200]
    return text


def _installer(rng: Rng, _: int) -> bytes:
    size = _size(rng, 400, 1.0)
    packed = rng.random() < 0.35
    stub = syn.code_bytes(rng, int(size * 0.08))
    strings = _strings(rng, VOCAB["installer"] + VOCAB["winapp"], 60, VOCAB["admin"], 0.1)
    if packed:
        sections = [
            ("UPX0", b"", 0xE0000080),
            ("UPX1", syn.compressed_bytes(rng, int(size * 0.5)) + stub, 0xE0000040),
            (".rsrc", strings, 0xC0000040),
        ]
        return syn.pe_file(
            sections, entry_section=1, overlay=syn.compressed_bytes(rng, int(size * 0.3))
        )
    sections = [
        (".text", stub, 0x60000020),
        (".rdata", strings, 0x40000040),
        (".rsrc", syn.data_bytes(rng, 4096), 0x40000040),
    ]
    return syn.pe_file(
        sections, overlay=syn.compressed_bytes(rng, int(size * rng.uniform(0.5, 0.9)))
    )


def _admin_tool(rng: Rng, _: int) -> bytes:
    size = _size(rng, 120)
    strings = _strings(
        rng,
        VOCAB["admin"] + VOCAB["winapp"],
        int(size * 0.004) + 40,
        VOCAB["dropper"] + VOCAB["stealer"],
        0.15,
    )
    if rng.random() < 0.5:
        return syn.elf_file(
            [
                (".text", syn.code_bytes(rng, int(size * 0.6)), 0x6),
                (".rodata", strings, 0x2),
                (".data", syn.data_bytes(rng, int(size * 0.1)), 0x3),
            ]
        )
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.6)), 0x60000020),
            (".rdata", strings, 0x40000040),
            (".data", syn.data_bytes(rng, int(size * 0.1)), 0xC0000040),
        ],
        gui=False,
    )


_PROTECTOR_STUB = syn.code_bytes(np.random.default_rng(1234), 6000, 0.9)
_SHARED_TOOLING = ("config.ini", "service account", "license check", "update channel", "token")


def _protected(rng: Rng, payload: bytes, strings: bytes, overlay: bytes = b"") -> bytes:
    """A commercial software protector: fixed stub, XOR-encrypted payload, entry in the payload.

    Licensed in-house software of some orgs and the era-2 loader both ship through it, so a
    model that learns "protected means malicious" flags those orgs' own tools.
    """
    key = int(rng.integers(4, 16))
    return syn.pe_file(
        [
            (".text", _PROTECTOR_STUB, 0x60000020),
            (".rdata", strings, 0x40000040),
            (".shld", syn.xor_bytes(rng, payload, key), 0xE0000040),
        ],
        entry_section=2,
        overlay=overlay,
    )


def _protected_app(rng: Rng, _: int) -> bytes:
    """Commercial software licensed through the protector: large, vendor strings, overlays."""
    size = _size(rng, 300, 0.6)
    strings = _strings(rng, VOCAB["winapp"] + VOCAB["installer"], int(size * 0.002) + 40)
    payload = syn.code_bytes(rng, int(size * 0.6)) + strings
    overlay = (
        syn.compressed_bytes(rng, int(size * rng.uniform(0.1, 0.4))) if rng.random() < 0.6 else b""
    )
    return _protected(rng, payload, strings[: len(strings) // 2], overlay)


def _inhouse(rng: Rng, k: int) -> bytes:
    """Org k's own software; orgs with k % 4 == 0 license it through the software protector."""
    size = _size(rng, 100)
    strings = _strings(
        rng,
        _inhouse_vocab(k) + VOCAB["winapp"],
        int(size * 0.004) + 30,
        VOCAB["admin"] + VOCAB["installer"],
        0.3,
    )
    code = syn.code_bytes(rng, int(size * 0.6))
    if k % 4 == 0 and rng.random() < 0.8:
        return _protected(rng, code + strings, strings[: len(strings) // 3])
    if k % 2:
        return syn.elf_file(
            [
                (".text", code, 0x6),
                (".rodata", strings, 0x2),
                (".data", syn.data_bytes(rng, 8000), 0x3),
            ]
        )
    return syn.pe_file(
        [
            (".text", code, 0x60000020),
            (".rdata", strings, 0x40000040),
            (".data", syn.data_bytes(rng, 8000), 0xC0000040),
        ]
    )


def _electron_app(rng: Rng, _: int) -> bytes:
    size = _size(rng, 600, 0.7)
    strings = _strings(rng, VOCAB["winapp"] + VOCAB["installer"], 200, VOCAB["python"], 0.5)
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.3)), 0x60000020),
            (".rdata", strings, 0x40000040),
            (".rsrc", syn.compressed_bytes(rng, int(size * 0.6)), 0x40000040),
        ],
        gui=True,
    )


# --- malicious builders ----------------------------------------------------------------------


def _packed_dropper(rng: Rng, _: int) -> bytes:
    size = _size(rng, 70)
    visible = _strings(rng, VOCAB["dropper"], int(rng.integers(0, 12)), VOCAB["winapp"], 0.5)
    if rng.random() < 0.7:
        sections = [
            ("UPX0", b"", 0xE0000080),
            ("UPX1", syn.compressed_bytes(rng, int(size * 0.8)), 0xE0000040),
            (".rsrc", visible, 0xC0000040),
        ]
        return syn.pe_file(
            sections, entry_section=1, timestamp=0 if rng.random() < 0.6 else 0x5F000000
        )
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.5), 0.8), 0x60000020),
            (".rdata", visible + _strings(rng, VOCAB["dropper"], 20), 0x40000040),
            (".data", syn.compressed_bytes(rng, int(size * 0.3)), 0xC0000040),
        ]
    )


def _cred_stealer(rng: Rng, _: int) -> bytes:
    size = _size(rng, 150)
    strings = _strings(
        rng, VOCAB["stealer"] + VOCAB["winapp"], int(rng.integers(10, 80)), VOCAB["admin"], 0.3
    )
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.6)), 0x60000020),
            (".rdata", strings, 0x40000040),
            (".data", syn.data_bytes(rng, int(size * 0.2)), 0xC0000040),
        ],
        gui=rng.random() < 0.3,
    )


def _ransomware(rng: Rng, _: int) -> bytes:
    size = _size(rng, 120)
    strings = _strings(
        rng, VOCAB["ransom"], int(rng.integers(8, 60)), VOCAB["winapp"] + VOCAB["libc"], 0.4
    )
    if rng.random() < 0.3:
        return syn.elf_file(
            [
                (".text", syn.code_bytes(rng, int(size * 0.6)), 0x6),
                (".rodata", strings, 0x2),
                (".data", syn.compressed_bytes(rng, int(size * 0.2)), 0x3),
            ]
        )
    return syn.pe_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.6)), 0x60000020),
            (".rdata", strings, 0x40000040),
            (".rsrc", syn.compressed_bytes(rng, int(size * rng.uniform(0.05, 0.4))), 0x40000040),
        ]
    )


def _ps_downloader(rng: Rng, _: int) -> bytes:
    blob = syn.compressed_bytes(rng, int(rng.integers(200, 20000)))
    import base64

    body = _script(
        rng,
        "#!/usr/bin/env pwsh" if rng.random() < 0.5 else "# script",
        VOCAB["ps_downloader"],
        int(rng.integers(3, 40)),
        VOCAB["admin"],
        0.4,
    )
    return body + b"$p = '" + base64.b64encode(blob) + b"'\n"


def _sh_downloader(rng: Rng, _: int) -> bytes:
    return _script(
        rng,
        "#!/bin/bash",
        VOCAB["sh_downloader"] + VOCAB["shell"][:6],
        int(rng.integers(5, 80)),
        VOCAB["shell"],
        0.5,
    )


def _loader_v2(rng: Rng, _: int) -> bytes:
    """Era 2: ships through the same commercial protector as some orgs' in-house tools."""
    size = _size(rng, 110)
    payload = syn.code_bytes(rng, int(size * 0.6)) + _strings(rng, VOCAB["dropper"], 40)
    strings = _strings(
        rng,
        VOCAB["winapp"] + _SHARED_TOOLING,
        int(rng.integers(10, 50)),
        VOCAB["installer"] + VOCAB["admin"],
        0.4,
    )
    overlay = (
        syn.compressed_bytes(rng, int(size * rng.uniform(0, 0.2))) if rng.random() < 0.3 else b""
    )
    return _protected(rng, payload, strings, overlay)


def _elf_miner(rng: Rng, _: int) -> bytes:
    size = _size(rng, 800, 0.6)
    strings = _strings(
        rng, VOCAB["miner"] + VOCAB["libc"], int(rng.integers(10, 80)), VOCAB["sh_downloader"], 0.3
    )
    return syn.elf_file(
        [
            (".text", syn.code_bytes(rng, int(size * 0.7)), 0x6),
            (".rodata", strings, 0x2),
            (".data", syn.data_bytes(rng, int(size * 0.2)), 0x3),
        ]
    )


_EVASIVE_VOCAB = {
    "packed_dropper": "dropper",
    "cred_stealer": "stealer",
    "ransomware": "ransom",
    "ps_downloader": "ps_downloader",
    "sh_downloader": "sh_downloader",
    "loader_v2": "dropper",
    "elf_miner": "miner",
}
EVASIVE_SHARE = 0.1


def _evasive(rng: Rng, family: str) -> bytes:
    """A variant that hides among benign software: benign layout and strings, few telltales."""
    telltale = VOCAB[_EVASIVE_VOCAB[family]]
    n_bad = int(rng.integers(1, 4))
    if family in ("ps_downloader", "sh_downloader"):
        base = VOCAB["shell"] if family == "sh_downloader" else VOCAB["python"]
        return _script(rng, "#!/bin/sh", base, int(rng.integers(10, 200)), telltale, 0.15)
    size = _size(rng, 90)
    strings = _strings(rng, VOCAB["winapp"] + VOCAB["libc"], int(size * 0.005) + 30)
    strings += syn.string_table(rng, list(telltale), n_bad)
    code = syn.code_bytes(rng, int(size * 0.6))
    if family == "elf_miner" or rng.random() < 0.3:
        return syn.elf_file(
            [
                (".text", code, 0x6),
                (".rodata", strings, 0x2),
                (".data", syn.data_bytes(rng, int(size * 0.15)), 0x3),
            ]
        )
    return syn.pe_file(
        [
            (".text", code, 0x60000020),
            (".rdata", strings, 0x40000040),
            (".data", syn.data_bytes(rng, int(size * 0.15)), 0xC0000040),
        ]
    )


FAMILIES: tuple[Family, ...] = (
    Family("elf_tool", 0, 1, 10, _elf_tool),
    Family("elf_lib", 0, 1, 6, _elf_lib),
    Family("pe_app", 0, 1, 10, lambda r, _: _pe_app(r, 0)),
    Family("pe_dll", 0, 1, 6, lambda r, _: _pe_app(r, 1)),
    Family("macho_app", 0, 1, 4, _macho_app),
    Family("py_script", 0, 1, 5, _py_script),
    Family("sh_script", 0, 1, 5, _sh_script),
    Family("document", 0, 1, 5, _document),
    Family("installer", 0, 1, 6, _installer),
    Family("admin_tool", 0, 1, 5, _admin_tool),
    Family("inhouse", 0, 1, 8, _inhouse),
    Family("protected_app", 0, 1, 4, _protected_app),
    Family("electron_app", 0, 1, 3, _electron_app),
    *(Family(name, 0, 1, w, build) for name, (w, build) in EVERYDAY_BUILDERS.items()),
    Family("packed_dropper", 1, 1, 8, _packed_dropper),
    Family("cred_stealer", 1, 1, 6, _cred_stealer),
    Family("ransomware", 1, 1, 5, _ransomware),
    Family("ps_downloader", 1, 1, 4, _ps_downloader),
    Family("sh_downloader", 1, 1, 3, _sh_downloader),
    Family("loader_v2", 1, 2, 12, _loader_v2),
    Family("elf_miner", 1, 2, 4, _elf_miner),
)
# Benign families added after the plan, from a stream of their own (`weight` is their share of
# `size`): a family joins without redrawing any planned sample, so held-out malware and every
# figure pinned on a seed's draw stay comparable before and after it joined.
SUPPLEMENT_FAMILIES: tuple[Family, ...] = (
    Family("maintainer_script", 0, 1, 0.04, maintainer_script),
)
_BY_NAME = {f.name: f for f in (*FAMILIES, *SUPPLEMENT_FAMILIES)}


@dataclass(frozen=True, slots=True)
class Corpus:
    """A corpus on disk: its records and their cached `static-v1` vectors (same order)."""

    root: Path
    records: tuple[SampleRecord, ...]
    features: npt.NDArray[np.float32]
    seed: int

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """0 benign, 1 malicious, per record."""
        return np.asarray([r.label for r in self.records], dtype=np.int64)

    @property
    def eras(self) -> npt.NDArray[np.int64]:
        """The era each record belongs to."""
        return np.asarray([r.era for r in self.records], dtype=np.int64)

    def sample_path(self, record: SampleRecord) -> Path:
        """Where the sample's bytes are."""
        p = Path(record.path)
        return p if p.is_absolute() else self.root / p

    def fingerprint(self, mask: npt.NDArray[np.bool_] | None = None) -> str:
        """sha256 over the sorted sample hashes (and labels) selected by `mask`."""
        chosen = (
            self.records
            if mask is None
            else [r for r, m in zip(self.records, mask, strict=True) if m]
        )
        digest = hashlib.sha256()
        for r in sorted(chosen, key=lambda r: r.sha256):
            digest.update(f"{r.sha256}:{r.label}\n".encode())
        return digest.hexdigest()


def _plan(rng: Rng, size: int, era2_share: float) -> Iterator[tuple[Family, int, int]]:
    era1 = [f for f in FAMILIES if f.era == 1]
    w1 = np.asarray([f.weight for f in era1])
    w2 = np.asarray([f.weight for f in FAMILIES])
    for _ in range(size):
        era = 2 if rng.random() < era2_share else 1
        fams = FAMILIES if era == 2 else tuple(era1)
        w = w2 if era == 2 else w1
        fam = fams[int(rng.choice(len(fams), p=w / w.sum()))]
        org = int(rng.integers(0, N_INHOUSE)) if fam.name == "inhouse" else -1
        yield fam, era, org


def make_corpus(
    out: str | os.PathLike[str],
    *,
    seed: int = 7,
    size: int = 2000,
    era2_share: float = 0.35,
    benign_dirs: Sequence[str | os.PathLike[str]] = (),
    python_benign: bool = True,
    benign_max: int = 2000,
    benign_per_folder: int = 6,
    benign_max_bytes: int = 4 << 20,
    benign_native_max: int = 1000,
    progress: Progress | None = None,
) -> Corpus:
    """Generate `size` synthetic samples, add supplements and real benign files, cache vectors.

    The `size` samples follow the family plan; each of `SUPPLEMENT_FAMILIES` then adds its
    share of `size` from a stream of its own (seeded by `seed`), so they leave the plan's
    draw as it was.

    Real benign files come from the Python installation (`python_benign`, on by default) and
    from each of `benign_dirs`: at most `benign_max` of them, `benign_per_folder` per folder,
    each at most `benign_max_bytes`, plus up to `benign_native_max` native binaries (ELF, PE,
    Mach-O) past the per-folder cap (see `model_store.corpus._real`). The same seed, size and
    files give the same corpus byte for byte.

    Raises:
        CorpusError: the output directory already holds a corpus, or a benign dir is missing.
    """
    root = Path(out)
    if (root / _META).exists():
        raise CorpusError(f"{root} already holds a corpus; choose an empty directory")
    for d in benign_dirs:
        if not Path(d).is_dir():
            raise CorpusError(f"benign dir {d} is not a directory")
    sources = [*(default_benign_dirs() if python_benign else ()), *map(Path, benign_dirs)]
    (root / "samples").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records: list[SampleRecord] = []
    vectors: list[npt.NDArray[np.float32]] = []
    seen: set[str] = set()
    real = select_real_files(
        sources,
        max_files=benign_max,
        per_folder=benign_per_folder,
        max_bytes=benign_max_bytes,
        exclude=[root],
        native_max=benign_native_max,
    )
    supplement_rng = np.random.default_rng([seed, 1])
    supplement = [(f, 1, -1) for f in SUPPLEMENT_FAMILIES for _ in range(round(f.weight * size))]
    total = size + len(supplement) + len(real)
    # The plan is drawn lazily, between its samples' builds, as it always was.
    for i, (fam, era, org) in enumerate(itertools.chain(_plan(rng, size, era2_share), supplement)):
        if i < size:
            evasive = fam.label == 1 and rng.random() < EVASIVE_SHARE
            data = _evasive(rng, fam.name) if evasive else fam.build(rng, org)
        else:
            data = fam.build(supplement_rng, org)
        sha = hashlib.sha256(data).hexdigest()
        if sha not in seen:
            seen.add(sha)
            rel = Path("samples") / sha[:2] / sha
            (root / rel).parent.mkdir(exist_ok=True)
            (root / rel).write_bytes(data)
            records.append(
                SampleRecord(sha, fam.name, fam.label, era, org, len(data), rel.as_posix())
            )
            vectors.append(extract_features(data))
        if progress:
            progress(i + 1, total)
    for j, item in enumerate(real):
        try:
            data = item.path.read_bytes()
        except OSError:
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha not in seen:
            seen.add(sha)
            records.append(
                SampleRecord(
                    sha, REAL_FAMILY, 0, 1, -1, len(data), str(item.path), folder=item.folder
                )
            )
            vectors.append(extract_features(data))
        if progress:
            progress(size + len(supplement) + j + 1, total)
    feats = np.stack(vectors) if vectors else np.zeros((0, SCHEMA.vector_length), np.float32)
    with open(root / _MANIFEST, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(asdict(r), sort_keys=True) + "\n")
    np.save(root / _FEATURES, feats)
    real_records = [r for r in records if r.is_real]
    meta = {
        "seed": seed,
        "size": size,
        "era2_share": era2_share,
        "schema": SCHEMA.name,
        "samples": len(records),
        "real_benign": {
            "sources": [str(s) for s in sources],
            "files": len(real_records),
            "folders": len({r.folder for r in real_records}),
            "max_files": benign_max,
            "per_folder": benign_per_folder,
            "max_bytes": benign_max_bytes,
            "native_max": benign_native_max,
            "native_files": sum(1 for r in real_records if is_native_binary(r.path)),
        },
    }
    (root / _META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Corpus(root=root, records=tuple(records), features=feats, seed=seed)


def load_corpus(root: str | os.PathLike[str]) -> Corpus:
    """Open a corpus written by `make_corpus`.

    Raises:
        CorpusError: the directory is not a corpus or its feature cache does not match.
    """
    base = Path(root)
    try:
        meta = json.loads((base / _META).read_text(encoding="utf-8"))
        lines = (base / _MANIFEST).read_text(encoding="utf-8").splitlines()
        feats = np.load(base / _FEATURES)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{base} is not a fleetward corpus: {exc}") from exc
    records = tuple(SampleRecord(**json.loads(line)) for line in lines if line)
    if feats.shape != (len(records), SCHEMA.vector_length):
        raise CorpusError(f"feature cache {feats.shape} does not match {len(records)} samples")
    return Corpus(
        root=base, records=records, features=feats.astype(np.float32), seed=int(meta["seed"])
    )


def family(name: str) -> Family:
    """Look a family up by name."""
    return _BY_NAME[name]
