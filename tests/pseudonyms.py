"""Org pseudonyms and tokens from a counter instead of `secrets`.

The store draws each org's pseudonym (and each token) at random (`backend.store.sqlite`'s
`secrets`), so anything ordered by pseudonym is a new order on every run. Tests that compare two
runs byte for byte replace that module attribute with a `CountingIds`; tests that must hold for
any draw run twice, with the counter running up (pseudonyms in creation order) and down (the
reverse), the two extremes of that randomness.
"""

from __future__ import annotations


class CountingIds:
    """`secrets.token_hex` and `token_urlsafe` from a counter, up (`step` 1) or down (-1)."""

    def __init__(self, step: int = 1) -> None:
        self.n, self.step = (0 if step > 0 else 1 << 40), step

    def token_hex(self, nbytes: int = 16) -> str:
        self.n += self.step
        return f"{self.n:0{2 * nbytes}x}"

    def token_urlsafe(self, nbytes: int = 16) -> str:
        return self.token_hex(nbytes)
