"""A real HTTP server on 127.0.0.1 answering canned vendor bodies.

aioresponses cannot carry bodies much over 128 KiB (its fake stream pauses a protocol that has no
parser), and it bypasses aiohttp's reading and decoding, which is what the hostile-answer tests
(issue 12) are about; so those tests answer over loopback instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestServer


class Loopback:
    """Answers every request with `body` / `status` (JSON by default) and records requests."""

    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.status = 200
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.base = ""

    def answer(
        self, body: bytes | str, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.body = body.encode() if isinstance(body, str) else body
        self.status = status
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (request.method, request.path, dict(request.headers), await request.read())
        )
        return web.Response(body=self.body, status=self.status, headers=self.headers)


@contextlib.asynccontextmanager
async def loopback_server() -> AsyncIterator[Loopback]:
    state = Loopback()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()
