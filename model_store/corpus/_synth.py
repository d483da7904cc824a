"""Byte-level builders for synthetic samples: code, data, packed payloads and file containers.

Executables get structurally valid headers (ELF64, PE32+, Mach-O 64) with real section
tables, so the header facts of `static-v1` see what they would see on real files.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = [
    "code_bytes",
    "compressed_bytes",
    "data_bytes",
    "elf_file",
    "macho_file",
    "pe_file",
    "string_table",
    "xor_bytes",
]

Rng = np.random.Generator

# A skewed opcode-like distribution: a few very common bytes (REX prefixes, MOV, CALL, zero).
_CODE_P = np.full(256, 1.0)
for _b, _w in {
    0x00: 40,
    0x48: 30,
    0x89: 25,
    0x8B: 25,
    0xE8: 12,
    0xFF: 15,
    0x0F: 12,
    0x24: 10,
    0x45: 10,
    0x83: 12,
    0xC3: 6,
    0x74: 8,
    0x75: 8,
    0x85: 8,
    0x31: 5,
    0x44: 8,
}.items():
    _CODE_P[_b] = _w
_CODE_P /= _CODE_P.sum()


def code_bytes(rng: Rng, n: int, skew: float = 1.0) -> bytes:
    """Pseudo machine code; `skew` < 1 flattens the distribution (obfuscated code)."""
    p = _CODE_P**skew
    return rng.choice(256, size=n, p=p / p.sum()).astype(np.uint8).tobytes()


def data_bytes(rng: Rng, n: int) -> bytes:
    """Initialised data: zeros, small integers and pointer-like words."""
    words = rng.integers(0, 4, size=n // 8 + 1)
    vals = np.where(
        words == 0,
        0,
        np.where(
            words == 1,
            rng.integers(0, 256, size=words.size),
            0x400000 + rng.integers(0, 1 << 16, size=words.size) * 8,
        ),
    )
    return vals.astype("<u8").tobytes()[:n]


def compressed_bytes(rng: Rng, n: int) -> bytes:
    """High-entropy payload (compressed or encrypted)."""
    return rng.bytes(n)


def xor_bytes(rng: Rng, plain: bytes, key_len: int) -> bytes:
    """Plaintext under a short repeating XOR key: entropy between text and random."""
    key = rng.integers(1, 256, size=key_len, dtype=np.uint8)
    arr = np.frombuffer(plain, dtype=np.uint8)
    return (arr ^ np.resize(key, arr.size)).tobytes()


def string_table(rng: Rng, vocab: list[str], n: int) -> bytes:
    """NUL-separated strings drawn from `vocab` (with repetition)."""
    if not vocab or n <= 0:
        return b""
    picks = rng.integers(0, len(vocab), size=n)
    return b"\0".join(vocab[i].encode() for i in picks) + b"\0"


def _align(buf: bytearray, to: int) -> None:
    buf.extend(b"\0" * (-len(buf) % to))


def elf_file(sections: list[tuple[str, bytes, int]], *, library: bool = False) -> bytes:
    """ELF64 little-endian x86-64 with the given (name, bytes, flags) sections."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, _, _ in sections) + b".shstrtab\0"
    body = bytearray(b"\0" * 64)
    phnum = 4
    body.extend(b"\0" * (56 * phnum))
    offsets = []
    for _, content, _ in sections:
        _align(body, 16)
        offsets.append(len(body))
        body.extend(content)
    _align(body, 8)
    shstr_off = len(body)
    body.extend(names)
    _align(body, 8)
    shoff = len(body)
    shdrs = bytearray(b"\0" * 64)  # SHT_NULL
    name_at = 1
    for (name, content, flags), off in zip(sections, offsets, strict=True):
        shdrs.extend(
            struct.pack(
                "<IIQQQQIIQQ", name_at, 1, flags, 0x400000 + off, off, len(content), 0, 0, 16, 0
            )
        )
        name_at += len(name) + 1
    shdrs.extend(struct.pack("<IIQQQQIIQQ", name_at, 3, 0, 0, shstr_off, len(names), 0, 0, 1, 0))
    body.extend(shdrs)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack(
        "<HHIQQQIHHHHHH",
        3 if library else 2,
        62,
        1,
        0x401000,
        64,
        shoff,
        0,
        64,
        56,
        phnum,
        64,
        len(sections) + 2,
        len(sections) + 1,
    )
    body[:64] = header
    for i in range(phnum):
        struct.pack_into(
            "<IIQQQQQQ",
            body,
            64 + 56 * i,
            1,
            5 if i == 0 else 6,
            0,
            0x400000,
            0x400000,
            len(body),
            len(body),
            0x1000,
        )
    return bytes(body)


