"""Binds a vendor's transcription handle to the job the worker obtained it for.

A poll message is only a body on the broker. Whoever can publish to `<prefix>.jobs` could
otherwise put another job's handle in it (and receive that patient's transcript in their own
job's events), a handle like `..` that turns Intron's status URL into another endpoint called
with our Bearer key, or a submittedAt in 2099 that the poll deadline never reaches. So the
transcribe stage signs (jobId, provider, handle, submittedAt) with HMAC-SHA256, and the poll
stage checks the handle's syntax and that signature before any vendor call (untrustedHandle).

The key is SCRIBE_HANDLE_KEY when it is set. Otherwise each vendor's key is derived from that
vendor's credentials, sha256(b"scribe-handle-key/" + provider + b"/" + credential): every
replica that can poll a vendor holds them, and a publisher who does not cannot sign a handle.
The price: rotating those credentials without SCRIBE_HANDLE_KEY makes the poll messages in
flight fail as untrustedHandle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import get_args

from schemas.errors import ErrorType
from schemas.jobs import TranscriberName, TranscriptionHandle
from worker.errors import PermanentError
from worker.settings import Secret, Settings

_KEY_CONTEXT = b"scribe-handle-key/"
_MAC_CONTEXT = "scribe-handle/v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Intron's file_id ("12a9760f-b165-4404-91d0-a65d4cdt78fs" in its docs, a UUID from our emulator)
# and Invox's requestId ("mock-requestId" in its docs, a UUID from our emulator). Conservative on
# purpose: no '/', '%', '?', '#' or whitespace, no leading '.' or '-', no '..' anywhere, so a
# handle is always one plain path segment or JSON string, never a way to another endpoint.
_VENDOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
HANDLE_SYNTAX: Mapping[str, re.Pattern[str]] = {
    "intron": _VENDOR_ID,
    "invox": _VENDOR_ID,
    "local": _VENDOR_ID,  # only the benchmark's instant provider issues these (a jobId)
}


def well_formed(handle: TranscriptionHandle) -> bool:
    syntax = HANDLE_SYNTAX.get(handle.provider)
    return (
        syntax is not None and bool(syntax.fullmatch(handle.handle)) and ".." not in handle.handle
    )


def handle_keys(settings: Settings) -> dict[str, bytes]:
    """Each transcriber's HMAC key, for the providers this worker holds a secret for."""
    secrets: dict[str, Secret | None]
    if settings.handle_key is not None:
        secrets = {name: settings.handle_key for name in get_args(TranscriberName)}
    else:
        invox = settings.invox
        secrets = {
            "intron": settings.intron.api_key,
            # The long-lived credential: the app key when tokens are fetched with it.
            "invox": invox.app_key if invox.token_url is not None else invox.access_token,
        }
    return {
        name: hashlib.sha256(
            _KEY_CONTEXT + name.encode() + b"/" + secret.value.encode("utf-8")
        ).digest()
        for name, secret in secrets.items()
        if secret is not None
    }


def _untrusted(reason: str) -> PermanentError:
    return PermanentError(ErrorType.UNTRUSTED_HANDLE, f"poll message refused: {reason}")


class HandleSigner:
    """sign() where the transcribe stage writes a poll message, verify() where poll reads one."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"HandleSigner(providers={sorted(self._keys)})"

    @classmethod
    def from_settings(cls, settings: Settings) -> HandleSigner:
        return cls(handle_keys(settings))

    def sign(self, job_id: str, handle: TranscriptionHandle) -> TranscriptionHandle:
        """The handle with its signature. A vendor handle outside the syntax could never be
        polled (verify refuses it), so it is the vendor's malformed answer, not retried."""
        key = self._keys.get(handle.provider)
        if key is None:
            raise PermanentError(
                ErrorType.PROVIDER_NOT_CONFIGURED,
                f"no key to sign {handle.provider} handles: set SCRIBE_HANDLE_KEY",
            )
        if not well_formed(handle):
            raise PermanentError(
                ErrorType.MALFORMED_RESPONSE,
                f"{handle.provider} issued a transcription handle outside the expected syntax",
            )
        submitted_at = handle.submitted_at
        if submitted_at.utcoffset() is None:
            submitted_at = submitted_at.replace(tzinfo=UTC)
        signature = _mac(key, job_id, handle, submitted_at)
        return handle.model_copy(update={"submitted_at": submitted_at, "signature": signature})

    def verify(self, job_id: str, handle: TranscriptionHandle) -> None:
        """Raises untrustedHandle unless this worker signed exactly this handle for job_id.
        The reasons name no value: a handle is a vendor's key to a patient's transcript."""
        key = self._keys.get(handle.provider)
        if key is None:
            raise _untrusted(f"this worker issues no {handle.provider} handles")
        if not well_formed(handle):
            raise _untrusted(f"the handle is not a valid {handle.provider} id")
        if handle.submitted_at.utcoffset() is None:
            raise _untrusted("submittedAt has no time zone")
        if handle.signature is None:
            raise _untrusted("the handle is not signed")
        expected = _mac(key, job_id, handle, handle.submitted_at).encode("ascii")
        if not hmac.compare_digest(expected, handle.signature.encode("utf-8", "replace")):
            raise _untrusted("the handle's signature does not match this job")


def _mac(key: bytes, job_id: str, handle: TranscriptionHandle, submitted_at: datetime) -> str:
    """base64url (unpadded) HMAC-SHA256 of a JSON array: one unambiguous encoding of the four
    fields, with submittedAt as integer microseconds since the epoch (its wire spelling, Z or
    +00:00, does not matter)."""
    micros = (submitted_at - _EPOCH) // timedelta(microseconds=1)
    message = json.dumps(
        [_MAC_CONTEXT, job_id, handle.provider, handle.handle, micros], separators=(",", ":")
    )
    digest = hmac.new(key, message.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
