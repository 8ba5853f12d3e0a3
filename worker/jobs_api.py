"""The status API on the worker's HTTP port: GET /jobs/{jobId} and GET /jobs, from the job index.

Behind a bearer token when SCRIBE_API_TOKEN is set (compared in constant time). Every query
parameter is checked; a refusal names the parameter and what it accepts, never the value sent
(which could be anything, patient text included). Answers are written through the models in
schemas/status.py, which schemas/openapi.json documents.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final, cast

import structlog
from aiohttp import web

from schemas.base import RFC3339_TEXT, UUID_TEXT
from schemas.status import (
    DEFAULT_PAGE_SIZE,
    ERROR_TYPE_PATTERN,
    JOB_OUTCOMES,
    MAX_PAGE_SIZE,
    PROVIDER_PATTERN,
    ApiError,
    JobOutcome,
    JobPage,
)
from worker.constants import STAGES, Stage
from worker.jobindex import INDEX_ERRORS, IndexReader, JobFilter
from worker.settings import Secret

log = structlog.get_logger("scribe.jobs_api")

JOBS_PATH: Final = "/jobs"
JOB_PATH: Final = "/jobs/{jobId}"
LIST_PARAMETERS: Final = ("stage", "outcome", "errorType", "provider", "since", "until", "limit")
_ERROR_TYPE = re.compile(ERROR_TYPE_PATTERN[1:-1], re.ASCII)
_PROVIDER = re.compile(PROVIDER_PATTERN[1:-1], re.ASCII)
_MAX_PARAMETER_CHARS = 64
_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadQuery(ValueError):
    """A query parameter the API does not accept; the message names it, never its value."""


def _refusal(status: int, error: str, detail: str) -> web.Response:
    body = ApiError.model_validate({"error": error, "detail": detail})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.Response(status=status, body=body.to_wire(), content_type=_JSON, headers=headers)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadQuery(f"{name}: use one of {', '.join(allowed)}")
    return value


def _matching(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise BadQuery(f"{name}: expected {pattern.pattern}")
    return value


def _instant(name: str, value: str) -> datetime:
    if not RFC3339_TEXT.fullmatch(value):
        raise BadQuery(f"{name}: expected an RFC 3339 date-time with an offset")
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise BadQuery(f"{name}: not a date that exists") from exc


def _limit(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise BadQuery(f"limit: expected an integer from 1 to {MAX_PAGE_SIZE}")
    return int(value)


def parse_filter(query: dict[str, list[str]]) -> JobFilter:
    """GET /jobs's query, each parameter at most once, each value checked."""
    unknown = sorted(set(query) - set(LIST_PARAMETERS))
    if unknown:
        raise BadQuery(f"unknown parameter; use {', '.join(LIST_PARAMETERS)}")
    values: dict[str, str] = {}
    for name, given in query.items():
        if len(given) != 1:
            raise BadQuery(f"{name}: give it once")
        if len(given[0]) > _MAX_PARAMETER_CHARS:
            raise BadQuery(f"{name}: at most {_MAX_PARAMETER_CHARS} characters")
        values[name] = given[0]
    since = _instant("since", values["since"]) if "since" in values else None
    until = _instant("until", values["until"]) if "until" in values else None
    stage = values.get("stage")
    outcome = values.get("outcome")
    error_type = values.get("errorType")
    provider = values.get("provider")
    return JobFilter(
        stage=cast(Stage, _choice("stage", stage, STAGES)) if stage is not None else None,
        outcome=cast(JobOutcome, _choice("outcome", outcome, JOB_OUTCOMES))
        if outcome is not None
        else None,
        error_type=_matching("errorType", error_type, _ERROR_TYPE)
        if error_type is not None
        else None,
        provider=_matching("provider", provider, _PROVIDER) if provider is not None else None,
        since=since,
        until=until,
        limit=_limit(values["limit"]) if "limit" in values else DEFAULT_PAGE_SIZE,
    )


class JobsApi:
    def __init__(self, reader: IndexReader, token: Secret | None) -> None:
        self._reader = reader
        self._token = token.value.encode("utf-8") if token is not None else None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(JOBS_PATH, self._guarded(self._list))
        app.router.add_get(JOB_PATH, self._guarded(self._one))

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self._token)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request):
                return _refusal(401, "unauthorized", "a valid bearer token is required")
            try:
                return await handler(request)
            except BadQuery as exc:
                return _refusal(400, "badRequest", str(exc))
            except INDEX_ERRORS as exc:
                log.warning("index.read_failed", error=type(exc).__name__)
                return _refusal(503, "indexUnavailable", "the job index cannot be read now")

        return guarded

    async def _one(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["jobId"]
        if not UUID_TEXT.fullmatch(job_id):
            raise BadQuery("jobId: expected a UUID (8-4-4-4-12 hex digits)")
        status = await self._reader.job(job_id.lower())
        if status is None:
            return _refusal(404, "notFound", "the index holds no job with this jobId")
        return web.Response(body=status.to_wire(), content_type=_JSON)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        query = {name: request.query.getall(name) for name in request.query}
        wanted = parse_filter(query)
        page = JobPage(jobs=await self._reader.jobs(wanted), limit=wanted.limit)
        return web.Response(body=page.to_wire(), content_type=_JSON)
