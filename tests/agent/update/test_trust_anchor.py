"""The trust anchor is checked at start: a bad root is one line on stderr and exit 2.

Every case uses real TUF metadata from a repository made by `model_store.repository`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata, Root

from agent._clock import utc_now
from agent.cli import main as agent_cli
from agent.errors import TrustAnchorError
from agent.update.updater import verify_root, verify_trust
from model_store.repository import init_repository
from tests.tuf_harness import ORG, World, make_world, signer_for


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "repo"
    init_repository(path, now=utc_now())
    return path


def _root(repo: Path) -> bytes:
    return (repo / "metadata" / "1.root.json").read_bytes()


def _corrupt_signatures(repo: Path) -> bytes:
    doc = json.loads(_root(repo))
    for sig in doc["signatures"]:
        sig["sig"] = ("00" if sig["sig"][:2] != "00" else "11") + sig["sig"][2:]
    return json.dumps(doc).encode()


def _signed_by_a_stranger(repo: Path) -> bytes:
    """A well-formed root whose only signature is by the timestamp key, not a root key."""
    md: Metadata[Root] = Metadata.from_bytes(_root(repo))
    md.signatures.clear()
    md.sign(signer_for(repo, "timestamp"))
    return md.to_bytes()


def _below_threshold(repo: Path) -> bytes:
    """The real root (2 of 3 root keys) with all but one of its valid signatures removed."""
    md: Metadata[Root] = Metadata.from_bytes(_root(repo))
    assert md.signed.roles[Root.type].threshold == 2
    keep = next(iter(md.signatures))
    for keyid in list(md.signatures):
        if keyid != keep:
            del md.signatures[keyid]
    return md.to_bytes()


BAD_ROOTS: dict[str, Callable[[Path], bytes]] = {
    "garbage": lambda repo: b"\x00\xffnot json at all",
    "truncated": lambda repo: _root(repo)[: len(_root(repo)) // 2],
    "empty": lambda repo: b"",
    "empty_list": lambda repo: b"[]",
    "timestamp_metadata": lambda repo: (repo / "metadata" / "timestamp.json").read_bytes(),
    "all_signatures_corrupted": _corrupt_signatures,
    "signed_by_a_non_root_key": _signed_by_a_stranger,
    "below_its_signature_threshold": _below_threshold,
}


def _run_once(state: Path, *extra: str) -> tuple[int, str]:
    out = CliRunner().invoke(
        agent_cli,
        [
            "run",
            "--once",
            "--repo-url",
            "http://127.0.0.1:9",  # nothing listens: a start that got past the root is offline
            "--org",
            ORG,
            "--state-dir",
            str(state),
            *extra,
        ],
    )
    return out.exit_code, out.stderr


@pytest.mark.parametrize("case", sorted(BAD_ROOTS))
def test_rejects_bad_trust_anchor_with_one_line_and_exit_2(
    case: str, repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root.json"
    root.write_bytes(BAD_ROOTS[case](repo))
    code, err = _run_once(tmp_path / "state", "--root", str(root))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "state" / "status.json").exists()  # refused before the agent started


WHY = {
    "garbage": "not TUF metadata",
    "truncated": "not TUF metadata",
    "empty": "not TUF metadata",
    "empty_list": "not TUF metadata",
    "timestamp_metadata": "is timestamp metadata, not a root",
    "all_signatures_corrupted": "signed by 0/2 keys",
    "signed_by_a_non_root_key": "signed by 0/2 keys",
    "below_its_signature_threshold": "signed by 1/2 keys",
}


@pytest.mark.parametrize("case", sorted(BAD_ROOTS))
def test_verify_root_rejects_each_bad_root_for_its_reason(case: str, repo: Path) -> None:
    with pytest.raises(TrustAnchorError, match=WHY[case]):
        verify_root(BAD_ROOTS[case](repo), source="test")


def test_verify_root_accepts_the_repository_root(repo: Path) -> None:
    assert verify_root(_root(repo), source="test") == 1


def test_rejects_missing_trust_anchor_with_exit_2(tmp_path: Path) -> None:
    code, err = _run_once(tmp_path / "state")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: no trusted root: pass the repository's root.json as trust anchor (--root)"
    ]


@pytest.fixture
def world(tmp_path: Path, bundles: dict[int, Path]):
    yield from make_world(tmp_path, bundles)


def test_valid_cached_root_runs_offline_without_anchor(world: World) -> None:
    code, err = _run_once(world.state)
    assert code == 0, err
    assert "check-in failed: RepositoryUnreachableError" in err
    assert verify_trust(world.state, None) == 1


def test_rejects_tampered_cached_root_with_exit_2(world: World) -> None:
    cached = world.state / "tuf" / "root_history" / "1.root.json"
    assert cached.is_file()
    cached.write_bytes(_corrupt_signatures(world.repo))
    code, err = _run_once(world.state)
    assert code == 2
    assert "cached root 1.root.json" in err and len(err.strip().splitlines()) == 1
