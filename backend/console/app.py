"""The operator console: server-rendered pages under `/console` over the backend's own calls.

Pages (Jinja2 templates in `templates/`, one small script in `static/`; every read works
without JavaScript): the fleet overview (`/`), the organizations (`/orgs`), one org's policy,
lists, kill switch and policy as of any past time (`/orgs/{org_id}`, `fleet` for the fleet-wide
default), the rollout with its gate's log (`/rollouts`) and saved transition forecasts
(`/transitions`). Every action posts a form that carries the session's CSRF token and makes one
call in `backend.console._actions`: the function the CLI and the JSON API call. The console
decides nothing itself; a domain error comes back as a one-line message on the page.

Access: `POST /login` with a `token` field takes an admin token (everything) or an org's enroll
token (read-only, that org only). Without a session every page answers 303 to the login form.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from backend.console import _actions as act
from backend.console._plots import PlotBook
from backend.console._queries import DaySeries, FleetReader
from backend.console._session import (
    SecureHeaders,
    Viewer,
    csrf_token,
    is_valid_csrf,
    read_form,
    sign_in,
    viewer_of,
)

__all__ = ["ConsoleConfig", "create_console"]

_HERE = Path(__file__).parent
_FLEET = "fleet"  # the fleet-wide default's page; org ids always start with "org_"
_LISTS = ("allowlist", "blocklist")
_PLOT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
_REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


class ConsoleConfig(BaseModel):
    """Settings of the console (bounded, documented defaults).

    `secret_key` signs the session cookie; by default `FLEETWARD_CONSOLE_SECRET` from the
    environment, else a random key per process (sessions then end when the server restarts,
    and replicas behind one address need the variable). `reports_dir` holds saved transition
    reports (each a folder with `transition.json` and `transition.html`, as
    `fleetward transition --out` writes them); by default `FLEETWARD_REPORTS_DIR`, else none.
    """

    model_config = ConfigDict(frozen=True)

    path: str = Field(default="/console", pattern=r"^/[A-Za-z0-9/_-]*$")
    secret_key: str | None = None
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86_400)
    https_only: bool = False
    reports_dir: Path | None = None
    online_window_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    plot_days: int = Field(default=14, ge=2, le=90)
    top_orgs: int = Field(default=25, ge=1, le=1000)


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


@dataclass
class _Console:
    store: act.Store
    publish: act.Publish
    clock: Callable[[], dt.datetime]
    config: ConsoleConfig
    reader: FleetReader | None
    templates: jinja2.Environment
    reports_dir: Path | None = None
    plots: PlotBook = field(default_factory=PlotBook)
    _versions: dict[str, Any] = field(default_factory=dict)

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def page(
        self, request: Request, template: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        viewer = viewer_of(request)
        session: dict[str, Any] = request.session
        flash = session.pop("flash", None)
        body = self.templates.get_template(template).render(
            base=self.base(request),
            viewer=viewer,
            csrf=csrf_token(request),
            flash=flash,
            **context,
        )
        return HTMLResponse(body, status_code=code)

    def redirect(self, request: Request, path: str, flash: str | None = None) -> Response:
        if flash is not None:
            request.session["flash"] = flash
        return RedirectResponse(self.base(request) + path, status_code=303)

    def need(self, request: Request) -> Viewer:
        viewer = viewer_of(request)
        if viewer is None:
            raise _Redirect(self.base(request) + "/login")
        return viewer

    def forbidden(self, request: Request, why: str) -> HTMLResponse:
        return self.page(request, "error.html", 403, title="Forbidden", message=why)

    def not_found(self, request: Request, why: str) -> HTMLResponse:
        return self.page(request, "error.html", 404, title="Not found", message=why)

    async def action_form(self, request: Request) -> tuple[Viewer, dict[str, str]] | Response:
        """The viewer and form of an admin action, or the response that refuses it."""
        viewer = self.need(request)
        form = await read_form(request)
        if form is None or not is_valid_csrf(request, form):
            return self.forbidden(request, "The form's CSRF token is missing or wrong.")
        if not viewer.admin:
            return self.forbidden(request, "A read-only login cannot change anything.")
        return viewer, form

    def now(self) -> dt.datetime:
        return self.clock()

    # --- access ----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if viewer_of(request) is not None:
            return self.redirect(request, "/")
        return self.page(request, "login.html", title="Sign in")

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        if form is None or not is_valid_csrf(request, form):
            return self.page(
                request, "login.html", 403, title="Sign in",
                error="The form expired or was not sent from this page; try again.",
            )  # fmt: skip
        token = form.get("token", "").strip()
        try:
            principal = await run_in_threadpool(act.authenticate, self.store, token)
        except act.AuthError:
            principal = None
        if principal is not None and principal.kind is act.TokenKind.ADMIN:
            viewer = Viewer(True)
        elif principal is not None and principal.kind is act.TokenKind.ENROLL:
            viewer = Viewer(False, principal.org_id)
        else:
            return self.page(
                request, "login.html", 401, title="Sign in",
                error="That token is not an admin token or an organization's enroll token.",
            )  # fmt: skip
        sign_in(request, viewer)
        return self.redirect(request, "/" if viewer.admin else f"/orgs/{viewer.org_id}")

    async def logout(self, request: Request) -> Response:
        form = await read_form(request)
        if form is None or not is_valid_csrf(request, form):
            return self.forbidden(request, "The form's CSRF token is missing or wrong.")
        request.session.clear()
        return self.redirect(request, "/login")

    # --- overview ----------------------------------------------------------------------------

    def _policy_rows(self, org_ids: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
        record = act.current_policy(self.store)
        if record is None:
            return {}, {}
        doc = record.document
        cache_key = f"{record.version}:{len(org_ids)}"
        cached = self._versions.get("policy")
        if cached is not None and cached[0] == cache_key:
            return cached[1], cached[2]
        effective = {o: act.resolve(doc, o) for o in org_ids}
        modes: dict[str, int] = {}
        for p in effective.values():
            modes[p.mode.value] = modes.get(p.mode.value, 0) + 1
        self._versions["policy"] = (cache_key, effective, modes)
        return effective, modes

    async def overview(self, request: Request) -> Response:
        viewer = self.need(request)
        if not viewer.admin:
            return self.redirect(request, f"/orgs/{viewer.org_id}")
        now = self.now()
        return self.page(request, "overview.html", **await run_in_threadpool(self._overview, now))

    def _overview(self, now: dt.datetime) -> dict[str, Any]:
        orgs = act.org_ids(self.store)
        effective, modes = self._policy_rows(orgs)
        figures = None
        plots: list[tuple[str, str]] = []
        if self.reader is not None:
            figures = self.reader.fleet(
                now,
                days=self.config.plot_days,
                online_window=dt.timedelta(seconds=self.config.online_window_s),
            )
            plots = _series_plots(self.plots, None, figures.series, figures.versions_today)
        per_org = figures.per_org if figures else {}
        # ties on size keep the store's creation order (`orgs`): ids are random pseudonyms
        top = sorted(orgs, key=lambda o: -per_org.get(o, (0, 0))[0])[: self.config.top_orgs]
        assigned: dict[str, int] = {}
        for p in effective.values():
            key = "none" if p.model_version is None else f"v{p.model_version}"
            assigned[key] = assigned.get(key, 0) + 1
        record = act.current_policy(self.store)
        return {
            "title": "Fleet overview",
            "now": now,
            "orgs": len(orgs),
            "figures": figures,
            "plots": plots,
            "modes": sorted(modes.items()),
            "assigned": sorted(assigned.items()),
            "fleet_mode": record.document.default.mode.value
            if record and record.document.default.mode
            else "enforce",
            "policy": record,
            "top": [(o, per_org.get(o, (0, 0)), effective.get(o)) for o in top],
            "rollout": act.rollout_status(self.store, now),
        }

    async def orgs(self, request: Request) -> Response:
        viewer = self.need(request)
        if not viewer.admin:
            return self.redirect(request, f"/orgs/{viewer.org_id}")
        q = request.query_params.get("q", "").strip()
        now = self.now()

        def rows() -> list[tuple[str, tuple[int, int], Any]]:
            orgs = act.org_ids(self.store)
            effective, _ = self._policy_rows(orgs)
            per_org = (
                self.reader.fleet(
                    now, days=1, online_window=dt.timedelta(seconds=self.config.online_window_s)
                ).per_org
                if self.reader
                else {}
            )
            return [(o, per_org.get(o, (0, 0)), effective.get(o)) for o in orgs if q in o]

        return self.page(
            request, "orgs.html", title="Organizations", rows=await run_in_threadpool(rows), q=q
        )

    # --- one org ----------------------------------------------------------------------------

    def _scope(self, org_id: str) -> str | None:
        if org_id == _FLEET:
            return None
        if not self.store.has_org(org_id):
            raise act.NotFoundError(f"no organization {org_id!r}")
        return org_id

    async def org(self, request: Request) -> Response:
        viewer = self.need(request)
        org_id = str(request.path_params["org_id"])
        if not viewer.may_see(org_id):
            return self.forbidden(request, "This login may only see its own organization.")
        try:
            scope = self._scope(org_id)
        except act.NotFoundError as exc:
            return self.not_found(request, str(exc))
        raw_as_of = request.query_params.get("as_of", "").strip()
        as_of, as_of_error = None, None
        if raw_as_of:
            try:
                as_of = _parse_utc(raw_as_of)
            except ValueError as exc:
                as_of_error = str(exc)
        now = self.now()
        context = await run_in_threadpool(self._org, scope, now, as_of)
        return self.page(
            request,
            "org.html",
            title="Fleet-wide policy" if scope is None else f"Organization {org_id}",
            org_id=org_id,
            scope=scope,
            now=now,
            as_of_raw=raw_as_of,
            as_of_error=as_of_error,
            modes=[m.value for m in act.Mode],
            **context,
        )

    def _org(
        self, scope: str | None, now: dt.datetime, as_of: dt.datetime | None
    ) -> dict[str, Any]:
        record = act.current_policy(self.store)
        doc = record.document if record else None
        own = None if doc is None else (doc.default if scope is None else doc.orgs.get(scope))
        effective = act.resolve(doc, scope) if doc is not None and scope is not None else None
        figures, plots = None, []
        if self.reader is not None and scope is not None:
            figures = self.reader.org(
                scope,
                now,
                days=self.config.plot_days,
                online_window=dt.timedelta(seconds=self.config.online_window_s),
            )
            plots = _series_plots(self.plots, scope, figures.series, figures.versions_today)
        past = None
        if as_of is not None:
            then = act.policy_as_of(self.store, as_of)
            if then is not None:
                past_own = then.document.default if scope is None else then.document.orgs.get(scope)
                past = {
                    "record": then,
                    "own": past_own,
                    "effective": act.resolve(then.document, scope) if scope else None,
                }
            else:
                past = {"record": None}
        changes = self.reader.policy_changes(50) if self.reader is not None else []
        if scope is not None:
            changes = [c for c in changes if f"({scope})" in c.action or "(fleet)" in c.action]
        return {
            "policy": record,
            "own": own,
            "effective": effective,
            "figures": figures,
            "plots": plots,
            "past": past,
            "changes": changes[:15],
        }

    async def set_mode(self, request: Request) -> Response:
        got = await self.action_form(request)
        if isinstance(got, Response):
            return got
        viewer, form = got
        org_id = str(request.path_params["org_id"])
        try:
            scope = self._scope(org_id)
            mode = act.Mode(form.get("mode", ""))
        except act.NotFoundError as exc:
            return self.not_found(request, str(exc))
        except ValueError:
            return self.redirect(request, f"/orgs/{org_id}", "error: choose a mode")
        if form.get("confirm") != "yes":  # the confirmation step of the kill switch
            figures = (
                self.reader.org(
                    scope, self.now(), days=1,
                    online_window=dt.timedelta(seconds=self.config.online_window_s),
                )
                if self.reader is not None and scope is not None
                else None
            )  # fmt: skip
            return self.page(
                request, "confirm_mode.html", title="Confirm the mode change",
                org_id=org_id, scope=scope, mode=mode.value, figures=figures,
            )  # fmt: skip
        return await self._do(
            request,
            f"/orgs/{org_id}",
            lambda now: act.set_mode(
                self.store, self.publish, mode, org_id=scope, now=now, actor=_actor(viewer)
            ),
        )

    async def add_entry(self, request: Request) -> Response:
        got = await self.action_form(request)
        if isinstance(got, Response):
            return got
        viewer, form = got
        org_id = str(request.path_params["org_id"])
        which = form.get("which", "")
        sha = form.get("sha256", "").strip().lower()
        back = f"/orgs/{org_id}"
        if which not in _LISTS:
            return self.not_found(request, f"no list {which!r}")
        if not act.is_sha256(sha):
            return self.redirect(request, back, "error: sha256 must be 64 hex characters")
        try:
            scope = self._scope(org_id)
            raw_exp = form.get("expires_at", "").strip()
            expires = _parse_utc(raw_exp) if raw_exp else None
        except act.NotFoundError as exc:
            return self.not_found(request, str(exc))
        except ValueError as exc:
            return self.redirect(request, back, f"error: {exc}")
        return await self._do(
            request,
            back,
            lambda now: act.add_list_entry(
                self.store, self.publish, which, sha, org_id=scope, now=now,
                reason=form.get("reason", "")[:1000], expires_at=expires, actor=_actor(viewer),
            ),
        )  # fmt: skip

    async def allowlist_candidate(self, request: Request) -> Response:
        """Allowlist one candidate of a saved transition report, by the scope the report gives.

        The scope is read from the saved report, not from the form: an org's own flip goes on
        that org's allowlist only, fleet-wide only on fleet-level evidence.
        """
        got = await self.action_form(request)
        if isinstance(got, Response):
            return got
        viewer, form = got
        name = str(request.path_params["name"])
        back = f"/transitions/{name}"
        where = self._report_dir(name)
        if where is None:
            return self.not_found(request, f"no saved report {name!r}")
        report = json.loads((where / "transition.json").read_text())
        sha, org = form.get("sha256", "").strip().lower(), form.get("org_id", "") or None
        chosen = [
            c
            for c in report.get("allowlist_candidates", [])
            if c.get("sha256") == sha and c.get("org_id") == org
        ]
        if not chosen:
            return self.not_found(request, "no such allowlist candidate in this report")
        return await self._do(
            request,
            back,
            lambda now: act.add_allowlist_candidates(
                self.store, self.publish, chosen, now=now, actor=_actor(viewer)
            ),
        )

    async def remove_entry(self, request: Request) -> Response:
        got = await self.action_form(request)
        if isinstance(got, Response):
            return got
        viewer, form = got
        org_id = str(request.path_params["org_id"])
        which = form.get("which", "")
        sha = form.get("sha256", "").strip().lower()
        if which not in _LISTS or not act.is_sha256(sha):
            return self.not_found(request, "no such list entry")
        try:
            scope = self._scope(org_id)
        except act.NotFoundError as exc:
            return self.not_found(request, str(exc))
        return await self._do(
            request,
            f"/orgs/{org_id}",
            lambda now: act.remove_list_entry(
                self.store, self.publish, which, sha, org_id=scope, now=now, actor=_actor(viewer)
            ),
        )

    async def _do(
        self, request: Request, back: str, call: Callable[[dt.datetime], object]
    ) -> Response:
        """Run one library call; come back to `back` with what it did or the error's line."""
        now = self.now()
        try:
            result = await run_in_threadpool(call, now)
        except act.BackendError as exc:
            return self.redirect(request, back, f"error: {exc}")
        if isinstance(result, act.PolicyRecord):
            done = f"policy v{result.version}: {result.action}"
        elif isinstance(result, act.Rollout):
            done = f"rollout {result.rollout_id}: {result.state.value}"
        else:
            done = "done"
        return self.redirect(request, back, done)

    # --- rollouts -----------------------------------------------------------------------------

    async def rollouts(self, request: Request) -> Response:
        viewer = self.need(request)
        if not viewer.admin:
            return self.redirect(request, f"/orgs/{viewer.org_id}")
        now = self.now()

        def read() -> dict[str, Any]:
            status = act.rollout_status(self.store, now)
            rollout = act.get_rollout(self.store)
            evidence = act.org_evidence(self.store, rollout, now) if rollout else None
            return {"status": status, "rollout": rollout, "evidence": evidence,
                    "log": act.decision_log(self.store)}  # fmt: skip

        return self.page(
            request, "rollouts.html", title="Rollouts", now=now, **await run_in_threadpool(read)
        )

    async def rollout_action(self, request: Request) -> Response:
        got = await self.action_form(request)
        if isinstance(got, Response):
            return got
        _, form = got
        what = str(request.path_params["action"])
        if what == "pause":
            return await self._do(
                request, "/rollouts", lambda now: act.pause_rollout(self.store, now)
            )
        if what == "resume":
            return await self._do(
                request, "/rollouts", lambda now: act.resume_rollout(self.store, now)
            )
        if what == "abort":
            if form.get("confirm") != "yes":
                return self.page(request, "confirm_abort.html", title="Confirm the abort",
                                 status=act.rollout_status(self.store, self.now()))  # fmt: skip
            return await self._do(
                request, "/rollouts", lambda now: act.abort_rollout(self.store, self.publish, now)
            )
        return self.not_found(request, f"no rollout action {what!r}")

    # --- transition forecasts -------------------------------------------------------------

    def _reports(self) -> list[str]:
        root = self.reports_dir
        if root is None or not root.is_dir():
            return []
        found = [p.parent for p in root.glob("*/transition.json")]
        if (root / "transition.json").is_file():
            found.append(root)
        return sorted(str(p.relative_to(root)) for p in found)

    def _report_dir(self, name: str) -> Path | None:
        if self.reports_dir is None or name not in self._reports():
            return None
        return (self.reports_dir / name).resolve()

    async def transitions(self, request: Request) -> Response:
        self.need(request)
        return self.page(
            request, "transitions.html", title="Transition forecasts", reports=self._reports(),
            reports_dir=self.reports_dir,
        )  # fmt: skip

    async def transition(self, request: Request) -> Response:
        viewer = self.need(request)
        name = str(request.path_params["name"])
        where = self._report_dir(name)
        if where is None:
            return self.not_found(request, f"no saved report {name!r}")
        report = json.loads((where / "transition.json").read_text())
        per_org = [o for o in report.get("per_org", []) if viewer.may_see(o["org_id"])]
        sweep = report.get("sweep", [])
        plots = []
        top = per_org[:20]
        if top:
            plots.append(
                (
                    "Predicted new false-positive alerts per day, by org (top 20)",
                    self.plots.bar(
                        None if viewer.admin else viewer.org_id,
                        "predicted new FP alerts / day",
                        tuple(o["org_id"][-8:] for o in top),
                        tuple(float(o["predicted_new_fp_alerts_per_day"]) for o in top),
                        "per day",
                    ),
                )
            )
        if sweep and viewer.admin:
            plots.append(
                (
                    "Threshold sweep: worst org's new FP alerts per day against recall",
                    self.plots.sweep(
                        [
                            (p["alert_threshold"], p["max_org_fp_per_day"], p["recall"] or 0.0)
                            for p in sweep
                        ],
                        float(report.get("fp_budget_per_day", 1.0)),
                    ),
                )
            )
        return self.page(
            request, "transition.html", title=f"Transition forecast {name}", name=name,
            report=report, per_org=per_org, plots=plots,
            candidates=report.get("allowlist_candidates", []) if viewer.admin else [],
            sweep=sweep if viewer.admin else [],
        )  # fmt: skip

    async def plot(self, request: Request) -> Response:
        viewer = self.need(request)
        found = await run_in_threadpool(self.plots.render, str(request.path_params["key"]))
        if found is None:
            return Response(status_code=404)
        owner, svg = found
        if not viewer.may_see(owner):
            return Response(status_code=403)
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={
                "content-security-policy": _PLOT_CSP,
                "cache-control": "private, max-age=3600",
            },
        )

    async def report_page(self, request: Request) -> Response:
        viewer = self.need(request)
        where = self._report_dir(str(request.path_params["name"]))
        if where is None:
            return self.not_found(request, "no such saved report")
        if not viewer.admin:
            return self.forbidden(request, "The full report names every organization.")
        return FileResponse(
            where / "transition.html",
            media_type="text/html",
            headers={"content-security-policy": _REPORT_CSP},
        )


