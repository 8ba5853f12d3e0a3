"""Invox bearer tokens: a static token, a token URL, or both; cached; refreshed once on a 401.

The Invox token endpoint is not public, so its URL is configurable (SCRIBE_INVOX_TOKEN_URL). It is
POSTed {"appId", "appKey"} and answers {"accessToken", "expiresIn"} (snake_case accepted too).
Tokens live 2 hours; we use one until `refresh_margin_s` before it expires.

- Static token only: `token()` returns it; `refresh()` cannot help and raises
  PermanentError(unauthorized).
- Token URL only: fetched on first use, cached, fetched again near expiry or on `refresh()`.
- Both: the static token is used until Invox rejects it, then the token URL takes over.

Concurrent callers share one fetch: fetching happens under one asyncio.Lock, and `refresh(stale)`
fetches only if the current token is still the stale one the caller was rejected with.
Tokens never appear in exceptions, logs or repr.

The token answer is vendor JSON like any other: a token that is not one printable word of at most
MAX_TOKEN_CHARS (it becomes an HTTP header: a newline would be header injection, and aiohttp
would refuse it later with a ValueError) or an expiresIn that is not a finite positive number
(1e400, 10**400, "nan") -> malformedResponse.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from typing import Final

from schemas.errors import ErrorType
from worker.constants import INVOX_TOKEN_LIFETIME_S
from worker.errors import PermanentError
from worker.providers.http import (
    AuthenticationRejected,
    JsonObject,
    VendorHttp,
    finite_number,
    malformed,
)
from worker.settings import InvoxSettings

TOKEN_ENDPOINT: Final = "invox.token"  # noqa: S105 - an endpoint name, not a secret
DEFAULT_REFRESH_MARGIN_S: Final = 300.0
MAX_TOKEN_CHARS: Final = 8192
# RFC 6750 b64token characters (JWTs and opaque tokens alike): nothing that could break a header.
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class InvoxTokenSource:
    def __init__(
        self,
        settings: InvoxSettings,
        http: VendorHttp,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._margin_s = refresh_margin_s
        self._lock = asyncio.Lock()
        self._token: str | None = (
            settings.access_token.value if settings.access_token is not None else None
        )
        # A static token's lifetime is unknown: it is used until Invox rejects it.
        self._valid_until = math.inf
        self._fetches = 0

    def __repr__(self) -> str:
        return f"InvoxTokenSource(can_refresh={self.can_refresh})"

    @property
    def can_refresh(self) -> bool:
        return self._settings.token_url is not None

    @property
    def fetches(self) -> int:
        """How many times a token was fetched from the token URL (for tests and metrics)."""
        return self._fetches

    async def token(self) -> str:
        current = self._current()
        if current is not None:
            return current
        async with self._lock:
            current = self._current()
            if current is not None:
                return current
            return await self._fetch()

    async def refresh(self, stale: str) -> str:
        """A token other than `stale`, which Invox just rejected; one fetch for all callers."""
        if not self.can_refresh:
            raise PermanentError(
                ErrorType.UNAUTHORIZED,
                "invox: the static access token was rejected and no token URL is configured",
                http_status=401,
            )
        async with self._lock:
            current = self._current()
            if current is not None and current != stale:
                return current
            return await self._fetch()

    def _current(self) -> str | None:
        if self._token is not None and self._clock() < self._valid_until:
            return self._token
        return None

    async def _fetch(self) -> str:
        settings = self._settings
        if settings.token_url is None:
            raise PermanentError(
                ErrorType.PROVIDER_NOT_CONFIGURED,
                "invox: no access token and no token URL configured",
            )
        if settings.app_id is None or settings.app_key is None:
            raise PermanentError(
                ErrorType.PROVIDER_NOT_CONFIGURED, "invox: token URL needs an app id and app key"
            )
        payload = json.dumps({"appId": settings.app_id, "appKey": settings.app_key.value})
        self._fetches += 1
        try:
            body = await self._http.request_json(
                "invox",
                TOKEN_ENDPOINT,
                "POST",
                settings.token_url,
                headers={"Content-Type": "application/json"},
                data=payload.encode(),
            )
        except AuthenticationRejected:
            raise PermanentError(
                ErrorType.UNAUTHORIZED,
                f"{TOKEN_ENDPOINT}: the app id and app key were rejected",
                http_status=401,
            ) from None
        token, lifetime_s = _parse_token(body)
        self._token = token
        self._valid_until = self._clock() + lifetime_s - min(self._margin_s, lifetime_s / 2)
        return token


def _parse_token(body: JsonObject) -> tuple[str, float]:
    token = body.get("accessToken", body.get("access_token"))
    if not isinstance(token, str) or not token.strip():
        raise malformed(TOKEN_ENDPOINT, "response has no accessToken")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise malformed(TOKEN_ENDPOINT, "accessToken is not a bearer token")
    return token, _lifetime_s(body.get("expiresIn", body.get("expires_in")))


def _lifetime_s(expires: object) -> float:
    if expires is None:
        return float(INVOX_TOKEN_LIFETIME_S)
    if isinstance(expires, str):
        try:
            expires = float(expires)
        except ValueError:
            raise malformed(TOKEN_ENDPOINT, "expiresIn is not a number") from None
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise malformed(TOKEN_ENDPOINT, "expiresIn is not a number")
    lifetime_s = finite_number(expires)
    if lifetime_s is None or lifetime_s <= 0:
        raise malformed(TOKEN_ENDPOINT, "expiresIn is not a positive number")
    return lifetime_s
