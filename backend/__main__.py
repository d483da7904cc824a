"""`python -m backend`: the backend's commands."""

from __future__ import annotations

from backend.cli import backend

__all__: list[str] = []

if __name__ == "__main__":
    backend()
