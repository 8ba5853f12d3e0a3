"""InvoxTokenSource: static token, token URL, caching, one shared refresh."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from schemas.errors import ErrorType
from tests.fakes import FakeClock
from worker.errors import PermanentError, TransientError
from worker.providers.http import VendorHttp
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import InvoxSettings, Secret

TOKEN_URL = "https://auth.invox.test/oauth/token"
STATIC = "MARKER-STATIC-TOKEN"
FETCHED = "MARKER-FETCHED-TOKEN"
APP_KEY = "MARKER-APP-KEY"


@pytest.fixture
async def http() -> AsyncIterator[VendorHttp]:
    async with aiohttp.ClientSession() as session:
        yield VendorHttp(session, timeout_s=5.0)


def settings(*, static: str | None = None, token_url: str | None = TOKEN_URL) -> InvoxSettings:
    return InvoxSettings(
        base_url="https://api.invox.test",
        api_version="2026-03-01",
        access_token=Secret(static) if static else None,
        token_url=token_url,
        app_id="app-1" if token_url else None,
        app_key=Secret(APP_KEY) if token_url else None,
    )


def token_calls(mocked: aioresponses) -> int:
    return len(mocked.requests.get(("POST", URL(TOKEN_URL)), []))


def assert_clean(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for marker in (STATIC, FETCHED, APP_KEY, TOKEN_URL, "auth.invox.test"):
        assert marker not in text


async def test_invox_static_token_only(http: VendorHttp, mocked: aioresponses) -> None:
    source = InvoxTokenSource(settings(static=STATIC, token_url=None), http)
    assert await source.token() == STATIC
    assert not source.can_refresh
    with pytest.raises(PermanentError) as info:
        await source.refresh(STATIC)
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert_clean(info.value)
    assert STATIC not in repr(source)


async def test_invox_token_fetched_once_and_cached(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": FETCHED, "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http, clock=FakeClock())
    assert await source.token() == FETCHED
    assert await source.token() == FETCHED
    assert token_calls(mocked) == 1
    (request,) = mocked.requests[("POST", URL(TOKEN_URL))]
    assert json.loads(request.kwargs["data"]) == {"appId": "app-1", "appKey": APP_KEY}
    assert request.kwargs["headers"]["Content-Type"] == "application/json"
    assert FETCHED not in repr(source)


async def test_invox_token_snake_case_answer(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TOKEN_URL, payload={"access_token": FETCHED, "expires_in": "3600"})
    source = InvoxTokenSource(settings(), http)
    assert await source.token() == FETCHED


async def test_invox_token_refetched_after_expiry(http: VendorHttp, mocked: aioresponses) -> None:
    clock = FakeClock()
    mocked.post(TOKEN_URL, payload={"accessToken": "first", "expiresIn": 7200})
    mocked.post(TOKEN_URL, payload={"accessToken": "second", "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http, clock=clock, refresh_margin_s=300)
    assert await source.token() == "first"
    clock.now += 7200 - 301
    assert await source.token() == "first"
    clock.now += 2
    assert await source.token() == "second"
    assert token_calls(mocked) == 2


async def test_invox_token_without_expiry_uses_two_hours(
    http: VendorHttp, mocked: aioresponses
) -> None:
    clock = FakeClock()
    mocked.post(TOKEN_URL, payload={"accessToken": "first"})
    mocked.post(TOKEN_URL, payload={"accessToken": "second"})
    source = InvoxTokenSource(settings(), http, clock=clock, refresh_margin_s=300)
    assert await source.token() == "first"
    clock.now += 7200 - 301
    assert await source.token() == "first"
    clock.now += 2
    assert await source.token() == "second"


async def test_invox_refresh_of_stale_token_fetches(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": "first", "expiresIn": 7200})
    mocked.post(TOKEN_URL, payload={"accessToken": "second", "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http, clock=FakeClock())
    assert await source.token() == "first"
    assert await source.refresh("first") == "second"
    # Someone rejected with the old token gets the new one without another fetch.
    assert await source.refresh("first") == "second"
    assert token_calls(mocked) == 2


async def test_invox_concurrent_refreshes_share_one_fetch(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": "first", "expiresIn": 7200})
    mocked.post(TOKEN_URL, payload={"accessToken": "second", "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http, clock=FakeClock())
    stale = await source.token()
    results = await asyncio.gather(*(source.refresh(stale) for _ in range(10)))
    assert set(results) == {"second"}
    assert token_calls(mocked) == 2


async def test_invox_concurrent_first_use_shares_one_fetch(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": FETCHED, "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http, clock=FakeClock())
    results = await asyncio.gather(*(source.token() for _ in range(10)))
    assert set(results) == {FETCHED}
    assert token_calls(mocked) == 1
    assert source.fetches == 1


async def test_invox_static_and_url_uses_static_until_rejected(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": FETCHED, "expiresIn": 7200})
    source = InvoxTokenSource(settings(static=STATIC), http, clock=FakeClock())
    assert await source.token() == STATIC
    assert token_calls(mocked) == 0
    assert await source.refresh(STATIC) == FETCHED
    assert await source.token() == FETCHED


async def test_invox_token_endpoint_401_is_unauthorized(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, status=401, payload={"messsage": f"bad key {APP_KEY}"})
    source = InvoxTokenSource(settings(), http)
    with pytest.raises(PermanentError) as info:
        await source.token()
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert_clean(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"token": FETCHED},
        {"accessToken": ""},
        {"accessToken": FETCHED, "expiresIn": "soon"},
        {"accessToken": FETCHED, "expiresIn": -5},
        {"accessToken": FETCHED, "expiresIn": True},
    ],
)
async def test_invox_token_malformed_answer(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, object]
) -> None:
    mocked.post(TOKEN_URL, payload=payload)
    source = InvoxTokenSource(settings(), http)
    with pytest.raises(TransientError) as info:
        await source.token()
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)


async def test_invox_token_transient_failure_is_not_cached(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, status=503)
    mocked.post(TOKEN_URL, payload={"accessToken": FETCHED, "expiresIn": 7200})
    source = InvoxTokenSource(settings(), http)
    with pytest.raises(TransientError):
        await source.token()
    assert await source.token() == FETCHED


async def test_invox_no_credentials_is_not_configured(http: VendorHttp) -> None:
    source = InvoxTokenSource(settings(token_url=None), http)
    with pytest.raises(PermanentError) as info:
        await source.token()
    assert info.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED


@pytest.mark.parametrize(
    "body",
    [
        '{"accessToken": "MARKER-FETCHED-TOKEN", "expiresIn": 1' + "0" * 400 + "}",  # 10**400
        '{"accessToken": "MARKER-FETCHED-TOKEN", "expiresIn": 1e400}',
        '{"accessToken": "MARKER-FETCHED-TOKEN", "expiresIn": "1e400"}',
        '{"accessToken": "MARKER-FETCHED-TOKEN", "expiresIn": "nan"}',
        '{"accessToken": "MARKER-FETCHED-TOKEN", "expiresIn": [7200]}',
        '{"accessToken": "MARKER-FETCHED-TOKEN\\r\\nX-Injected: 1", "expiresIn": 7200}',
        '{"accessToken": "two words", "expiresIn": 7200}',
        '{"accessToken": "' + "a" * 8193 + '", "expiresIn": 7200}',
        '{"accessToken": ["MARKER-FETCHED-TOKEN"]}',
    ],
)
async def test_invox_token_hostile_answers_are_malformed(
    http: VendorHttp, mocked: aioresponses, body: str
) -> None:
    """Issue 12, item 8: 10**400 raised OverflowError (internalError); a token with CR LF was
    accepted and would have become a header."""
    mocked.post(TOKEN_URL, body=body, content_type="application/json")
    source = InvoxTokenSource(settings(), http)
    with pytest.raises(TransientError) as info:
        await source.token()
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)