def pe_file(
    sections: list[tuple[str, bytes, int]],
    *,
    dll: bool = False,
    gui: bool = True,
    entry_section: int = 0,
    overlay: bytes = b"",
    timestamp: int = 0x5F000000,
) -> bytes:
    """PE32+ (x64) image with the given (name, bytes, characteristics) sections and overlay."""
    dos = bytearray(b"MZ" + b"\x90\0" * 29)
    dos.extend(b"\0" * (0x40 - len(dos)))
    struct.pack_into("<I", dos, 0x3C, 0x80)
    dos.extend(
        b"\x0e\x1f\xba\x0e\0\xb4\t\xcd!\xb8\x01L\xcd!This program cannot be run in DOS mode.\r\r\n$"
    )
    dos.extend(b"\0" * (0x80 - len(dos)))
    opt_size = 240
    header_size = 0x80 + 24 + opt_size + 40 * len(sections)
    raw_at = -(-header_size // 0x200) * 0x200
    raws, table, vaddr, entry = [], bytearray(), 0x1000, 0x1000
    for i, (name, content, chars) in enumerate(sections):
        raw_size = -(-len(content) // 0x200) * 0x200
        if i == entry_section:
            entry = vaddr + 0x10
        table.extend(
            struct.pack(
                "<8sIIIIIIHHI",
                name.encode()[:8],
                len(content),
                vaddr,
                raw_size,
                raw_at,
                0,
                0,
                0,
                0,
                chars,
            )
        )
        raws.append((raw_at, content.ljust(raw_size, b"\0")))
        raw_at += raw_size
        vaddr += -(-max(len(content), 1) // 0x1000) * 0x1000
    coff = struct.pack(
        "<4sHHIIIHH",
        b"PE\0\0",
        0x8664,
        len(sections),
        timestamp,
        0,
        0,
        opt_size,
        0x2022 if dll else 0x0022,
    )
    opt = bytearray(opt_size)
    struct.pack_into("<HBBIIIII", opt, 0, 0x20B, 14, 0, 0, 0, 0, entry, 0x1000)
    struct.pack_into("<H", opt, 68, 2 if gui else 3)
    out = bytearray(dos + coff + opt + table)
    out.extend(b"\0" * (raws[0][0] - len(out)) if raws else b"")
    for at, content in raws:
        out.extend(b"\0" * (at - len(out)))
        out.extend(content)
    out.extend(overlay)
    return bytes(out)


def macho_file(sections: list[tuple[str, bytes, int]], *, dylib: bool = False) -> bytes:
    """Mach-O 64-bit x86-64 with one __TEXT segment holding the given sections."""
    nsects = len(sections)
    seg_size = 72 + 80 * nsects
    header_size = 32 + seg_size
    data_at = -(-header_size // 16) * 16
    sects, at = bytearray(), data_at
    body = bytearray()
    for name, content, flags in sections:
        sects.extend(
            struct.pack(
                "<16s16sQQIIIIIIII",
                name.encode()[:16],
                b"__TEXT",
                at,
                len(content),
                at,
                4,
                0,
                0,
                flags,
                0,
                0,
                0,
            )
        )
        body.extend(content)
        at += len(content)
    seg = struct.pack("<II16sQQQQiiII", 0x19, seg_size, b"__TEXT", 0, at, 0, at, 7, 5, nsects, 0)
    head = struct.pack("<IiiIIII", 0xFEEDFACF, 0x01000007, 3, 6 if dylib else 2, 1, seg_size, 0)
    head += b"\0" * 4
    out = bytearray(head + seg + sects)
    out.extend(b"\0" * (data_at - len(out)))
    out.extend(body)
    return bytes(out)
