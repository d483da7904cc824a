"""A value refused by one of `backend.validation`'s rules is answered with where it was.

The rules run inside the API's pydantic models; a refusal used to pass through pydantic as the
rule's own error and lose its location (`sha256: ...` for the second of two labels). Each case
here goes through a real server on loopback.
"""

from __future__ import annotations

import httpx

from backend.validation import MAX_REASON_CHARS
from tests.backend.conftest import LiveServer

SHA = "ab" * 32


def test_a_refused_org_name_is_422_naming_the_field(live_server: LiveServer) -> None:
    r = httpx.post(
        f"{live_server.url}/v1/admin/orgs", json={"name": "a\x01b"}, headers=live_server.admin()
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "name: must not contain control characters"


def test_a_refused_reason_is_422_naming_the_field(live_server: LiveServer) -> None:
    body = {"sha256": SHA, "reason": "x" * (MAX_REASON_CHARS + 1)}
    r = httpx.post(f"{live_server.url}/v1/admin/allowlist", json=body, headers=live_server.admin())
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"reason: must be at most {MAX_REASON_CHARS} characters"


def test_a_refused_sha256_in_a_list_of_rows_names_the_row(live_server: LiveServer) -> None:
    rows = [{"sha256": SHA, "label": "benign"}] * 2 + [{"sha256": SHA + "\n", "label": "benign"}]
    r = httpx.post(
        f"{live_server.url}/v1/admin/labels", json={"labels": rows}, headers=live_server.admin()
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "labels.2.sha256: must be 64 hex characters"


def test_a_refused_sha256_in_the_path_is_404_naming_the_parameter(live_server: LiveServer) -> None:
    r = httpx.delete(f"{live_server.url}/v1/admin/allowlist/zz", headers=live_server.admin())
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "sha256: must be 64 hex characters"
