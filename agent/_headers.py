"""Executable and script header facts for `static-v1` (ELF, PE, Mach-O, shebang scripts).

Parsing never raises: every read is bounds-checked, and a header that does not parse sets
`parse_error` instead. Files are untrusted input on machines we do not own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from agent._bytes import byte_counts

__all__ = ["FORMATS", "INTERPRETERS", "HeaderFacts", "parse_headers"]

FORMATS = ("elf", "pe", "macho", "macho_fat", "script", "zip", "pdf", "other")
INTERPRETERS = ("sh", "python", "perl", "powershell", "node", "other")
_MAX_SECTIONS = 64
_LN2 = float(np.log(2.0))


@dataclass(slots=True)
class HeaderFacts:
    """What the header of one file says; zeros where a fact does not apply."""

    fmt: str = "other"
    parse_error: bool = False
    is_64bit: bool = False
    is_library: bool = False
    is_executable: bool = False
    machine_x86: bool = False
    machine_arm: bool = False
    n_segments: int = 0
    n_load_commands: int = 0
    pe_gui: bool = False
    pe_timestamp_zero: bool = False
    pe_entry_outside_sections: bool = False
    pe_entry_in_last_section: bool = False
    overlay_ratio: float = 0.0
    section_entropies: list[float] = field(default_factory=list)
    section_sizes: list[int] = field(default_factory=list)
    exec_sections: int = 0
    write_exec_sections: int = 0
    interpreter: str = ""


def _entropy(buf: memoryview) -> float:
    if not buf:
        return 0.0
    counts = byte_counts(buf)
    p = counts[counts > 0] / len(buf)
    return float(-(p * np.log(p)).sum() / _LN2) + 0.0


def _add_section(
    facts: HeaderFacts, data: bytes, offset: int, size: int, executable: bool, writable: bool
) -> None:
    size = max(0, min(size, len(data) - offset)) if 0 <= offset < len(data) else 0
    facts.section_sizes.append(size)
    facts.section_entropies.append(
        _entropy(memoryview(data)[offset : offset + size]) if size else 0.0
    )
    facts.exec_sections += int(executable)
    facts.write_exec_sections += int(executable and writable)


def _parse_elf(data: bytes, facts: HeaderFacts) -> None:
    ei_class, ei_data = data[4], data[5]
    end = "<" if ei_data != 2 else ">"
    facts.is_64bit = ei_class == 2
    e_type, e_machine = struct.unpack_from(end + "HH", data, 16)
    facts.is_executable = e_type == 2
    facts.is_library = e_type == 3
    facts.machine_x86 = e_machine in (3, 62)
    facts.machine_arm = e_machine in (40, 183)
    if facts.is_64bit:
        e_phoff, e_shoff = struct.unpack_from(end + "QQ", data, 32)
        _, _, e_phnum, e_shentsize, e_shnum, _ = struct.unpack_from(end + "HHHHHH", data, 52)
        fmt, flag_at, off_at, size_at = end + "IIQQQQ", 2, 4, 5
    else:
        e_phoff, e_shoff = struct.unpack_from(end + "II", data, 28)
        _, _, e_phnum, e_shentsize, e_shnum, _ = struct.unpack_from(end + "HHHHHH", data, 40)
        fmt, flag_at, off_at, size_at = end + "IIIIII", 2, 4, 5
    del e_phoff
    facts.n_segments = e_phnum
    if e_shentsize < struct.calcsize(fmt):
        return
    for i in range(min(e_shnum, _MAX_SECTIONS)):
        at = e_shoff + i * e_shentsize
        if at + struct.calcsize(fmt) > len(data):
            break
        sh = struct.unpack_from(fmt, data, at)
        sh_type, flags = sh[1], sh[flag_at]
        if sh_type in (0, 8):  # SHT_NULL, SHT_NOBITS hold no bytes in the file
            continue
        _add_section(facts, data, sh[off_at], sh[size_at], bool(flags & 0x4), bool(flags & 0x1))


def _parse_pe(data: bytes, facts: HeaderFacts) -> None:
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    if data[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        facts.parse_error = True
        return
    machine, n_sections, timestamp = struct.unpack_from("<HHI", data, e_lfanew + 4)
    opt_size, characteristics = struct.unpack_from("<HH", data, e_lfanew + 20)
    facts.machine_x86 = machine in (0x14C, 0x8664)
    facts.machine_arm = machine in (0x1C0, 0xAA64)
    facts.is_library = bool(characteristics & 0x2000)
    facts.is_executable = bool(characteristics & 0x0002) and not facts.is_library
    facts.pe_timestamp_zero = timestamp == 0
    opt = e_lfanew + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    facts.is_64bit = magic == 0x20B
    (entry,) = struct.unpack_from("<I", data, opt + 16)
    (subsystem,) = struct.unpack_from("<H", data, opt + 68)
    facts.pe_gui = subsystem == 2
    table = opt + opt_size
    last_end, entry_section, count = 0, -1, 0
    for i in range(min(n_sections, _MAX_SECTIONS)):
        at = table + 40 * i
        if at + 40 > len(data):
            break
        vsize, vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, at + 8)
        (chars,) = struct.unpack_from("<I", data, at + 36)
        _add_section(
            facts, data, raw_ptr, raw_size, bool(chars & 0x20000000), bool(chars & 0x80000000)
        )
        if vaddr <= entry < vaddr + max(vsize, raw_size):
            entry_section = i
        last_end = max(last_end, raw_ptr + raw_size)
        count += 1
    facts.pe_entry_outside_sections = entry_section < 0
    facts.pe_entry_in_last_section = count > 0 and entry_section == count - 1
    if 0 < last_end < len(data):
        facts.overlay_ratio = (len(data) - last_end) / len(data)


def _parse_macho(data: bytes, facts: HeaderFacts) -> None:
    magic = data[:4]
    end = "<" if magic in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe") else ">"
    facts.is_64bit = magic in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf")
    cputype, _, filetype, ncmds, _ = struct.unpack_from(end + "iIIII", data, 4)
    facts.machine_x86 = cputype & 0xFF == 7
    facts.machine_arm = cputype & 0xFF == 12
    facts.is_executable = filetype == 2
    facts.is_library = filetype in (6, 8)
    facts.n_load_commands = ncmds
    at = 32 if facts.is_64bit else 28
    for _ in range(min(ncmds, 256)):
        if at + 8 > len(data):
            break
        cmd, cmdsize = struct.unpack_from(end + "II", data, at)
        if cmdsize < 8:
            facts.parse_error = True
            return
        if cmd in (0x19, 0x1):  # LC_SEGMENT_64, LC_SEGMENT
            facts.n_segments += 1
            seg64 = cmd == 0x19
            nsects = struct.unpack_from(end + "I", data, at + (64 if seg64 else 48))[0]
            sect_at = at + (72 if seg64 else 56)
            sect_len = 80 if seg64 else 68
            for j in range(min(nsects, _MAX_SECTIONS - len(facts.section_sizes))):
                s = sect_at + j * sect_len
                if seg64:
                    size, offset = struct.unpack_from(end + "QI", data, s + 40)
                else:
                    size, offset = struct.unpack_from(end + "II", data, s + 36)
                (flags,) = struct.unpack_from(end + "I", data, s + (64 if seg64 else 56))
                _add_section(facts, data, offset, size, bool(flags & 0x80000400), False)
        at += cmdsize


def _parse_script(data: bytes, facts: HeaderFacts) -> None:
    line = data[2:128].split(b"\n", 1)[0].lower()
    for name, needles in (
        ("powershell", (b"pwsh", b"powershell")),
        ("python", (b"python",)),
        ("perl", (b"perl",)),
        ("node", (b"node",)),
        ("sh", (b"sh",)),
    ):
        if any(n in line for n in needles):
            facts.interpreter = name
            return
    facts.interpreter = "other"


def _detect(data: bytes) -> str:
    head = data[:4]
    if head == b"\x7fELF":
        return "elf"
    if head[:2] == b"MZ":
        return "pe"
    if head in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xfe\xed\xfa\xce"):
        return "macho"
    if head == b"\xca\xfe\xba\xbe":
        return "macho_fat"
    if head[:2] == b"#!":
        return "script"
    if head == b"PK\x03\x04":
        return "zip"
    if head == b"%PDF":
        return "pdf"
    return "other"


def parse_headers(data: bytes) -> HeaderFacts:
    """Read format facts from the start of `data`; malformed headers set `parse_error`."""
    facts = HeaderFacts(fmt=_detect(data))
    parser = {
        "elf": _parse_elf,
        "pe": _parse_pe,
        "macho": _parse_macho,
        "script": _parse_script,
    }.get(facts.fmt)
    if parser is None:
        return facts
    try:
        parser(data, facts)
    except (struct.error, IndexError, ValueError, OverflowError):
        facts.parse_error = True
    return facts
