"""`python -m loadtest`: the `fleetward loadtest` command on its own."""

from loadtest.cli import loadtest

loadtest()
