"""Invox callbacks from the emulator: a timed transcription (knob `ready_after_ms`) turns ready,
then, with the `callbacks` knob on, the emulator POSTs to the callbackUrl the presign named.

Loopback only: a callbackUrl whose host is not a loopback address (or `localhost`) is not
called (its status is recorded as 0), so the emulator never sends anything off the machine.
The vendor pages do not describe the body; the emulator sends its own guess, the requestId and
the status under the `invox_status_key` knob, and the worker relies on none of it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from ops.sandbox.state import InvoxTranscription, SandboxState
from worker.settings import is_loopback_host

ENDPOINT: Final = "invox.callback"
TIMEOUT_S: Final = 5.0


def loopback_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and is_loopback_host(host)


async def ready_later(
    state: SandboxState, record: InvoxTranscription, delay_s: float, call_back: bool
) -> None:
    """Sleep, mark the transcription ready (wall clock), then call back if asked to (the
    `callbacks` knob as it was when the audio was PUT)."""
    await asyncio.sleep(delay_s)
    record.ready_at_s = time.time()
    url = record.callback_url
    if url is None or not call_back:
        return
    record.callback_status = await _call_back(url, record, state.knobs.invox_status_key)
    state.stats.calls[ENDPOINT] += 1
    state.stats.record(ENDPOINT, record.callback_status)


async def _call_back(url: str, record: InvoxTranscription, status_key: str) -> int:
    if not loopback_url(url):
        return 0
    body = {"requestId": record.request_id, status_key: "COMPLETED"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=body, allow_redirects=False) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0