def _actor(viewer: Viewer) -> str:
    return "console:admin" if viewer.admin else f"console:{viewer.org_id}"


def _parse_utc(raw: str) -> dt.datetime:
    """A time from a form: ISO 8601, UTC when it carries no offset (`datetime-local` fields)."""
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a time (YYYY-MM-DDTHH:MM, UTC)") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _series_plots(
    book: PlotBook, scope: str | None, s: DaySeries, versions: dict[int, int]
) -> list[tuple[str, str]]:
    """(alt text, plot key) of the health plots of a fleet (`scope` None) or one org."""
    if not s.days:
        return []
    labels = tuple(d.strftime("%m-%d") for d in s.days)
    out = [
        (
            "Events per second, daily average",
            book.day(
                scope, "events / s", labels, (("events/s", tuple(e / 86_400 for e in s.events)),)
            ),
        ),
        (
            "Breaker trips and self-test failures per day",
            book.day(
                scope,
                "health",
                labels,
                (
                    ("breaker trips", tuple(float(x) for x in s.breaker_trips)),
                    ("self-test failures", tuple(float(x) for x in s.self_test_failures)),
                ),
            ),
        ),
    ]
    if versions:
        out.append(
            (
                "Endpoints reporting each model version today",
                book.bar(
                    scope,
                    "model versions in use today",
                    tuple(f"v{v}" for v in versions),
                    tuple(float(n) for n in versions.values()),
                    "endpoints",
                ),
            )
        )
    return out


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    env.filters["num"] = lambda x, d=0: "-" if x is None else f"{x:,.{d}f}"
    env.filters["p"] = lambda x: "-" if x is None else f"{x:.4g}"
    return env


