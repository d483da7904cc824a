"""Builders for the everyday benign data an agent meets besides programs.

A model that has only seen executables and scripts calls anything else malicious: a file
holding `hello world`, a C header, a time-zone file. These builders cover the rest of a real
disk: plain text of every size down to a few bytes, logs, CSV/JSON/YAML/INI/TOML/XML, HTML and
Markdown, source code in several languages, compiled locale catalogs and time-zone data, fonts,
images and compressed archives. Each is a structurally plausible file (the right magic numbers,
tables and entropy), drawn from a seeded generator so that a corpus is reproducible.

Compressed payloads are random bytes (`_synth.compressed_bytes`) rather than real deflate
output, so the same seed gives the same bytes whatever the zlib version.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from model_store.corpus import _synth as syn

__all__ = ["EVERYDAY_BUILDERS"]

Rng = np.random.Generator

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "which but all were when we there can one your more if will about out up them then she "
    "many some so these would other into has two like him see time could no make than first "
    "been its who now people my made over did down only way find use may water long little "
    "very after words called just where most know get through back much before go good new "
    "write our used me man too any day same right look think also around another came come "
    "work three must because does part even place well such here take why help put different "
    "away again off went old number great tell men say small every found still between name "
    "should home big give air line set own under read last never us left end along while "
    "might next sound below saw something thought both few those always show large often "
    "together asked house world going want school important until form food keep children "
    "feet land side without boy once animal life enough took four head above kind began "
    "almost live page got earth need far hand high year mother light country father let night "
    "picture being study second soon story since white ever paper hard near sentence better "
    "best across during today however sure knew it's try told young sun thing whole hear "
    "example heard several change answer room sea against top turned learn point city play "
    "toward five himself usually money seen didn't car morning I'm body upon family later turn "
    "move face door cut done group true leave color red friend pretty eat front feel fact hand "
    "configuration option default value version release install package library module file "
    "directory user system service server client request response error warning info debug "
    "function return argument parameter type class object method field table index query "
    "license copyright permission software warranty documentation example usage see also"
).split()
_IDENTS = (
    "buf len size count offset index value result status flags mode ctx state node list item "
    "key name path data info config handle stream reader writer parser token entry table "
    "cache pool queue head tail next prev parent child left right width height depth level "
    "start end begin pos limit total max min sum tmp err ret out input output source target"
).split()
_SERVICES = ("sshd", "cron", "systemd", "kernel", "nginx", "postgres", "dbus-daemon", "apt")
_TZ_ABBR = (b"UTC", b"CET", b"CEST", b"EST", b"EDT", b"PST", b"PDT", b"JST", b"GMT", b"BST")


def _words(rng: Rng, n: int) -> list[str]:
    picks = rng.integers(0, len(_WORDS), size=max(n, 0))
    return [_WORDS[i] for i in picks]


def _sentence(rng: Rng, lo: int = 4, hi: int = 16) -> str:
    w = _words(rng, int(rng.integers(lo, hi)))
    return (" ".join(w)).capitalize() + "."


def _para(rng: Rng, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


def _wrap(text: str, width: int) -> str:
    out, line = [], ""
    for w in text.split(" "):
        if line and len(line) + len(w) + 1 > width:
            out.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    out.append(line)
    return "\n".join(out)


def _ident(rng: Rng) -> str:
    a, b = rng.integers(0, len(_IDENTS), size=2)
    return f"{_IDENTS[a]}_{_IDENTS[b]}" if rng.random() < 0.5 else str(_IDENTS[a])


def _target_len(
    rng: Rng, median: float, sigma: float = 1.0, lo: int = 16, hi: int = 400_000
) -> int:
    return int(min(max(rng.lognormal(np.log(median), sigma), lo), hi))


def _fill(rng: Rng, n: int, line: Callable[[Rng], str]) -> bytes:
    parts: list[str] = []
    total = 0
    while total < n:
        s = line(rng)
        parts.append(s)
        total += len(s) + 1
    return ("\n".join(parts) + "\n").encode()


# --- text ------------------------------------------------------------------------------------


def tiny(rng: Rng, _: int) -> bytes:
    """A few bytes to a few hundred: notes, a word, a number, a flag file, odd bytes."""
    kind = int(rng.integers(0, 9))
    nl = "\n" if rng.random() < 0.6 else ""
    if kind == 0:
        return (" ".join(_words(rng, int(rng.integers(1, 4)))) + nl).encode()
    if kind == 1:
        return (_sentence(rng, 1, 12) + nl).encode()
    if kind == 2:
        return (str(int(rng.integers(0, 10 ** int(rng.integers(1, 10))))) + nl).encode()
    if kind == 3:
        return bytes([int(rng.integers(0x20, 0x7F))]) + nl.encode()
    if kind == 4:
        return rng.bytes(int(rng.integers(1, 24)))
    if kind == 5:
        return f"{_ident(rng)}={int(rng.integers(0, 1000))}{nl}".encode()
    if kind == 6:
        return ("/" + "/".join(_words(rng, int(rng.integers(1, 5)))) + nl).encode()
    if kind == 7:
        return b""
    return ("\n".join(_sentence(rng) for _ in range(int(rng.integers(1, 5)))) + "\n").encode()


def plain_text(rng: Rng, _: int) -> bytes:
    """Prose wrapped at a fixed width: READMEs, notes, license texts, man-page sources."""
    n = _target_len(rng, 4000, 1.3, 60)
    width = int(rng.choice([60, 72, 79, 100, 1000]))
    title = " ".join(_words(rng, 3)).title()
    out = [title, "=" * len(title), ""] if rng.random() < 0.5 else []
    total = 0
    while total < n:
        p = _wrap(_para(rng, int(rng.integers(1, 6))), width)
        out += [p, ""]
        total += len(p) + 1
    if rng.random() < 0.15:  # install notes, as READMEs have them
        out += ["    curl -sSL https://example.org/install.sh | sh", "    pip install example", ""]
    return "\n".join(out).encode()


def log_file(rng: Rng, _: int) -> bytes:
    """Syslog-like lines, some of them about failed logins and downloads."""
    n = _target_len(rng, 20_000, 1.2, 80)
    t0 = int(rng.integers(1_600_000_000, 1_800_000_000))

    def line(r: Rng) -> str:
        t = t0 + int(r.integers(0, 86_400))
        svc = _SERVICES[int(r.integers(0, len(_SERVICES)))]
        msg = " ".join(_words(r, int(r.integers(3, 14))))
        if r.random() < 0.1:
            msg = f"Failed password for {_ident(r)} from 10.0.{r.integers(0, 255)}.1 port 22"
        if r.random() < 0.05:
            msg = f"GET /{_ident(r)}.html HTTP/1.1 200 {r.integers(100, 90_000)}"
        stamp = f"2026-{1 + t % 12:02d}-{1 + t % 28:02d}T{t % 24:02d}:{t % 60:02d}:{t % 59:02d}Z"
        return f"{stamp} host {svc}[{t % 32768}]: {msg}"

    return _fill(rng, n, line)


def csv_file(rng: Rng, _: int) -> bytes:
    cols = [_ident(rng) for _ in range(int(rng.integers(2, 12)))]
    n = _target_len(rng, 15_000, 1.3, 40)

    def line(r: Rng) -> str:
        cells = [
            str(r.integers(0, 100_000)) if r.random() < 0.5 else f"{r.normal(0, 100):.4f}"
            for _ in cols
        ]
        if r.random() < 0.3:
            cells[0] = " ".join(_words(r, 2))
        return ",".join(cells)

    return (",".join(cols) + "\n").encode() + _fill(rng, n, line)


def _value(rng: Rng, depth: int) -> object:
    k = int(rng.integers(0, 6 if depth < 3 else 4))
    if k == 0:
        return int(rng.integers(-1000, 100_000))
    if k == 1:
        return " ".join(_words(rng, int(rng.integers(1, 6))))
    if k == 2:
        return bool(rng.random() < 0.5)
    if k == 3:
        return round(float(rng.normal(0, 50)), 3)
    if k == 4:
        return [_value(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    return {_ident(rng): _value(rng, depth + 1) for _ in range(int(rng.integers(1, 6)))}


def structured(rng: Rng, _: int) -> bytes:
    """JSON, YAML, INI, TOML or XML configuration and data files."""
    import json

    kind = int(rng.integers(0, 5))
    doc = {_ident(rng): _value(rng, 1) for _ in range(int(rng.integers(2, 30)))}
    if kind == 0:
        indent = None if rng.random() < 0.3 else 2
        return json.dumps(doc, indent=indent).encode()
    lines: list[str] = []
    if kind == 4:
        lines.append('<?xml version="1.0" encoding="UTF-8"?>')
        lines.append(f"<{_ident(rng)}>")
    for sec, val in doc.items():
        items = val.items() if isinstance(val, dict) else [(sec, val)]
        if kind == 1:
            lines.append(f"{sec}:")
            lines += [f"  {k}: {v!s}" for k, v in items]
        elif kind == 2:
            lines.append(f"[{sec}]")
            lines += [f"{k} = {v!s}" for k, v in items] + [""]
        elif kind == 3:
            lines.append(f"[{sec}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in items] + [""]
        else:
            lines += [f"  <{k}>{v!s}</{k}>" for k, v in items]
    if kind == 4:
        lines.append("</root>")
    if rng.random() < 0.5:
        lines.insert(0, "# " + _sentence(rng))
    return ("\n".join(lines) + "\n").encode()


def markup(rng: Rng, _: int) -> bytes:
    """HTML pages and Markdown/reStructuredText documents."""
    n = _target_len(rng, 8000, 1.2, 100)
    if rng.random() < 0.5:
        head = f"<!DOCTYPE html>\n<html><head><title>{_sentence(rng, 2, 5)}</title>\n"
        head += '<meta charset="utf-8"><link rel="stylesheet" href="style.css"></head><body>\n'

        def line(r: Rng) -> str:
            tag = ("p", "li", "h2", "td", "div")[int(r.integers(0, 5))]
            link = (
                f' <a href="https://example.org/{_ident(r)}">{_ident(r)}</a>'
                if r.random() < 0.2
                else ""
            )
            return f"<{tag}>{_sentence(r)}{link}</{tag}>"

        return head.encode() + _fill(rng, n, line) + b"</body></html>\n"

    def md(r: Rng) -> str:
        k = int(r.integers(0, 6))
        if k == 0:
            return "\n## " + " ".join(_words(r, 3)).title() + "\n"
        if k == 1:
            return f"- {_sentence(r)}"
        if k == 2:
            return f"```\n{_ident(r)} --{_ident(r)} {_words(r, 1)[0]}\n```"
        return _wrap(_para(r, int(r.integers(1, 4))), 80)

    return ("# " + " ".join(_words(rng, 3)).title() + "\n\n").encode() + _fill(rng, n, md)


_C_TYPES = ("int", "unsigned int", "size_t", "char *", "const char *", "void *", "uint32_t")


def source_code(rng: Rng, _: int) -> bytes:
    """C and C headers, JavaScript, Java, Go, Rust, Perl modules, Ruby and Python sources."""
    lang = int(rng.integers(0, 8))
    n = _target_len(rng, 6000, 1.2, 80)
    if lang in (0, 1):  # C source or header
        guard = _ident(rng).upper() + "_H"
        head = f"/* {_sentence(rng)}\n * Copyright (C) 2019 {_words(rng, 1)[0]}\n */\n"
        if lang == 1:
            head += f"#ifndef {guard}\n#define {guard}\n"
        head += "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n"

        def c(r: Rng) -> str:
            k = int(r.integers(0, 5))
            t = _C_TYPES[int(r.integers(0, len(_C_TYPES)))]
            if k == 0:
                return f"#define {_ident(r).upper()} {r.integers(0, 4096)}"
            if k == 1:
                return f"extern {t} {_ident(r)}({t} {_ident(r)}, {t} {_ident(r)});"
            if k == 2:
                return f"struct {_ident(r)} {{\n    {t} {_ident(r)};\n    {t} {_ident(r)};\n}};"
            if k == 3:
                cond = f"    if ({_ident(r)} > {r.integers(0, 99)}) {{\n"
                return cond + f"        return {_ident(r)};\n    }}"
            return f"/* {_sentence(r)} */"

        body = _fill(rng, n, c)
        return head.encode() + body + (f"#endif /* {guard} */\n".encode() if lang == 1 else b"")

    def js(r: Rng) -> str:
        return f"  const {_ident(r)} = {_ident(r)}.{_ident(r)}({_ident(r)}, {r.integers(0, 99)});"

    def java(r: Rng) -> str:
        return f"    private final int {_ident(r)} = {r.integers(0, 99)}; // {_sentence(r, 2, 6)}"

    def go(r: Rng) -> str:
        call = f"\t{_ident(r)} := {_ident(r)}.{_ident(r).title()}({_ident(r)})"
        return call + "\n\tif err != nil {\n\t\treturn err\n\t}"

    def rust(r: Rng) -> str:
        return f"    let {_ident(r)}: usize = {_ident(r)}.{_ident(r)}()?; // {_sentence(r, 2, 5)}"

    def perl(r: Rng) -> str:
        return f"    my ${_ident(r)} = ${_ident(r)}->{{{_ident(r)}}} || '{_words(r, 1)[0]}';"

    def ruby(r: Rng) -> str:
        return f"    {_ident(r)} = {_ident(r)}.map {{ |x| x.{_ident(r)} }}"

    def py(r: Rng) -> str:
        call = f"        {_ident(r)} = self.{_ident(r)}({_ident(r)}, {r.integers(0, 9)})"
        return f"{call}  # {_words(r, 1)[0]}"

    heads = (
        "'use strict';\nimport { readFile } from 'fs';\n\nexport function main() {\n",
        "package org.example;\n\nimport java.util.List;\n\npublic class Main {\n",
        'package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\nfunc run() error {\n',
        "use std::io;\n\n/// Reads the input.\npub fn run() -> io::Result<()> {\n",
        "package Example::Module;\n\nuse strict;\nuse warnings;\n\nsub new {\n",
        "# frozen_string_literal: true\n\nmodule Example\n  def self.run\n",
        '"""'
        + _sentence(rng)
        + '"""\n\nimport os\nimport sys\n\n\nclass Thing:\n    def run(self):\n',
    )
    lines = (js, java, go, rust, perl, ruby, py)
    k = lang - 1
    return heads[k].encode() + _fill(rng, n, lines[k]) + b"}\n"


