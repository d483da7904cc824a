"""Scenario files (scenarios/*.toml): a world, a timeline of operator actions, outcomes to check.

A scenario is validated with pydantic when it is loaded, so a typo in a file fails at once with
the field's path instead of producing a silently different simulation. Times in the timeline
are offsets from the scenario start, written `"2d"`, `"36h"`, `"1d6h30m"` or a number of days.

Arms: a scenario may run the same seeded world several times with extra actions per arm (for
example `v1-to-v2-transition` with and without the transition allowlist); outcomes name the
arm they check. A scenario without arms has one arm called `main`.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.policy import Ring
from fleet_sim.errors import ScenarioError

__all__ = [
    "Action",
    "ArmModel",
    "CampaignModel",
    "LabelCampaign",
    "ModelBundleModel",
    "Outcome",
    "RolloutOutcome",
    "ScenarioError",
    "ScenarioModel",
    "SetRing",
    "StartRollout",
    "WorldModel",
    "load_scenario",
    "parse_offset",
    "scenario_schema",
]

_OFFSET = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?$")


def parse_offset(value: str | float | int) -> float:
    """Seconds from an offset such as `"2d"`, `"1d6h"`, `"90m"` or a number of days.

    Raises:
        ValueError: the text is not an offset.
    """
    if isinstance(value, int | float):
        return float(value) * 86_400.0
    m = _OFFSET.match(value.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"not a time offset: {value!r} (use e.g. '2d', '36h', '1d6h30m')")
    d, h, mins = (float(g) if g else 0.0 for g in m.groups())
    return d * 86_400.0 + h * 3600.0 + mins * 60.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignModel(_Strict):
    """A malware campaign: one corpus family hitting a share of the orgs from `start`."""

    name: str
    family: str = "loader_v2"
    start: str | float = "1d"
    duration: str | float = "7d"
    ramp: str | float = "1d"
    per_endpoint_per_day: float = Field(default=0.2, ge=0)
    target_share: float = Field(default=0.3, gt=0, le=1)
    labelled: bool = Field(
        default=True, description="false: a zero-day, unknown to the label feed the backend gets"
    )

    @field_validator("start", "duration", "ramp")
    @classmethod
    def _offset(cls, v: str | float) -> str | float:
        parse_offset(v)
        return v


class WorldModel(_Strict):
    """The seeded world: orgs, endpoints, behaviour and the sample mix."""

    orgs: int = Field(default=20, ge=1)
    endpoints: int = Field(default=2000, ge=1)
    org_size_alpha: float = Field(default=1.1, gt=0)
    laptop_share: float = Field(default=0.7, ge=0, le=1)
    workday_hours: tuple[int, int] = (8, 18)
    checkin_minutes: tuple[float, float] = (10.0, 15.0)
    scans_per_hour: float = Field(default=1.0, ge=0)
    offline_spells_per_week: float = Field(default=0.5, ge=0)
    offline_spell_hours: tuple[float, float] = (2.0, 48.0)
    zipf_s: float = Field(default=1.1, gt=0)
    inhouse_share: float = Field(default=0.05, ge=0, le=1)
    malware_share: float = Field(default=0.0005, ge=0, le=1)
    label_noise: float = Field(default=0.01, ge=0, le=0.5)
    drift_per_day: float = Field(default=0.0, ge=0)
    era2_popularity: float = Field(default=1.0, ge=0, le=1)
    spool_max_events: int = Field(default=5000, ge=1)
    breaker_max_blocks: int | None = Field(default=None, ge=1)
    # Push (ADR 0006): a share of endpoints holds a notice channel; an online one adopts a new
    # policy within a latency drawn uniformly from `push_latency_s` of its publication (the
    # notice wakes a check-in); the others, and offline ones, adopt at their next check-in.
    push: bool = True
    push_share: float = Field(default=1.0, ge=0, le=1)
    push_latency_s: tuple[float, float] = (0.2, 5.0)

    @field_validator("push_latency_s")
    @classmethod
    def _latency(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError("push_latency_s must be [low, high] with 0 <= low <= high")
        return v


class ModelBundleModel(_Strict):
    """A model version the operator can publish: a bundle, and how it behaves in the field."""

    version: int = Field(ge=1)
    bundle: str = "v1"
    signed: bool = True
    score_bias: float = 0.0
    # Where `score_bias` is measured from. "zero": added to every score as it is. "block" or
    # "detect": every score is first lifted by that threshold of the bundle, so a file the model
    # scores 0 lands at the threshold plus `score_bias`; the outcome then does not hang on
    # where one training run put its thresholds (score_bias_from = "block" with score_bias = 0
    # makes every file block: a broken model).
    score_bias_from: Literal["zero", "block", "detect"] = "zero"
    self_test_fail_share: float = Field(default=0.0, ge=0, le=1)

    def bias_for(self, block: float, detect: float | None) -> float:
        """The bias to add to this bundle's scores, given its block and detect thresholds."""
        if self.score_bias_from == "block":
            return block + self.score_bias
        if self.score_bias_from == "detect":
            return (block if detect is None else detect) + self.score_bias
        return self.score_bias


