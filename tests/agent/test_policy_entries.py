"""List entries: a sha256 is exactly 64 lower-case hex digits, nothing before or after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import PolicyError
from agent.policy import ListEntry, read_list_file

SHA = "ab" * 32


def test_list_entry_takes_64_lower_case_hex_digits() -> None:
    assert ListEntry(SHA).sha256 == SHA


@pytest.mark.parametrize("bad", [SHA + "\n", "\n" + SHA, SHA[:-1], SHA + "0", SHA.upper(), ""])
def test_list_entry_refuses_anything_but_64_lower_case_hex_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="not a lower-case hex sha256"):
        ListEntry(bad)


def test_json_list_file_refuses_a_sha256_with_a_trailing_newline(tmp_path: Path) -> None:
    # an entry that can never equal a file's digest would leave the file unlisted in silence
    p = tmp_path / "allow.json"
    p.write_text(json.dumps([{"sha256": SHA + "\n", "reason": "typo"}]))
    with pytest.raises(PolicyError, match="invalid list entry"):
        read_list_file(p)