# --- binary data ------------------------------------------------------------------------------


def locale_catalog(rng: Rng, _: int) -> bytes:
    """A GNU gettext `.mo` catalog: header, two offset tables, then original/translated strings."""
    n = int(rng.integers(5, 400))
    origs = [" ".join(_words(rng, int(rng.integers(1, 10)))).encode() for _ in range(n)]
    trans = [" ".join(_words(rng, int(rng.integers(1, 10)))).title().encode() for _ in range(n)]
    table_at = 28
    strings_at = table_at + 16 * n
    blob = bytearray()
    otab, ttab = bytearray(), bytearray()
    for s in origs:
        otab += struct.pack("<II", len(s), strings_at + len(blob))
        blob += s + b"\0"
    for s in trans:
        ttab += struct.pack("<II", len(s), strings_at + len(blob))
        blob += s + b"\0"
    head = struct.pack("<IIIIIII", 0x950412DE, 0, n, table_at, table_at + 8 * n, 0, 0)
    return head + otab + ttab + bytes(blob)


def tz_data(rng: Rng, _: int) -> bytes:
    """A TZif v2 time-zone file: sorted transition times, type indices, ttinfo, abbreviations."""
    n = int(rng.integers(0, 240))
    types = int(rng.integers(1, 6))
    times = np.sort(rng.integers(-2_000_000_000, 2_100_000_000, size=n)).astype(">i4")
    idx = rng.integers(0, types, size=n).astype(np.uint8)
    abbr = b"\0".join(_TZ_ABBR[int(i)] for i in rng.integers(0, len(_TZ_ABBR), size=types)) + b"\0"
    ttinfo = b"".join(
        struct.pack(">iBB", int(rng.integers(-12, 13)) * 3600, int(i % 2), 0) for i in range(types)
    )
    counts = struct.pack(">6I", 0, 0, 0, n, types, len(abbr))
    v1 = b"TZif2" + b"\0" * 15 + counts + times.tobytes() + idx.tobytes() + ttinfo + abbr
    times64 = times.astype(">i8")
    v2 = b"TZif2" + b"\0" * 15 + counts + times64.tobytes() + idx.tobytes() + ttinfo + abbr
    return v1 + v2 + b"\n" + _TZ_ABBR[int(rng.integers(0, len(_TZ_ABBR)))] + b"-1\n"