class _ActionBase(_Strict):
    at: str | float

    @field_validator("at")
    @classmethod
    def _offset(cls, v: str | float) -> str | float:
        parse_offset(v)
        return v

    @property
    def at_s(self) -> float:
        """Seconds after the scenario start."""
        return parse_offset(self.at)


class PublishModel(_ActionBase):
    """Assign model `version` fleet-wide (or to one org) through the signed policy."""

    do: Literal["publish_model"]
    version: int
    org: str | None = None


class StartRollout(_ActionBase):
    """Start the backend's rollout controller (`backend.rollout.service.start_rollout`).

    Cohorts by stable endpoint hash travel in signed policy; the controller advances after
    `stage_hours` (the hold) when the canary is shown no worse than `max_fp_increase`, and
    halts (with rollback) when it is significantly worse. The fields mirror `RolloutConfig`.
    """

    do: Literal["start_rollout"]
    version: int
    stages: tuple[float, ...] = (1.0, 5.0, 25.0, 100.0)
    stage_hours: float = Field(default=24.0, ge=0, description="hold time of each stage")
    max_fp_increase: float = Field(default=0.25, ge=0, le=10)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_endpoint_days: float = Field(default=30.0, ge=1)
    min_org_endpoint_days: float = Field(default=10.0, ge=1)
    rollback: bool = True
    tick_minutes: float = Field(default=60.0, gt=0)
    predict: bool = Field(default=True, description="transition prediction at the start")
    org: str | None = None
    rings: bool = Field(default=False, description="run the stages ring by ring (set_ring)")
    inconclusive_looks: int = Field(default=0, ge=0, le=100)


class SetRing(_ActionBase):
    """Put orgs (by name) on an update ring through the admin call (`backend.admin.set_ring`).

    `delay_hours` counts only on `delayed`: the hours after `broad` completes before the orgs
    get a version. Orgs never named are on `broad`.
    """

    do: Literal["set_ring"]
    orgs: tuple[str, ...] = Field(min_length=1)
    ring: Ring
    delay_hours: float = Field(default=0.0, ge=0, le=8784)


class KillSwitch(_ActionBase):
    """Set the policy mode fleet-wide or for one org (`off` is the kill switch)."""

    do: Literal["kill_switch"]
    mode: Literal["off", "detect_only", "enforce"] = "off"
    org: str | None = None


class AllowlistAdd(_ActionBase):
    """Allowlist samples: named sha256s, or `source = "transition"` (the transition report's)."""

    do: Literal["allowlist_add"]
    source: Literal["transition", "list"] = "list"
    sha256: tuple[str, ...] = ()
    old: int = 1
    new: int = 2
    org: str | None = None
    evidence: bool = Field(
        default=True,
        description=(
            "transition: only flips with benign evidence (backend.analysis.transition_allowlist); "
            "false takes every flip not labelled malicious (the old rule, for comparison)"
        ),
    )


class Revoke(_ActionBase):
    """Revoke a model version: endpoints on it fall back to `fallback` (a re-assignment)."""

    do: Literal["revoke"]
    version: int
    fallback: int = 1


class BackendOutage(_ActionBase):
    """The backend is unreachable from `at` until `until`."""

    do: Literal["backend_outage"]
    until: str | float

    @property
    def until_s(self) -> float:
        """Seconds after the start when the backend is back."""
        return parse_offset(self.until)


class LabelCampaign(_ActionBase):
    """The label feed learns of a zero-day campaign (`labelled = false`): from `at` on.

    Its samples are labelled malicious from the campaign's start, as a feed dates a family from
    its first sighting: the backend knows the labels from `at` (`LabelChange.known_at`), and
    the corrected truth holds them from the start (`backend.analysis.labels`), so an analysis
    run afterwards can tell what was known at a past decision from what turned out true.
    """

    do: Literal["label_campaign"]
    campaign: str


