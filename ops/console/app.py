"""The console's HTTP application: routes, the login, CSRF and security-header middlewares, and
the lifecycle of what it reads from (broker connection, Redis, job index pool, the sampler).

Every page needs a session; every POST needs the session's CSRF token (the login form its own
double-submit token) and, when the browser sends one, an Origin of this console. Replay and purge
need the operator permission and the job index database, because each is written to the audit
table (who, when, filters, counts) before anything moves; the confirmation acts on exactly the
dead letters its dry run listed (ops/dlq.py Filters.identities), never on one that arrived since.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import asyncpg
import redis.asyncio as aioredis
from aio_pika.abc import AbstractConnection
from aiohttp import web
from redis.exceptions import RedisError

from ops import dlq
from ops.console import data, pages
from ops.console.auth import Permission, Session, Sessions, same_token
from ops.console.settings import ConsoleSettings
from schemas.status import ERROR_TYPE_PATTERN, JOB_OUTCOMES, PROVIDER_PATTERN
from worker.broker import Publisher
from worker.constants import STAGES, Stage
from worker.jobindex import INDEX_ERRORS, IndexReader, JobFilter, open_pool
from worker.payload_crypto import PayloadCipher
from worker.topology import Names

SESSION_COOKIE: Final = "scribe_console_session"
LOGIN_COOKIE: Final = "scribe_console_login"
MAX_FORM_BYTES: Final = 512 * 1024
# How long a stop waits for each of the sampler, the index pool, Redis and the broker, and for
# requests in flight (the HTTP runner's shutdown).
CLOSE_STEP_TIMEOUT_S: Final = 5.0
STATIC_DIR: Final = Path(__file__).parent / "static"
_IDENTITY_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_LOGIN_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_UUID_RE: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_ERROR_TYPE_RE: Final = re.compile(ERROR_TYPE_PATTERN)
_PROVIDER_RE: Final = re.compile(PROVIDER_PATTERN)
_PUBLIC_PATHS: Final = frozenset({"/login", "/healthz", "/static/console.css"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer browsers send "Origin: null" on our own
    # form posts, and the Origin check below would refuse them.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_AUDIT_START: Final = """
INSERT INTO scribe_console_audit (actor, action, filters, planned, outcome)
VALUES ($1, $2, $3::jsonb, $4, 'started') RETURNING id
"""
_AUDIT_END: Final = "UPDATE scribe_console_audit SET done = $2, outcome = $3 WHERE id = $1"


class BadFilter(Exception):
    """A query or form value that is not valid; pages say which field, never the value."""


class Console:
    """What the console reads from, opened by start() and closed by close()."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.names = Names(settings.worker.prefix)
        self.sessions = Sessions(settings.users, settings.session_idle_s, settings.session_max_s)
        self.history = data.History()
        # Opens sealed dead letters (SCRIBE_PAYLOAD_KEYS) and seals what a replay publishes.
        self.cipher = PayloadCipher(settings.worker.payload_keys)
        self.connection: AbstractConnection | None = None
        self.redis: aioredis.Redis | None = None
        self.pool: asyncpg.Pool | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        worker = self.settings.worker
        self.connection = await data.connect_broker(worker.amqp_url.value)
        if worker.redis_url is not None:
            self.redis = aioredis.Redis.from_url(
                worker.redis_url.value, socket_timeout=5, socket_connect_timeout=5
            )
        if worker.database_url is not None:
            self.pool = await open_pool(worker.database_url.value)
        self._sampler = asyncio.create_task(self._sample(), name="console-sampler")

    async def close(self) -> None:
        """Each step bounded (CLOSE_STEP_TIMEOUT_S): a stop never waits on a peer that stalls;
        a pool that will not close gracefully is terminated."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._sampler, CLOSE_STEP_TIMEOUT_S)
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), CLOSE_STEP_TIMEOUT_S)
            except TimeoutError:
                self.pool.terminate()
        if self.redis is not None:
            with contextlib.suppress(TimeoutError, RedisError):
                await asyncio.wait_for(self.redis.aclose(), CLOSE_STEP_TIMEOUT_S)
        if self.connection is not None:
            with contextlib.suppress(TimeoutError, *data.BROKER_ERRORS):
                await asyncio.wait_for(self.connection.close(), CLOSE_STEP_TIMEOUT_S)

    def broker(self) -> AbstractConnection:
        if self.connection is None:
            raise RuntimeError("the console is not started")
        return self.connection

    async def depths(self) -> list[data.QueueDepth]:
        tiers = self.settings.worker.retry.delay_tiers_ms
        return await data.queue_depths(self.broker(), self.names, tiers)

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(*data.BROKER_ERRORS):
                self.history.add(await self.depths())
            self.sessions.sweep()
            await asyncio.sleep(self.settings.sample_every_s)


CONSOLE: Final = web.AppKey("console", Console)
SESSION: Final = web.RequestKey("session", Session)


def _viewer(session: Session) -> pages.Viewer:
    return pages.Viewer(
        session.user, session.csrf, session.allows("operator"), session.allows("patientText")
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _session_of(request: web.Request) -> Session:
    session: Session | None = request.get(SESSION)
    if session is None:
        raise web.HTTPUnauthorized()
    return session


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def require_session(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No page without a session; no POST without its CSRF token and from another origin."""
    if request.path in _PUBLIC_PATHS:
        return await handler(request)
    console = request.app[CONSOLE]
    session = console.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        raise web.HTTPForbidden(text="no session")
    if request.method == "POST":
        form = await request.post()
        token = form.get("csrf")
        if not isinstance(token, str) or not same_token(token, session.csrf):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        if not _same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused")
    request[SESSION] = session
    return await handler(request)


