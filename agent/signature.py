"""The built-in test signature: the EICAR anti-malware test file, recognised without the model.

Every anti-malware product detects the EICAR test file, so that a user can check that
protection works end to end without handling real malware. The file is the 68-byte standard
string, optionally followed by whitespace (space, tab, LF, CR, Ctrl-Z) up to 128 bytes in all,
as the standard allows. The agent recognises it here, independently of any model (a model
trained on synthetic data has no reason to know it), and `agent.decision.decide` gives it its
own reason, `test_signature`.

The string itself is not written in this module: it is matched by its SHA-256, so that the
agent's own source is not a copy of the test file for other scanners to flag. Tests build the
file from its published string.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["TEST_SIGNATURE_LENGTH", "TEST_SIGNATURE_MAX_BYTES", "is_test_signature"]

TEST_SIGNATURE_LENGTH: Final = 68
"""Length of the standard test string."""
TEST_SIGNATURE_MAX_BYTES: Final = 128
"""The standard's limit on the whole file, trailing whitespace included."""
_SHA256: Final = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
_WHITESPACE: Final = frozenset(b" \t\r\n\x1a")


def is_test_signature(data: bytes, size: int | None = None) -> bool:
    """Tell whether `data` (a whole file of `size` bytes) is the EICAR test file.

    Args:
        data: the file's bytes (or a prefix of them; see `size`).
        size: the file's real size when `data` is a prefix; defaults to `len(data)`.
    """
    total = len(data) if size is None else size
    if not TEST_SIGNATURE_LENGTH <= total <= TEST_SIGNATURE_MAX_BYTES or len(data) != total:
        return False
    head, tail = data[:TEST_SIGNATURE_LENGTH], data[TEST_SIGNATURE_LENGTH:]
    if any(b not in _WHITESPACE for b in tail):
        return False
    return hashlib.sha256(head).hexdigest() == _SHA256
