"""Checks every vendor call passes before its handler runs: auth, API version,
permissions and Intron's per-key rate limits, each failing the vendor's way."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ops.sandbox.replies import Abort, bearer, vendor_error
from ops.sandbox.state import SandboxState, same_secret
from schemas.errors import ErrorType

INTRON: Final = "intron"
INVOX: Final = "invox"
LLM: Final = "llm"  # a bearer key only when the config sets llm_api_key
NO_AUTH: Final = "none"
VERSION_HEADER: Final = "X-Invox-Medical-Api-Version"


def _valid(token: str, state: SandboxState, auth: str) -> bool:
    if auth == INTRON:
        return same_secret(token, state.config.intron_api_key)
    if auth == LLM:
        return state.config.llm_api_key is not None and same_secret(token, state.config.llm_api_key)
    return state.token_valid(token)


def _authenticate(request: web.Request, state: SandboxState, endpoint: str, auth: str) -> str:
    token = bearer(request)
    if auth == LLM and state.config.llm_api_key is None:
        return token or ""
    if token is None or not _valid(token, state, auth):
        raise Abort(vendor_error(endpoint, 401, "Unauthorized"))
    return token


def _rate_limit(state: SandboxState, endpoint: str, token: str) -> None:
    knobs = state.knobs
    limit = (
        knobs.intron_upload_rate_per_min
        if endpoint == "intron.upload"
        else knobs.intron_status_rate_per_min
    )
    retry_after = state.rate_windows.acquire(f"{endpoint}:{token}", limit, knobs.rate_window_s)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
        raise Abort(vendor_error(endpoint, 429, "rate limit exceeded", headers=headers))


def guard(request: web.Request, state: SandboxState, endpoint: str, auth: str) -> None:
    """Raise Abort unless the call may reach the handler of `endpoint`."""
    token = _authenticate(request, state, endpoint, auth) if auth != NO_AUTH else None
    if auth == INVOX and request.headers.get(VERSION_HEADER) not in state.config.api_versions:
        raise Abort(
            vendor_error(
                endpoint,
                400,
                f"{VERSION_HEADER} must be one of {', '.join(sorted(state.config.api_versions))}",
                ErrorType.INVALID_API_VERSION_FOR_ENDPOINT,
            )
        )
    if endpoint in state.knobs.forbidden:
        raise Abort(
            vendor_error(
                endpoint,
                403,
                "The API Key is not allowed to consume this service",
                state.knobs.forbidden_error_type,
            )
        )
    if auth == INTRON and token is not None:
        _rate_limit(state, endpoint, token)
