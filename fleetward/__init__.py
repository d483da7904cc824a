"""The `fleetward` command line: it assembles each room's click group.

Rooms whose extra is not installed show up as commands that print the install hint.
"""

__all__: list[str] = []
