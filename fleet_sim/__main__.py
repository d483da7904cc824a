"""`python -m fleet_sim` runs the `sim` command group."""

from fleet_sim.cli import sim

sim()