def binary_data(rng: Rng, _: int) -> bytes:
    """Numeric tables, databases, terminfo and other structured binary data."""
    kind = int(rng.integers(0, 4))
    n = _target_len(rng, 12_000, 1.3, 32, 2_000_000)
    if kind == 0:  # float arrays (.npy-like)
        arr = rng.normal(0, 1, size=n // 4).astype("<f4")
        return b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False}\n" + arr.tobytes()
    if kind == 1:  # sqlite pages: mostly zeros, small integers and short text records
        page = bytearray(b"SQLite format 3\0")
        page += struct.pack(">HBBBBBBIIII", 4096, 1, 1, 0, 64, 32, 32, 1, n // 4096 + 1, 0, 0)
        out = bytes(page) + syn.data_bytes(rng, n // 2)
        recs = "\0".join(" ".join(_words(rng, 3)) for _ in range(n // 200 + 1)).encode()
        return out + recs
    if kind == 2:  # terminfo (legacy format): header, names, booleans, numbers, strings
        names = f"{_ident(rng)}|{_sentence(rng, 2, 4)}".encode() + b"\0"
        nums = rng.integers(0, 200, size=40).astype("<i2").tobytes()
        strs = b"\x1b[%i%p1%d;%p2%dH\0\x1b[H\0\x1b[2J\0" * int(rng.integers(1, 30))
        head = struct.pack("<6h", 0o432, len(names), 30, 20, 60, len(strs))
        return head + names + bytes(rng.integers(0, 2, 30).astype(np.uint8)) + nums + strs
    words = rng.integers(0, 1 << 16, size=n // 2).astype("<u2")  # indexes, packed small ints
    return words.tobytes()


def font(rng: Rng, _: int) -> bytes:
    """A TrueType/OpenType font: table directory, glyph outlines (int16 points), name strings."""
    if rng.random() < 0.25:  # WOFF2: a small header and a brotli payload
        size = _target_len(rng, 40_000, 0.8, 2000, 1_500_000)
        return b"wOF2\x00\x01\x00\x00" + struct.pack(">I", size) + syn.compressed_bytes(rng, size)
    n_glyphs = int(rng.integers(50, 3000))
    pts = rng.normal(0, 300, size=n_glyphs * int(rng.integers(8, 40))).astype(">i2").tobytes()
    names = " ".join(_words(rng, 12)).title().encode("utf-16-be")
    loca = np.cumsum(rng.integers(0, 120, size=n_glyphs + 1)).astype(">u4").tobytes()
    tables = [(b"cmap", rng.integers(0, 4000, 600).astype(">u2").tobytes()), (b"glyf", pts)]
    tables += [(b"head", b"\0\x01\0\0" + rng.bytes(50)), (b"loca", loca), (b"name", names * 8)]
    tables += [(b"hmtx", rng.integers(0, 2000, n_glyphs * 2).astype(">u2").tobytes())]
    offset = 12 + 16 * len(tables)
    dirs, body = bytearray(), bytearray()
    for tag, data in tables:
        dirs += struct.pack(">4sIII", tag, 0, offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    magic = b"OTTO" if rng.random() < 0.2 else b"\0\x01\0\0"
    return magic + struct.pack(">HHHH", len(tables), 128, 3, 32) + bytes(dirs) + bytes(body)


def image(rng: Rng, _: int) -> bytes:
    """PNG, JPEG, GIF, BMP/ICO (raw pixels) and SVG images."""
    kind = int(rng.integers(0, 5))
    size = _target_len(rng, 9000, 1.4, 60, 3_000_000)
    w, h = int(rng.integers(8, 2000)), int(rng.integers(8, 2000))
    if kind == 0:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + struct.pack(">I", 13)
            + b"IHDR"
            + ihdr
            + rng.bytes(4)
            + struct.pack(">I", size)
            + b"IDAT"
            + syn.compressed_bytes(rng, size)
            + rng.bytes(4)
            + b"\0\0\0\0IEND\xaeB`\x82"
        )
    if kind == 1:
        exif = b"Exif\0\0" + (" ".join(_words(rng, 4))).encode() if rng.random() < 0.5 else b""
        return (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01"
            + exif
            + syn.compressed_bytes(rng, size)
            + b"\xff\xd9"
        )
    if kind == 2:
        return (
            b"GIF89a"
            + struct.pack("<HH", w, h)
            + b"\xf7\0\0"
            + syn.compressed_bytes(rng, size)
            + b";"
        )
    if kind == 3:  # raw pixels: smooth gradients and flat areas, low entropy per window
        base = np.cumsum(rng.integers(-2, 3, size=size), dtype=np.int64) % 256
        pix = np.where(rng.random(size) < 0.3, 255, base).astype(np.uint8)
        head = b"BM" + struct.pack("<IHHIIiiHHI", size + 54, 0, 0, 54, 40, w, h, 1, 24, 0)
        return (head if rng.random() < 0.6 else b"\0\0\x01\0\x01\0") + pix.tobytes()

    def svg(r: Rng) -> str:
        pts = " ".join(
            f"{r.integers(0, 500)},{r.integers(0, 500)}" for _ in range(int(r.integers(2, 12)))
        )
        return f'  <path fill="#{r.integers(0, 1 << 24):06x}" d="M {pts} Z"/>'

    svg_head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">\n'
    return svg_head.encode() + _fill(rng, min(size, 60_000), svg) + b"</svg>\n"


def archive(rng: Rng, _: int) -> bytes:
    """gzip, bzip2, xz, zip/jar and tar archives (compressed members are high-entropy)."""
    kind = int(rng.integers(0, 5))
    size = _target_len(rng, 20_000, 1.5, 40, 3_000_000)
    payload = syn.compressed_bytes(rng, size)
    if kind == 0:
        name = f"{_ident(rng)}.{('1', 'txt', 'html', 'tar')[int(rng.integers(0, 4))]}".encode()
        head = (
            b"\x1f\x8b\x08" + (b"\x08" if rng.random() < 0.5 else b"\0") + rng.bytes(4) + b"\0\x03"
        )
        return head + (name + b"\0" if head[3] else b"") + payload + rng.bytes(8)
    if kind == 1:
        return b"BZh9" + b"1AY&SY" + payload
    if kind == 2:
        return b"\xfd7zXZ\0\0\x04" + payload + b"YZ"
    if kind == 3:
        out = bytearray()
        for _ in range(int(rng.integers(1, 20))):
            ext = ("class", "xml", "txt", "py")[int(rng.integers(0, 4))]
            name = f"{_ident(rng)}/{_ident(rng)}.{ext}".encode()
            part = syn.compressed_bytes(rng, int(rng.integers(20, max(21, size // 4))))
            out += b"PK\x03\x04\x14\0\0\0\x08\0" + rng.bytes(16) + struct.pack("<HH", len(name), 0)
            out += name + part
        return bytes(out) + b"PK\x05\x06" + b"\0" * 18
    out = bytearray()  # tar: 512-byte headers and plain text members
    for _ in range(int(rng.integers(1, 12))):
        content = _para(rng, int(rng.integers(1, 30))).encode()
        name = f"{_ident(rng)}/{_ident(rng)}.txt".encode()
        header = bytearray(512)
        header[: len(name)] = name
        header[100:108] = b"0000644\0"
        header[124:136] = f"{len(content):011o}\0".encode()
        header[257:263] = b"ustar\0"
        out += header + content + b"\0" * (-len(content) % 512)
    return bytes(out) + b"\0" * 1024


def pem(rng: Rng, _: int) -> bytes:
    """Certificates, certificate bundles, armored PGP keys and SSH public keys (base64 text)."""
    import base64

    kind = int(rng.integers(0, 4))
    if kind == 3:
        keys = [
            f"ssh-{('rsa', 'ed25519')[int(rng.integers(0, 2))]} "
            + base64.b64encode(rng.bytes(int(rng.integers(32, 400)))).decode()
            + f" {_ident(rng)}@{_words(rng, 1)[0]}"
            for _ in range(int(rng.integers(1, 6)))
        ]
        return ("\n".join(keys) + "\n").encode()
    label = ("CERTIFICATE", "PGP PUBLIC KEY BLOCK", "PUBLIC KEY")[kind]
    out: list[str] = []
    for _ in range(int(rng.integers(1, 40)) if rng.random() < 0.3 else 1):
        if rng.random() < 0.5:
            out.append(f"# {' '.join(_words(rng, 4)).title()} Root CA")
        out.append(f"-----BEGIN {label}-----")
        if kind == 1:
            out += ["", ""] if rng.random() < 0.5 else [f"Comment: {_sentence(rng)}", ""]
        blob = base64.b64encode(rng.bytes(int(rng.integers(200, 2500)))).decode()
        out += [blob[i : i + 64] for i in range(0, len(blob), 64)]
        if kind == 1:
            out.append("=" + base64.b64encode(rng.bytes(3)).decode())
        out.append(f"-----END {label}-----")
    return ("\n".join(out) + "\n").encode()


_SH_LINES = (
    "set -e",
    ". /lib/lsb/init-functions",
    'test -x "$DAEMON" || exit 0',
    'case "$1" in',
    "  start)",
    '    log_daemon_msg "Starting $DESC" "$NAME"',
    '    start-stop-daemon --start --quiet --pidfile "$PIDFILE" --exec "$DAEMON"',
    "    ;;",
    "  stop)",
    "esac",
    "if [ -d /run/systemd/system ]; then",
    "fi",
    "exit 0",
    'for f in "$@"; do',
    "done",
    "while read -r line; do",
    'echo "$line" | sed -e "s/^ *//"',
    'tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/gz.XXXXXXXXXX") || exit',
    "trap 'rm -rf \"$tmpdir\"' EXIT",
    'exec grep -E "$@"',
    'usage="Usage: $0 [OPTION]... FILE..."',
    'command -v "$1" >/dev/null 2>&1',
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    'if [ "$(id -u)" -ne 0 ]; then',
    '  echo "$0: must be run as root" >&2',
    'find /var/cache/man -type f -name "*.gz" -mtime +7 -delete',
    'chmod 0644 "$file"',
    'chown root:root "$file"',
    "umask 022",
    "[ -r /etc/default/$NAME ] && . /etc/default/$NAME",
    'gzip -cd "$1" | tar -xf -',
    'printf "%s\\n" "$@"',
    "export LC_ALL=C",
    "[ -x /usr/sbin/anacron ] || exit 0",
    "/usr/libexec/dpkg/dpkg-db-backup",
    "if [ -e /run/systemd/system ] ; then",
    "    exit 0",
    "unset TZ",
    "[ ! -r /etc/default/rcS ] || . /etc/default/rcS",
    'savelog -c 7 -m 644 "$LOG" >/dev/null',
    "cd /var/backups || exit 0",
    'install -d -m 755 "$DESTDIR"',
    'ls -1 "$dir" | while read -r name; do',
    'xdg-open "$url"',
    "fi",
    "}",
)


def system_script(rng: Rng, _: int) -> bytes:
    """Shell and Perl scripts as distributions ship them: init scripts, cron jobs, wrappers."""
    kind = int(rng.integers(0, 6))
    shebang = ("#!/bin/sh", "#! /bin/sh -e", "#!/bin/bash", "#!/usr/bin/env bash", "#!/bin/sh")[
        int(rng.integers(0, 5))
    ]
    if kind == 0:  # a one-line wrapper (egrep, fgrep, c99)
        return f"{shebang}\n{_SH_LINES[int(rng.integers(0, len(_SH_LINES)))]}\n".encode()
    if kind == 1:
        head = "#!/usr/bin/perl\n\nuse strict;\nuse warnings;\n\n"
        body = "\n".join(
            f"my ${_ident(rng)} = shift @ARGV || '{_words(rng, 1)[0]}';"
            for _ in range(int(rng.integers(3, 200)))
        )
        return (head + body + "\n").encode()
    n = _target_len(rng, 30, 1.2, 2, 600)
    lines = [shebang, ""]
    if rng.random() < 0.3:
        lines += ["### BEGIN INIT INFO", f"# Provides:          {_ident(rng)}"]
        lines += ["# Default-Start:     2 3 4 5", f"# Short-Description: {_sentence(rng, 2, 6)}"]
        lines += ["### END INIT INFO", ""]
    lines += [f"# {_sentence(rng)}" for _ in range(int(rng.integers(0, 4)))]
    picks = rng.integers(0, len(_SH_LINES), size=n)
    for i in picks:
        if rng.random() < 0.15:
            lines.append(f"# {_sentence(rng)}")
        lines.append(_SH_LINES[i])
        if rng.random() < 0.2:
            lines.append(f'{_ident(rng).upper()}="{"/".join(_words(rng, 3))}"')
    if kind == 5 and rng.random() < 0.5:  # gzexe-style: a script with a compressed payload
        return ("\n".join(lines) + "\nexit\n").encode() + syn.compressed_bytes(
            rng, int(rng.integers(500, 200_000))
        )
    return ("\n".join(lines) + "\n").encode()


EVERYDAY_BUILDERS: dict[str, tuple[float, Callable[[Rng, int], bytes]]] = {
    "tiny_text": (4.0, tiny),
    "plain_text": (4.0, plain_text),
    "log_file": (2.0, log_file),
    "csv_file": (1.5, csv_file),
    "structured": (3.0, structured),
    "markup": (2.5, markup),
    "source_code": (5.0, source_code),
    "locale_catalog": (1.5, locale_catalog),
    "tz_data": (1.5, tz_data),
    "binary_data": (2.0, binary_data),
    "font": (1.5, font),
    "image": (2.5, image),
    "archive": (3.0, archive),
    "pem": (1.5, pem),
    "system_script": (5.0, system_script),
}
"""Family name -> (weight in the corpus plan, builder)."""
