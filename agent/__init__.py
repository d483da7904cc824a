"""The fleetward endpoint agent: features, the decision core, bundles, and its rooms.

At the top: what the backend, the simulator and the model store share with the endpoint (the
feature schema, the decision and its policy, breaker and engine, verdict codes, the bundle
contract and the ONNX model), and the endpoint's shell (the daemon, the systemd service, the
command line). By role below it: `agent.update` (trust and updates: the TUF check-in, adoption,
the push hint), `agent.protect` (prevention: scanning, fanotify exec control, on-write watching,
quarantine) and `agent.telemetry` (the wire format, spool, sender and backend client).

The public names are re-exported lazily (`agent.reexport`): importing `agent.decision` does
not load the ONNX runtime that `agent.model` needs. Importing `agent` and any of its modules
pulls in no training, simulation or web code (`tests/test_layering.py`).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
