"""The URL policy's decisions (issue 12, items 6, 8 and 11).

Every test here checks a decision: IP literals are judged without DNS (a getaddrinfo that fails
the test stands in for the network), and the only connections made go to a server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import wave
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from schemas.errors import ErrorType
from schemas.jobs import AudioRef
from worker import media
from worker.errors import PermanentError, ScribeError
from worker.media import (
    AddressNotAllowed,
    FetchPolicy,
    MediaFetcher,
    PolicyResolver,
    address_allowed,
    check_upload_url,
    check_url,
    fetch_session,
)

OPEN = FetchPolicy(allowlist=frozenset(), storage_root=None, timeout_s=5)


@pytest.fixture(autouse=True)
def _numeric_hosts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may send a DNS query: getaddrinfo reads numeric addresses only."""
    real = socket.getaddrinfo

    def numeric_only(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)


def _forbid_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """IP literals must be judged by the address itself: any lookup fails the test."""

    async def no_dns(*_args: object, **_kwargs: object) -> list[Any]:
        raise AssertionError("check_url looked up an IP literal")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)


def _teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380): 2001::/32, the server's IPv4, flags, port, ~client IPv4."""
    server_bits = int(ipaddress.IPv4Address(server))
    client_bits = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    value = (0x20010000 << 96) | (server_bits << 64) | (0x8000 << 48) | (0x63BF << 32)
    return str(ipaddress.IPv6Address(value | client_bits))


