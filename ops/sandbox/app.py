"""The aiohttp application: vendor routes behind one wrapper that counts calls,
adds latency, injects transport faults and runs the guards; plus the control API."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ops.sandbox import control, intron, invox, llm
from ops.sandbox.config import SandboxConfig
from ops.sandbox.faults import TRANSPORT_KINDS, FaultRule
from ops.sandbox.guards import INTRON, INVOX, LLM, NO_AUTH, guard
from ops.sandbox.replies import Abort, malformed, vendor_error
from ops.sandbox.state import SandboxState

Handler = Callable[[web.Request, SandboxState], Awaitable[web.Response]]

STATE: Final = web.AppKey("sandbox_state", SandboxState)
CLIENT_MAX_SIZE: Final = 16 * 1024 * 1024
SHUTDOWN_TIMEOUT_S: Final = 1.0

# (method, path as the vendor pages write it, endpoint name, auth, handler)
VENDOR_ROUTES: Final[tuple[tuple[str, str, str, str, Handler], ...]] = (
    ("POST", "/file/v1/upload", "intron.upload", INTRON, intron.upload),
    ("GET", "/file/v1/status/{file_id}", "intron.status", INTRON, intron.status),
    ("POST", "/auth/token", "invox.token", NO_AUTH, invox.token),
    ("POST", "/api/v1/generate-presigned-url", "invox.presign", INVOX, invox.presign),
    ("PUT", "/_uploads/audio/{request_id}", "invox.audio_put", NO_AUTH, invox.audio_put),
    ("POST", "/api/v1/get-transcription", "invox.transcription", INVOX, invox.transcription),
    ("POST", "/api/v1/generate-consultation-summary", "invox.summary", INVOX, invox.summary),
    ("POST", "/api/v1/generate-clinical-note-from-summary", "invox.note", INVOX, invox.note),
    ("POST", "/v1/generate-signed-urls-for-documents", "invox.documents", INVOX, invox.documents),
    ("PUT", "/_uploads/documents/{document_id}", "invox.document_put", NO_AUTH, invox.document_put),
    ("POST", "/v1/chat/completions", "llm.chat", LLM, llm.chat),
)
CONTROL_ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/_sandbox/faults", control.get_faults),
    ("POST", "/_sandbox/faults", control.set_faults),
    ("DELETE", "/_sandbox/faults", control.clear_faults),
    ("GET", "/_sandbox/config", control.get_config),
    ("POST", "/_sandbox/config", control.set_config),
    ("GET", "/_sandbox/stats", control.stats),
    ("POST", "/_sandbox/reset", control.reset),
)


def _fault_response(endpoint: str, fault: FaultRule) -> web.Response:
    if fault.kind == "malformed":
        return malformed(fault.body)
    if fault.kind == "rate_limit":
        headers = {"Retry-After": str(fault.retry_after_s)}
        return vendor_error(endpoint, 429, fault.message, fault.error_type, headers)
    return vendor_error(endpoint, fault.status, fault.message, fault.error_type)


async def _answer(
    request: web.Request, state: SandboxState, endpoint: str, auth: str, handler: Handler
) -> web.Response:
    if state.knobs.latency_ms:
        await asyncio.sleep(state.knobs.latency_ms / 1000)
    fault = state.faults.take(endpoint, TRANSPORT_KINDS)
    if fault is not None and fault.kind == "timeout":
        await asyncio.sleep(fault.delay_s)
    elif fault is not None and fault.kind != "slow_answer":
        return _fault_response(endpoint, fault)
    try:
        guard(request, state, endpoint, auth)
        response = await handler(request, state)
    except Abort as abort:
        return abort.response
    if fault is not None and fault.kind == "slow_answer":
        await asyncio.sleep(fault.delay_s)
    return response


def _vendor_handler(
    endpoint: str, auth: str, handler: Handler
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        state.stats.calls[endpoint] += 1
        response = await _answer(request, state, endpoint, auth, handler)
        state.stats.record(endpoint, response.status)
        return response

    return handle


def _control_handler(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await handler(request, request.app[STATE])

    return handle


def build_app(config: SandboxConfig | None = None) -> web.Application:
    """An application serving both vendors and /_sandbox/ on one host root."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[STATE] = SandboxState(config or SandboxConfig())
    for method, path, endpoint, auth, handler in VENDOR_ROUTES:
        app.router.add_route(method, path, _vendor_handler(endpoint, auth, handler))
    for method, path, handler in CONTROL_ROUTES:
        app.router.add_route(method, path, _control_handler(handler))
    app.on_cleanup.append(_stop_background)
    return app


async def _stop_background(app: web.Application) -> None:
    """Ready timers and callbacks still pending when the emulator stops are cancelled."""
    tasks = set(app[STATE].background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class RunningSandbox:
    """A listening emulator: where to reach it and its live state."""

    base_url: str
    state: SandboxState
    app: web.Application


def url_host(host: str) -> str:
    """`host` as it goes in a URL (IPv6 literals need brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


@asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSandbox]:
    """Serve the emulator on host:port (0 = any free port) for the `async with` body."""
    app = build_app(config)
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        yield RunningSandbox(f"http://{url_host(host)}:{bound_port}", app[STATE], app)
    finally:
        await runner.cleanup()
