"""The `fleetward` command: assembles each room's click group; rooms behind missing extras say how to install them."""

__all__: list[str] = []