Action = Annotated[
    PublishModel
    | StartRollout
    | KillSwitch
    | AllowlistAdd
    | Revoke
    | BackendOutage
    | SetRing
    | LabelCampaign,
    Field(discriminator="do"),
]


class _OutcomeBase(_Strict):
    name: str
    arm: str = "main"


class KillSwitchReach(_OutcomeBase):
    """Share of endpoints online throughout the window that obeyed the kill switch in time."""

    check: Literal["kill_switch_reach"]
    action: int = Field(default=0, ge=0, description="index of the kill_switch in the timeline")
    within_minutes: float = 15.0
    at_least: float = 0.99


class AlertsPerOrgDay(_OutcomeBase):
    """Mean alerts per org per day (benign only with `false_positives`) within a window."""

    check: Literal["alerts_per_org_day"]
    orgs: Literal["all", "protector", "others"] = "all"
    false_positives: bool = True
    new_only: bool = False
    from_day: float = 0.0
    to_day: float | None = None
    at_most: float | None = None
    at_least: float | None = None


class ArmRatio(_OutcomeBase):
    """Fleet new-FP alerts in this arm at most `at_most` times those of arm `versus`."""

    check: Literal["arm_ratio"]
    versus: str
    from_day: float = 0.0
    to_day: float | None = None
    at_most: float = 0.2


class Adoption(_OutcomeBase):
    """Share of endpoints running model `version` at `day` (between the bounds)."""

    check: Literal["adoption"]
    version: int
    day: float
    at_least: float | None = None
    at_most: float | None = None


class Counter(_OutcomeBase):
    """A named run counter (see `SimResult.counters`) between bounds."""

    check: Literal["counter"]
    counter: str
    per_endpoint: bool = False
    at_least: float | None = None
    at_most: float | None = None


class Detection(_OutcomeBase):
    """Share of malicious encounters alerted on within a window (between the bounds)."""

    check: Literal["detection"]
    versus: str | None = Field(default=None, description="report this arm's rate minus that arm's")
    from_day: float = 0.0
    to_day: float | None = None
    at_least: float | None = None
    at_most: float | None = None


class RolloutOutcome(_OutcomeBase):
    """The arm's rollout ended as stated (value 1 when every stated condition holds, else 0).

    `state`: the controller's final state. `halted_by_percent`: the halt came at a stage of at
    most this percentage. `halted_orgs`: the halt named at least one org, and (`protector`)
    at least one of them is a protector org (the seed of the v2 surge; other orgs may surge
    too under a given model, and naming them is right). `rolled_back`: the halt republished
    signed policy without the new version's stage. `halt_reach_minutes`: the share of endpoints
    online throughout that adopted the halt's policy within that many minutes is at least
    `at_least` (the spread stops within one check-in).
    """

    check: Literal["rollout"]
    state: Literal["completed", "halted", "running", "paused", "aborted"]
    halted_by_percent: float | None = None
    halted_orgs: Literal["any", "protector"] | None = None
    rolled_back: bool | None = None
    halt_reach_minutes: float | None = None
    halted_in_ring: Ring | None = None
    at_least: float = 0.99


class RingExposure(_OutcomeBase):
    """Endpoints of the orgs on `rings` that ever installed model `version` (between bounds).

    With `outside = true`, the endpoints of orgs on every other ring instead.
    """

    check: Literal["ring_exposure"]
    version: int
    rings: tuple[Ring, ...] = Field(min_length=1)
    outside: bool = False
    at_least: float | None = None
    at_most: float | None = None


class BackOnPrevious(_OutcomeBase):
    """Endpoints still running `version` `within_hours` after the arm's rollout halted.

    Read from the hourly adoption samples (the first at or after the halt plus the window);
    every endpoint that installed `version` is back on another one when this is 0.
    """

    check: Literal["back_on_previous"]
    version: int
    within_hours: float = Field(gt=0)
    at_most: float = 0.0


Outcome = Annotated[
    KillSwitchReach
    | AlertsPerOrgDay
    | ArmRatio
    | Adoption
    | Counter
    | Detection
    | RolloutOutcome
    | RingExposure
    | BackOnPrevious,
    Field(discriminator="check"),
]


class ArmModel(_Strict):
    """One run of the world: a name and the actions it adds to the common timeline."""

    name: str
    timeline: tuple[Action, ...] = ()


class ModelsModel(_Strict):
    """The bundles in play and the version every endpoint starts with."""

    initial: int = 1
    bundles: tuple[ModelBundleModel, ...] = (ModelBundleModel(version=1, bundle="v1"),)