EMBEDDED_PRIVATE = [
    "64:ff9b::a00:5",  # NAT64 well-known prefix, 10.0.0.5
    "64:ff9b::7f00:1",  # NAT64, 127.0.0.1
    "64:ff9b:1::a00:5",  # NAT64 local-use /48 with a /96 layout, 10.0.0.5
    "64:ff9b:1:a00:0:500::",  # NAT64 local-use, RFC 6052 /48 layout, 10.0.0.5
    "2002:a00:5::",  # 6to4, 10.0.0.5
    "2002:7f00:1::",  # 6to4, 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4, 169.254.169.254
    _teredo("65.54.227.120", "10.0.0.5"),  # Teredo, private client
    _teredo("10.0.0.5", "8.8.8.8"),  # Teredo, private server
    "::ffff:10.0.0.5",  # IPv4-mapped
    "::ffff:7f00:1",  # IPv4-mapped, 127.0.0.1
    "::127.0.0.1",  # IPv4-compatible
    "::a00:5",  # IPv4-compatible, 10.0.0.5
    "::",
    "::1",
]
EMBEDDED_PUBLIC = [
    "64:ff9b::808:808",
    "2002:808:808::",
    _teredo("65.54.227.120", "8.8.8.8"),
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize(
    ("prefix_length", "address"),
    [  # RFC 6052 section 2.4: 192.0.2.33 under 2001:db8:122:344::/prefix_length
        (48, "2001:db8:122:c000:2:2100::"),
        (56, "2001:db8:122:3c0:0:221::"),
        (64, "2001:db8:122:344:c0:2:2100:0"),
        (96, "2001:db8:122:344::c000:221"),
    ],
)
def test_nat64_layouts_follow_rfc_6052(prefix_length: int, address: str) -> None:
    value = int(ipaddress.IPv6Address(address))
    assert media._rfc6052_ipv4(value, prefix_length) == ipaddress.IPv4Address("192.0.2.33")


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_addresses_that_embed_a_private_ipv4_are_refused(address: str) -> None:
    assert address_allowed(address) is False
    assert address_allowed(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize(
    "address", [*EMBEDDED_PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address) is True


@pytest.mark.parametrize(
    "address", ["224.0.0.1", "239.255.255.250", "ff0e::1", "ff02::1", "100.64.0.1", "fe80::1%2"]
)
def test_multicast_shared_and_link_local_addresses_are_refused(address: str) -> None:
    assert address_allowed(address) is False


@pytest.mark.parametrize(
    "url",
    [
        *(f"https://[{address}]/a.wav" for address in EMBEDDED_PRIVATE),
        "https://[64:ff9b::a00:5]:8443/a.wav",
        "https://224.0.0.1/a.wav",
        "https://2130706433/a.wav",  # 127.0.0.1 as one number
        "https://127.1/a.wav",
        "https://0x7f.1/a.wav",
        "https://017700000001/a.wav",  # octal
        "https://0177.0.0.1/a.wav",
    ],
)
async def test_ip_literals_are_judged_without_dns(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_dns(monkeypatch)
    with pytest.raises(PermanentError) as caught:
        await check_url(url, OPEN, ErrorType.AUDIO_UNAVAILABLE)
    assert caught.value.error_type == ErrorType.URL_NOT_ALLOWED
    assert url.split("/")[2] not in caught.value.message


@pytest.mark.parametrize(
    "url", [f"https://[{address}]/a.wav" for address in EMBEDDED_PUBLIC] + ["https://8.8.8.8/"]
)
async def test_public_ip_literals_pass_without_dns(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_dns(monkeypatch)
    await check_url(url, OPEN, ErrorType.AUDIO_UNAVAILABLE)


MALFORMED = [
    "https://[127.0.0.1]/a.wav",  # an IPv4 address in brackets
    "https://h:abc/a.wav",  # a port that is not a number
    "https://h:99999/a.wav",  # a port out of range
    "https://h:0/a.wav",  # port 0 cannot be connected to
    "https://[::1/a.wav",  # an unclosed bracket
    "https://[v1.x]/a.wav",  # IPvFuture
    "https://\u2100/a.wav",  # a netloc that NFKC turns into 'a/c'
    "https://a..b/a.wav",  # an empty label (UnicodeError from the idna codec)
    pytest.param(f"https://{'a' * 64}.example/a.wav", id="label-over-63"),
    "https://h\x00st/a.wav",  # a NUL in the host
    "https://h%41st/a.wav",  # a percent sign in a host name
    "https://127.0.0.1\\@example.com/a.wav",  # urlsplit and aiohttp would disagree on the host
    "https://1.2.3.4.5/a.wav",  # looks like an IP to aiohttp (no resolver check), is none
]


@pytest.mark.parametrize("url", MALFORMED)
async def test_malformed_urls_are_refused_at_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_dns(monkeypatch)
    with pytest.raises(PermanentError) as caught:
        await check_url(url, OPEN, ErrorType.AUDIO_UNAVAILABLE)
    assert caught.value.error_type == ErrorType.URL_NOT_ALLOWED
    assert "a.wav" not in caught.value.message


@pytest.mark.parametrize("url", MALFORMED[:3])
async def test_malformed_urls_fail_the_job_as_url_not_allowed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through MediaFetcher: no ValueError escapes as internalError."""
    _forbid_dns(monkeypatch)
    async with fetch_session(OPEN) as session:
        fetcher = MediaFetcher(session, OPEN, 10**6, 60.0, 10**6)
        with pytest.raises(PermanentError) as caught:
            async with fetcher.audio(AudioRef(url=url)):
                pass
    assert caught.value.error_type == ErrorType.URL_NOT_ALLOWED


@pytest.mark.parametrize(
    "url",
    [
        *(f"https://[{address}]/put" for address in EMBEDDED_PRIVATE),
        *MALFORMED,
        "http://uploads.example/put",  # plain http to a host not allow-listed
        "ftp://uploads.example/put",
        "https:///put",
        "https://10.0.0.5/put",
        "https://[fe80::1%25eth0]/put",
    ],
)
def test_upload_urls_are_judged_synchronously(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        check_upload_url(url, frozenset())
    assert caught.value.error_type == ErrorType.URL_NOT_ALLOWED
    assert "put" not in caught.value.message


def test_upload_urls_that_pass() -> None:
    check_upload_url("https://bucket.s3.eu-west-1.amazonaws.com/k?X-Amz-Signature=ab", frozenset())
    check_upload_url("https://[2606:4700:4700::1111]/put", frozenset())
    check_upload_url("https://8.8.8.8/put", frozenset())
    check_upload_url("http://127.0.0.1:9000/put", frozenset({"127.0.0.1"}))
    check_upload_url("https://localhost/put", frozenset({"localhost"}))


class _Answers(AbstractResolver):
    """A DNS stand-in: every name resolves to the given address."""

    def __init__(self, address: str) -> None:
        self._address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host, host=self._address, port=port, family=family, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("address", ["64:ff9b::a00:5", "::ffff:7f00:1", "2002:a00:5::"])
async def test_resolver_judges_embedded_ipv4_answers(address: str) -> None:
    with pytest.raises(AddressNotAllowed):
        await PolicyResolver(frozenset(), _Answers(address)).resolve("cdn.example", 443)
    assert await PolicyResolver(frozenset(), _Answers("64:ff9b::808:808")).resolve("a.example")


def _wav_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 8000)
    return buffer.getvalue()


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[int, list[str]]]:
    """A server on 127.0.0.1: the port and the paths it was asked for."""
    seen: list[str] = []
    audio = _wav_bytes()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/bad-redirect":
            return web.Response(status=302, headers={"Location": "https://[::1/x"})
        return web.Response(body=audio, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


async def _fetch(url: str, allowlist: frozenset[str]) -> tuple[str, float] | ScribeError:
    policy = FetchPolicy(allowlist=allowlist, storage_root=None, timeout_s=5)
    async with fetch_session(policy) as session:
        fetcher = MediaFetcher(session, policy, 10**6, 60.0, 10**6)
        try:
            async with fetcher.audio(AudioRef(url=url)) as audio:
                return audio.file_name, audio.duration_s
        except ScribeError as exc:
            return exc


async def test_dns_rebinding_is_refused_as_url_not_allowed(
    loopback: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_url's lookup answers a public address, the connect-time lookup 127.0.0.1."""
    port, seen = loopback
    lookups: list[str] = []

    async def rebinding(host: str, *args: object, **kwargs: object) -> list[Any]:
        lookups.append(host)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    outcome = await _fetch(f"https://rebind.test:{port}/a.wav", frozenset())
    assert isinstance(outcome, PermanentError), outcome
    assert outcome.error_type == ErrorType.URL_NOT_ALLOWED
    assert "rebind" not in outcome.message
    assert lookups == ["rebind.test", "rebind.test"]
    assert seen == []


async def test_a_malformed_redirect_target_is_url_not_allowed(
    loopback: tuple[int, list[str]],
) -> None:
    port, seen = loopback
    outcome = await _fetch(f"http://127.0.0.1:{port}/bad-redirect", frozenset({"127.0.0.1"}))
    assert isinstance(outcome, PermanentError), outcome
    assert outcome.error_type == ErrorType.URL_NOT_ALLOWED
    assert seen == ["/bad-redirect"]


@pytest.mark.parametrize(
    ("tail", "file_name"),
    [
        ("..", "download"),  # urlsplit keeps '/..' (aiohttp asks for '/')
        pytest.param("\u20ac" * 100, "\u20ac" * 33, id="300-bytes"),  # a name holds 255
        ("a\x00b.wav", "ab.wav"),  # a NUL in the path: no file name can hold it
    ],
)
async def test_hostile_download_names_do_not_break_the_download(
    loopback: tuple[int, list[str]], tail: str, file_name: str
) -> None:
    port, _seen = loopback
    outcome = await _fetch(f"http://127.0.0.1:{port}/{tail}", frozenset({"127.0.0.1"}))
    assert not isinstance(outcome, ScribeError), outcome
    assert outcome[0] == file_name
    assert outcome[1] == pytest.approx(1.0)


def test_teredo_helper_matches_the_stdlib() -> None:
    """The test's own Teredo addresses are what the standard library reads them as."""
    teredo = ipaddress.IPv6Address(_teredo("65.54.227.120", "10.0.0.5")).teredo
    assert teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("10.0.0.5"))