def create_console(
    store: act.Store,
    publish: act.Publish,
    clock: Callable[[], dt.datetime],
    *,
    config: ConsoleConfig | None = None,
) -> Starlette:
    """The console's ASGI app, to mount under `config.path` (`/console`) of the backend's app.

    `publish`, `clock` and `store` are the backend app's own, so a console action is the same
    call, signed into the same repository, as its API twin.
    """
    config = config or ConsoleConfig()
    secret = (
        config.secret_key
        or os.environ.get("FLEETWARD_CONSOLE_SECRET")
        or (secrets.token_urlsafe(32))
    )
    reports = config.reports_dir or (
        Path(os.environ["FLEETWARD_REPORTS_DIR"])
        if os.environ.get("FLEETWARD_REPORTS_DIR")
        else None
    )
    path = getattr(store, "path", None)
    c = _Console(
        store, publish, clock, config, FleetReader.open(path if isinstance(path, str) else None),
        _templates(), reports.resolve() if reports else None,
    )  # fmt: skip

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _Redirect as r:
                return RedirectResponse(r.to, status_code=303)

        return run

    routes = [
        Route("/", guarded(c.overview), methods=["GET"]),
        Route("/login", c.login_form, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", c.logout, methods=["POST"]),
        Route("/orgs", guarded(c.orgs), methods=["GET"]),
        Route("/orgs/{org_id}", guarded(c.org), methods=["GET"]),
        Route("/orgs/{org_id}/mode", guarded(c.set_mode), methods=["POST"]),
        Route("/orgs/{org_id}/lists/add", guarded(c.add_entry), methods=["POST"]),
        Route("/orgs/{org_id}/lists/remove", guarded(c.remove_entry), methods=["POST"]),
        Route("/rollouts", guarded(c.rollouts), methods=["GET"]),
        Route("/rollouts/{action}", guarded(c.rollout_action), methods=["POST"]),
        Route("/transitions", guarded(c.transitions), methods=["GET"]),
        Route("/plots/{key:str}.svg", guarded(c.plot), methods=["GET"]),
        Route("/transitions/{name:path}/report", guarded(c.report_page), methods=["GET"]),
        Route(
            "/transitions/{name:path}/allowlist",
            guarded(c.allowlist_candidate),
            methods=["POST"],
        ),
        Route("/transitions/{name:path}", guarded(c.transition), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecureHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="fleetward_console",
                max_age=config.session_ttl_s,
                path=config.path,
                same_site="strict",
                https_only=config.https_only,
            ),
        ],
    )