class ScenarioModel(_Strict):
    """A whole scenario file."""

    name: str
    description: str = ""
    seed: int = 1
    days: float = Field(default=7.0, gt=0)
    start: dt.datetime = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    baseline_version: int = 1
    world: WorldModel = Field(default_factory=WorldModel)
    models: ModelsModel = Field(default_factory=ModelsModel)
    campaigns: tuple[CampaignModel, ...] = ()
    timeline: tuple[Action, ...] = ()
    endpoint_days: bool = Field(
        default=False,
        description="record per endpoint-day counters (alerts, health) in the backend throughout",
    )
    arms: tuple[ArmModel, ...] = (ArmModel(name="main"),)
    outcomes: tuple[Outcome, ...] = ()

    @field_validator("start")
    @classmethod
    def _aware_midnight(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("start must carry a UTC offset")
        v = v.astimezone(dt.UTC)
        if (v.hour, v.minute, v.second, v.microsecond) != (0, 0, 0, 0):
            raise ValueError("start must be a UTC midnight")
        return v

    def arm(self, name: str) -> ArmModel:
        """The arm called `name`.

        Raises:
            ScenarioError: no such arm.
        """
        for a in self.arms:
            if a.name == name:
                return a
        raise ScenarioError(f"scenario {self.name!r} has no arm {name!r}")

    def actions(self, arm: str) -> tuple[Action, ...]:
        """The common timeline plus the arm's own actions, in time order (stable)."""
        acts = list(self.timeline) + list(self.arm(arm).timeline)
        return tuple(sorted(acts, key=lambda a: a.at_s))

    def bundle(self, version: int) -> ModelBundleModel:
        """The bundle entry of `version`.

        Raises:
            ScenarioError: the scenario declares no such version.
        """
        for b in self.models.bundles:
            if b.version == version:
                return b
        raise ScenarioError(f"scenario {self.name!r} declares no model version {version}")


def scenario_schema() -> dict[str, Any]:
    """The scenario file's JSON Schema: every world field, campaign, action and outcome check.

    Generated from the models above (their docstrings and field descriptions), so it cannot
    drift from what `load_scenario` accepts; a TOML file is the same document as JSON.
    """
    doc = ScenarioModel.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return doc


def load_scenario(
    path: str | Path,
    *,
    endpoints: int | None = None,
    days: float | None = None,
    orgs: int | None = None,
) -> ScenarioModel:
    """Read and validate a scenario file, applying command-line size overrides.

    Raises:
        ScenarioError: unreadable TOML or invalid content (the message names the field).
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from exc
    return scenario_from_dict(raw, source=str(p), endpoints=endpoints, days=days, orgs=orgs)


def scenario_from_dict(
    raw: dict[str, object],
    *,
    source: str = "<scenario>",
    endpoints: int | None = None,
    days: float | None = None,
    orgs: int | None = None,
) -> ScenarioModel:
    """Validate a scenario given as a dict (the parsed TOML), with optional size overrides.

    Raises:
        ScenarioError: invalid content.
    """
    try:
        model = ScenarioModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "scenario"
        raise ScenarioError(f"{source}: {where}: {first['msg']}") from None
    world = model.world
    if endpoints is not None:
        world = world.model_copy(update={"endpoints": endpoints})
    if orgs is not None:
        world = world.model_copy(update={"orgs": orgs})
    if world.orgs > world.endpoints:
        world = world.model_copy(update={"orgs": world.endpoints})
    update: dict[str, object] = {"world": world}
    if days is not None:
        update["days"] = days
    model = model.model_copy(update=update)
    versions = {b.version for b in model.models.bundles}
    if model.models.initial not in versions:
        raise ScenarioError(f"{source}: models.initial {model.models.initial} is not declared")
    for arm in model.arms:
        for act in model.actions(arm.name):
            v = getattr(act, "version", None)
            if v is not None and v not in versions:
                raise ScenarioError(f"{source}: timeline names undeclared model version {v}")
            if isinstance(act, LabelCampaign):
                camp = {c.name: c for c in model.campaigns}.get(act.campaign)
                if camp is None:
                    raise ScenarioError(
                        f"{source}: label_campaign names no campaign {act.campaign!r}"
                    )
                if camp.labelled:
                    raise ScenarioError(
                        f"{source}: label_campaign: campaign {act.campaign!r} is labelled from "
                        "its start already (set labelled = false for a zero-day)"
                    )
    arms = {a.name for a in model.arms}
    for out in model.outcomes:
        if out.arm not in arms:
            raise ScenarioError(f"{source}: outcome {out.name!r} names unknown arm {out.arm!r}")
    return model
