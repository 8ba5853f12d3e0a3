"""The /_sandbox/ control API: faults, knobs, stats and reset, without restarting.

No auth: the emulator only listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ops.sandbox.faults import FaultRule
from ops.sandbox.state import SandboxState


def _refuse(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None


async def get_faults(request: web.Request, state: SandboxState) -> web.Response:
    return web.json_response({"faults": state.faults.to_json()})


async def set_faults(request: web.Request, state: SandboxState) -> web.Response:
    """Replace all rules with a JSON list of rules (all valid, or nothing changes)."""
    body = await _json(request)
    if not isinstance(body, list):
        return _refuse("body must be a JSON list of fault rules")
    try:
        rules = [FaultRule.parse(rule) for rule in body]
    except ValueError as exc:
        return _refuse(str(exc))
    state.faults.replace(rules)
    return await get_faults(request, state)


async def clear_faults(request: web.Request, state: SandboxState) -> web.Response:
    state.faults.clear()
    return await get_faults(request, state)


async def get_config(request: web.Request, state: SandboxState) -> web.Response:
    return web.json_response(state.knobs.to_json())


async def set_config(request: web.Request, state: SandboxState) -> web.Response:
    """Partial knob update; `revoke_tokens: true` also invalidates issued tokens."""
    body = await _json(request)
    if not isinstance(body, dict):
        return _refuse("body must be a JSON object of knobs")
    revoke = body.pop("revoke_tokens", False)
    if not isinstance(revoke, bool):
        return _refuse("revoke_tokens must be a boolean")
    try:
        state.knobs.update(body)
    except ValueError as exc:
        return _refuse(str(exc))
    if revoke:
        state.revoke_tokens()
    return await get_config(request, state)


async def stats(request: web.Request, state: SandboxState) -> web.Response:
    return web.json_response(state.stats_json())


async def reset(request: web.Request, state: SandboxState) -> web.Response:
    state.reset()
    return web.json_response({"reset": True})
