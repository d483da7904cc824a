"""The one rule for adopting a check-in's result, for the agent and for simulated endpoints.

After a check-in reached the repository, an endpoint:
1. adopts the offered policy version;
2. installs the model the policy assigns it (0: none) when that differs from its current one,
   is signed (TUF verified it) and passes this endpoint's self-test; otherwise it keeps its
   current model, and the refusal is reported by kind (unsigned, self-test);
3. resets its block-storm breaker when its policy version or its model changed.

`adopt` states this once over arrays, so the daemon (`agent.daemon.Agent`, one endpoint, 0-d
arrays), the simulator's exact mode (`fleet_sim.exact`, one endpoint per SimPy process) and its
cohort mode (`fleet_sim.cohort`, many endpoints at once) all call the same code. The daemon's
`signed` and `self_test_ok` come from the update client's verification (`agent.update.updater`); the
simulator's from its model registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Adoption", "adopt"]

Versions = npt.NDArray[np.integer] | int
Flags = npt.NDArray[np.bool_] | bool


@dataclass(frozen=True, slots=True)
class Adoption:
    """What a check-in changed, per endpoint (arrays shaped like the inputs).

    Attributes:
        policy: the policy version now in force (the offered one).
        model: the model version now active.
        wanted: the assigned model differed from the current one.
        install: the assigned model was installed.
        refused_unsigned: wanted, refused: not signed.
        refused_self_test: wanted and signed, refused: this endpoint's self-test failed.
        reset_breaker: the policy version or the model changed: the breaker starts afresh.
    """

    policy: npt.NDArray[np.integer]
    model: npt.NDArray[np.integer]
    wanted: npt.NDArray[np.bool_]
    install: npt.NDArray[np.bool_]
    refused_unsigned: npt.NDArray[np.bool_]
    refused_self_test: npt.NDArray[np.bool_]
    reset_breaker: npt.NDArray[np.bool_]


def adopt(
    *,
    policy: Versions,
    model: Versions,
    offered_policy: Versions,
    offered_model: Versions,
    signed: Flags,
    self_test_ok: Flags,
) -> Adoption:
    """Apply the adoption rule (module docstring) to one endpoint or many.

    `offered_model` is 0 where the policy assigns no model; `signed` and `self_test_ok` are
    read only where the assigned model is wanted.
    """
    cur, cur_pol = np.asarray(model), np.asarray(policy)
    target, new_pol = np.asarray(offered_model), np.asarray(offered_policy)
    ok_sig, ok_test = np.asarray(signed, bool), np.asarray(self_test_ok, bool)
    wanted = (target != 0) & (target != cur)
    refused_unsigned = wanted & ~ok_sig
    refused_self_test = wanted & ok_sig & ~ok_test
    install = wanted & ok_sig & ok_test
    return Adoption(
        policy=new_pol,
        model=np.where(install, target, cur),
        wanted=wanted,
        install=install,
        refused_unsigned=refused_unsigned,
        refused_self_test=refused_self_test,
        reset_breaker=(new_pol != cur_pol) | install,
    )