async def login_form(request: web.Request) -> web.Response:
    """The login page, with its double-submit token: the one this browser already holds when
    it has one (a second tab, or the favicon's redirect here, must not void the first form)."""
    held = request.cookies.get(LOGIN_COOKIE)
    token = held if held and _LOGIN_TOKEN_RE.fullmatch(held) else secrets.token_urlsafe(32)
    response = _html(pages.login_page(token, failed=False))
    _set_cookie(request, response, LOGIN_COOKIE, token)
    return response


async def login(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    form = await request.post()
    given = form.get("login_token")
    expected = request.cookies.get(LOGIN_COOKIE)
    if not _same_origin(request) or expected is None or not isinstance(given, str):
        raise web.HTTPForbidden(text="login refused")
    if not same_token(given, expected):
        raise web.HTTPForbidden(text="login refused")
    name, password = form.get("name"), form.get("password")
    started = None
    if isinstance(name, str) and isinstance(password, str):
        started = await asyncio.to_thread(console.sessions.login, name, password)
    if started is None:
        token = secrets.token_urlsafe(32)
        response = _html(pages.login_page(token, failed=True), status=401)
        _set_cookie(request, response, LOGIN_COOKIE, token)
        return response
    session_token, _ = started
    redirect = web.HTTPSeeOther("/")
    _set_cookie(request, redirect, SESSION_COOKIE, session_token)
    redirect.del_cookie(LOGIN_COOKIE, path="/")
    raise redirect


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    console = request.app[CONSOLE]
    response.set_cookie(
        name,
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=console.settings.secure_cookie,
    )


async def logout(request: web.Request) -> web.Response:
    request.app[CONSOLE].sessions.logout(request.cookies.get(SESSION_COOKIE))
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def stylesheet(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "console.css", headers={"Content-Type": "text/css"})


async def overview(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    viewer = _viewer(_session_of(request))
    depths = await console.depths()
    console.history.add(depths)
    dead: data.DeadLetterView | None = None
    with contextlib.suppress(*data.BROKER_ERRORS):
        dead = await data.dead_letters(
            console.broker(), console.names, dlq.Filters(), console.cipher
        )
    stage_queues = {console.names.stage_queue(stage): stage for stage in STAGES}
    page = pages.Overview(
        queues=depths,
        activity=await data.stage_activity(console.pool),
        dead=dead,
        limits=await data.rate_limit_use(
            console.redis,
            console.settings.worker.prefix,
            console.settings.worker.rate_limits_per_min,
        ),
        depth_series={stage: console.history.series(name) for name, stage in stage_queues.items()},
        duration_series=await data.stage_durations(console.pool),
    )
    return _html(pages.overview_page(page, viewer))


def _choice(query: Mapping[str, str], name: str, options: tuple[str, ...]) -> str | None:
    value = query.get(name) or None
    if value is not None and value not in options:
        raise BadFilter(name)
    return value


def _pattern(query: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str | None:
    value = query.get(name) or None
    if value is not None and not pattern.fullmatch(value):
        raise BadFilter(name)
    return value


def _moment(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name) or None
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(name) from None
    if moment.tzinfo is None:
        raise BadFilter(name)
    return moment


def job_filter(query: Mapping[str, str]) -> JobFilter:
    stage = _choice(query, "stage", STAGES)
    outcome = _choice(query, "outcome", JOB_OUTCOMES)
    return JobFilter(
        stage=next((s for s in STAGES if s == stage), None),
        outcome=next((o for o in JOB_OUTCOMES if o == outcome), None),
        error_type=_pattern(query, "errorType", _ERROR_TYPE_RE),
        provider=_pattern(query, "provider", _PROVIDER_RE),
        since=_moment(query, "since"),
        until=_moment(query, "until"),
        limit=100,
    )


def _bad_filter(exc: BadFilter, viewer: pages.Viewer) -> web.Response:
    text = f"The filter '{exc.args[0]}' is not valid."
    return _html(pages.message_page("Not valid", text, viewer), status=400)


async def jobs(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    viewer = _viewer(_session_of(request))
    query = {k: v for k, v in request.query.items() if isinstance(v, str)}
    try:
        wanted = job_filter(query)
    except BadFilter as exc:
        return _bad_filter(exc, viewer)
    found = None
    if console.pool is not None:
        with contextlib.suppress(*INDEX_ERRORS):
            found = await IndexReader(console.pool).jobs(wanted)
    return _html(pages.jobs_page(found, query, viewer))


async def job(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    viewer = _viewer(_session_of(request))
    job_id = request.match_info["job_id"]
    if not _UUID_RE.fullmatch(job_id):
        return _html(pages.message_page("Not valid", "That is not a job id.", viewer), status=400)
    if console.pool is None:
        return _html(pages.message_page("Unavailable", "No job index.", viewer), status=503)
    try:
        status = await IndexReader(console.pool).job(job_id.lower())
    except INDEX_ERRORS:
        return _html(
            pages.message_page("Unavailable", "The job index is down.", viewer), status=503
        )
    if status is None:
        return _html(pages.message_page("Not found", "No such job.", viewer), status=404)
    return _html(pages.job_page(status, viewer))


def dead_letter_filters(values: Mapping[str, str]) -> tuple[dlq.Filters, dict[str, str]]:
    """The dead-letter filters (errorType, stage, jobId) and, for pages, their shown values."""
    error_type = _pattern(values, "errorType", _ERROR_TYPE_RE)
    stage = _choice(values, "stage", STAGES)
    job_id = _pattern(values, "jobId", _UUID_RE)
    shown = {"errorType": error_type or "", "stage": stage or "", "jobId": job_id or ""}
    filters = dlq.Filters(
        error_types=frozenset({error_type}) if error_type else frozenset(),
        stages=frozenset({stage}) if stage else frozenset(),
        job_ids=frozenset({job_id.lower()}) if job_id else frozenset(),
    )
    return filters, shown


async def dead_letters(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    viewer = _viewer(_session_of(request))
    query = {k: v for k, v in request.query.items() if isinstance(v, str)}
    try:
        filters, shown = dead_letter_filters(query)
    except BadFilter as exc:
        return _bad_filter(exc, viewer)
    view = await data.dead_letters(console.broker(), console.names, filters, console.cipher)
    return _html(pages.dead_letters_page(view, shown, viewer))


async def dead_letter(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    viewer = _viewer(_session_of(request))
    identity = request.match_info["identity"]
    if not _IDENTITY_RE.fullmatch(identity):
        return _html(
            pages.message_page("Not valid", "That is not an identity.", viewer), status=400
        )
    view = await data.dead_letters(
        console.broker(),
        console.names,
        dlq.Filters(identities=frozenset({identity})),
        console.cipher,
    )
    if not view.letters:
        return _html(pages.message_page("Not found", "No such dead letter.", viewer), status=404)
    return _html(pages.letter_page(view.letters[0], viewer))


def _form_text(form: Mapping[str, object]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "identity"}


def _require(session: Session, permission: Permission) -> None:
    if not session.allows(permission):
        raise web.HTTPForbidden(text=f"needs the {permission} permission")


def _to_stage(values: Mapping[str, str]) -> Stage | None:
    chosen = _choice(values, "toStage", STAGES)
    return next((s for s in STAGES if s == chosen), None)


@dataclass(frozen=True)
class _ActionForm:
    """A replay or purge form, checked: who sends it, what it asks, and its filters (with the
    target stage, for a replay, among the filters shown and audited)."""

    console: Console
    session: Session
    action: str
    identities: frozenset[str]
    filters: dlq.Filters
    shown: dict[str, str]
    to_stage: Stage | None


async def _action_form(request: web.Request) -> _ActionForm:
    """Raises BadFilter for a filter that is not valid; needs the operator permission."""
    session = _session_of(request)
    _require(session, "operator")
    action = request.match_info["action"]
    form = await request.post()
    values = _form_text(form)
    filters, shown = dead_letter_filters(values)
    to_stage = _to_stage(values)
    if action == "replay":
        shown["toStage"] = to_stage or ""
    identities = frozenset(v for v in form.getall("identity", []) if isinstance(v, str))
    return _ActionForm(request.app[CONSOLE], session, action, identities, filters, shown, to_stage)


async def plan(request: web.Request) -> web.Response:
    """POST /dead-letters/{replay,purge}: the dry run, and the confirmation form."""
    try:
        asked = await _action_form(request)
    except BadFilter as exc:
        return _bad_filter(exc, _viewer(_session_of(request)))
    console = asked.console
    view = await data.dead_letters(console.broker(), console.names, asked.filters, console.cipher)
    planned = [
        (letter, dlq.target_stage(letter, asked.to_stage) if asked.action == "replay" else None)
        for letter in view.letters
    ]
    if asked.action == "replay":
        planned = [(letter, stage) for letter, stage in planned if stage is not None]
    return _html(pages.plan_page(asked.action, planned, asked.shown, _viewer(asked.session)))


async def confirm(request: web.Request) -> web.Response:
    """POST /dead-letters/{replay,purge}/confirm: audit first, then act on exactly the
    identities the dry run listed."""
    try:
        asked = await _action_form(request)
    except BadFilter as exc:
        return _bad_filter(exc, _viewer(_session_of(request)))
    console, session, action, identities = (
        asked.console,
        asked.session,
        asked.action,
        asked.identities,
    )
    if not identities or not all(_IDENTITY_RE.fullmatch(i) for i in identities):
        return _html(
            pages.message_page("Not valid", "Nothing to act on.", _viewer(session)), status=400
        )
    if console.pool is None:
        text = "Replay and purge are audited: they need SCRIBE_DATABASE_URL."
        return _html(pages.message_page("Unavailable", text, _viewer(session)), status=503)
    try:
        audit_id = await console.pool.fetchval(
            _AUDIT_START, session.user, action, json.dumps(asked.shown), len(identities)
        )
    except INDEX_ERRORS:
        text = "The audit table cannot be written; nothing was changed."
        return _html(pages.message_page("Unavailable", text, _viewer(session)), status=503)
    done, summary = 0, "failed"
    try:
        done, summary = await _act(console, action, identities, asked.to_stage)
    finally:
        with contextlib.suppress(*INDEX_ERRORS):
            await console.pool.execute(
                _AUDIT_END, audit_id, done, "done" if summary != "failed" else "failed"
            )
    return _html(pages.done_page(action, summary, _viewer(session)))


async def _act(
    console: Console, action: str, identities: frozenset[str], to_stage: Stage | None
) -> tuple[int, str]:
    reader = await dlq.DeadLetterReader.open(console.broker(), console.names, console.cipher)
    try:
        if action == "purge":
            purged = await dlq.purge(reader, set(identities))
            return purged, f"purged={purged}"
        return await _replay(console, reader, identities, to_stage)
    finally:
        await reader.close()


async def _replay(
    console: Console,
    reader: dlq.DeadLetterReader,
    identities: frozenset[str],
    to_stage: Stage | None,
) -> tuple[int, str]:
    worker = console.settings.worker
    ledger: dlq.ReplayLedger = dlq.NoReplayLedger()
    if worker.redis_url is not None:
        ledger = await dlq.RedisReplayLedger.connect(worker.redis_url.value, worker.prefix)
    channel = await console.broker().channel(publisher_confirms=True, on_return_raises=True)
    publisher = Publisher(channel)
    options = dlq.ReplayOptions(
        filters=dlq.Filters(identities=identities), to_stage=to_stage, cipher=console.cipher
    )
    try:
        summary = await dlq.replay(reader, publisher, console.names, options, ledger)
    finally:
        await publisher.close()
        await ledger.close()
    return summary.replayed, summary.line()


def build_app(console: Console) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, require_session], client_max_size=MAX_FORM_BYTES
    )
    app[CONSOLE] = console
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/static/console.css", stylesheet)
    app.router.add_get("/", overview)
    app.router.add_get("/jobs", jobs)
    app.router.add_get("/jobs/{job_id}", job)
    app.router.add_get("/dead-letters", dead_letters)
    app.router.add_get("/dead-letters/{identity}", dead_letter)
    app.router.add_post("/dead-letters/{action:replay|purge}", plan)
    app.router.add_post("/dead-letters/{action:replay|purge}/confirm", confirm)
    return app
