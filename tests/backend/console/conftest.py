"""Console fixtures: the backend app (console mounted) on a real SQLite store and TUF repo."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from backend.server.app import create_app
from backend.store import Store
from tests.backend.conftest import NOW

SECRET = "console-test-secret-0123456789abcdef"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


class ASGIClient:
    """httpx against the ASGI app in-process (no socket), driven from sync tests; keeps cookies."""

    def __init__(self, app: Starlette) -> None:
        self._runner = asyncio.Runner()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            follow_redirects=True,
        )

    @property
    def cookies(self) -> httpx.Cookies:
        return self._client.cookies

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._runner.run(self._client.get(url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._runner.run(self._client.post(url, **kw))

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


@dataclass
class ConsoleEnv:
    app: Starlette
    store: Store
    client: ASGIClient
    admin_token: str
    repo_dir: Path

    def login(self, token: str | None = None) -> str:
        """Sign in through the form; returns the session's CSRF token."""
        page = self.client.get("/console/login")
        assert page.status_code == 200
        r = self.client.post(
            "/console/login",
            data={"token": token or self.admin_token, "csrf_token": csrf_of(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return csrf_of(self.client.get(r.headers["location"]).text)


@pytest.fixture
def console(
    tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConsoleEnv]:
    monkeypatch.setenv("FLEETWARD_CONSOLE_SECRET", SECRET)
    monkeypatch.setenv("FLEETWARD_REPORTS_DIR", str(tmp_path / "reports"))
    store = Store(tmp_path / "backend.db", synchronous="NORMAL")
    token = store.create_admin_token(NOW)
    app = create_app(store, repo_dir, clock=lambda: NOW)
    client = ASGIClient(app)
    try:
        yield ConsoleEnv(app, store, client, token, repo_dir)
    finally:
        client.close()
        store.close()
