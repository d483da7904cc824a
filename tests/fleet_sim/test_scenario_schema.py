"""`fleetward sim schema`: the scenario file's JSON Schema, generated from the very models
`load_scenario` validates with, so a file the schema accepts is one the simulator accepts."""

from __future__ import annotations

import json
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from fleet_sim.cli import sim
from fleet_sim.scenario import Action, Outcome, ScenarioError, load_scenario, scenario_schema

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml"))


def _members(union: Any) -> tuple[Any, ...]:
    """The models of an `Annotated[A | B | ..., Field(discriminator=...)]`."""
    return typing.get_args(typing.get_args(union)[0])


def test_the_schema_holds_every_action_and_outcome_check_with_its_description() -> None:
    defs = scenario_schema()["$defs"]
    for union, tag in ((Action, "do"), (Outcome, "check")):
        models = _members(union)
        assert len(models) >= 8
        for model in models:
            (value,) = typing.get_args(model.model_fields[tag].annotation)
            got = defs[model.__name__]
            assert got["properties"][tag]["const"] == value
            assert got["description"], model.__name__  # the model's docstring, for the author


def test_every_shipped_scenario_is_valid_under_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(scenario_schema())
    assert SCENARIOS
    for path in SCENARIOS:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(json.loads(json.dumps(doc, default=str)))), path


def test_the_schema_and_the_loader_refuse_an_unknown_action_alike(tmp_path: Path) -> None:
    text = SCENARIOS[0].read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text + '\n[[timeline]]\nat = "1d"\ndo = "reboot_fleet"\n', encoding="utf-8")
    doc = json.loads(json.dumps(tomllib.loads(bad.read_text(encoding="utf-8")), default=str))
    assert list(jsonschema.Draft202012Validator(scenario_schema()).iter_errors(doc))
    with pytest.raises(ScenarioError, match="timeline"):
        load_scenario(bad)


def test_fleetward_sim_schema_prints_it_as_json() -> None:
    out = CliRunner().invoke(sim, ["schema"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == scenario_schema()
