"""`python -m fleetward` runs the `fleetward` command."""

from fleetward.cli import main

main()
