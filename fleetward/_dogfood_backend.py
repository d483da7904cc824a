"""The dogfood run's endpoint: enroll against an in-process backend, report, ask for a prediction.

Kept apart from `fleetward.dogfood` because it needs the `[backend]` extra (Starlette, SQLite
store), while the scan itself needs only the agent. The backend is the real app over a SQLite
file in the run's folder, served by uvicorn on 127.0.0.1 (an ephemeral port) in a thread for
the length of the run, so the agent's own `enroll`, `check_in`, spool and sender do the talking
over real HTTP.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.breaker import BreakerState
from agent.daemon import DecisionEvent
from agent.decision import Mode
from agent.engine import ShadowScore, evaluate
from agent.model import LoadedModel
from agent.telemetry import Spool, TelemetryPipe, TelemetrySender, check_in, enroll

if TYPE_CHECKING:
    from fleetward.dogfood import FileFinding

__all__ = ["report_and_predict"]


@contextmanager
def _loopback(app: Any) -> Iterator[str]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="dogfood-backend", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(500):
            if server.started:
                break
            thread.join(timeout=0.01)
        if not server.started:
            raise RuntimeError("the dogfood backend did not start")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def report_and_predict(
    findings: Sequence[FileFinding],
    matrix: npt.NDArray[np.float32],
    models: Sequence[LoadedModel],
    bundles: Sequence[Path],
    *,
    now: dt.datetime,
    workdir: Path,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Send the first version's decisions (the last as shadow) and predict old -> new.

    Returns the telemetry figures and the prediction for the dogfood org (None when
    `backend.analysis.transition` is not available).
    """
    import httpx

    from backend.server.app import create_app
    from backend.store import Store

    base = workdir / "backend"
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("dogfood.db*"):
        stale.unlink()
    old, new = models[0], models[-1]
    store = Store(base / "dogfood.db")
    try:
        org = store.create_org("dogfood", now)
        app = create_app(store, None, publish=lambda raw, when: None, clock=lambda: now)
        with _loopback(app) as url, httpx.Client(timeout=60) as client:
            creds = enroll(client, url, org.enroll_token)
            check_in(client, creds)
            sender = TelemetrySender(client, creds.backend_url, creds.token, Spool(base / "spool"))
            pipe = TelemetryPipe(sender, creds)
            for row, f in enumerate(findings):
                ev = evaluate(
                    f.sha256,
                    f.scores[old.version],
                    policy=None,
                    thresholds=old.manifest.thresholds,
                    breaker=BreakerState(),
                    now=now,
                    shadow=[
                        ShadowScore(new.version, f.scores[new.version], new.manifest.thresholds)
                    ],
                )
                pipe.record(
                    DecisionEvent(
                        observed_at=now,
                        sha256=f.sha256,
                        score=ev.decision.score,
                        verdict=ev.decision.verdict,
                        reason=ev.decision.reason,
                        model_version=old.version,
                        policy_version=None,
                        mode=Mode.ENFORCE,
                        shadow=ev.shadow,
                        features=np.asarray(matrix[row], dtype="<f4").tobytes(),
                    )
                )
            flushed = pipe.flush(now)
        counted = sum(r.count for r in store.aggregates(org_id=org.org_id) if not r.shadow)
        telemetry = {
            "org_id": org.org_id,
            "endpoint_id": creds.endpoint_id,
            "events_sent": len(findings),
            "batches_acknowledged": flushed.sent,
            "batches_pending": flushed.pending,
            "events_counted": counted,
        }
        try:
            from backend.analysis.transition import predict_transition
        except ImportError:
            return telemetry, None
        report = predict_transition(
            store, bundles[0], bundles[-1], now=now + dt.timedelta(minutes=1), org=org.org_id
        )
        mine = report.per_org.get(org.org_id)
        prediction = {
            "org_id": org.org_id,
            "predicted_new_fp_per_day": mine.predicted_new_fp_alerts_per_day if mine else 0.0,
            "negative_flips": mine.negative_flips if mine else 0,
            "new_fp_encounters": mine.new_fp_encounters if mine else 0,
            "endpoints_touched": mine.endpoints_touched if mine else 0,
            "observation_days": mine.observation_days if mine else 0,
            "report": report.to_dict(),
        }
        return telemetry, prediction
    finally:
        store.close()
