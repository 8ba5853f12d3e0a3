"""Invox callbacks: the per-job callbackUrl the transcriber hands Invox, and the ticket the
receiver (worker/callback_receiver.py) redeems it with.

Invox calls `callbackUrl` when a batch transcription is ready (its pages give no body, so the
body is never trusted: the receiver confirms with get-transcription). The URL is

    <SCRIBE_CALLBACK_BASE_URL>/callbacks/invox/<jobId>/<nonce>.<mac>

with a fresh random nonce per presigned-URL request and mac = HMAC-SHA256 over (jobId, nonce),
base64url, under a key derived from the worker's Invox handle key (worker/handles.py: every
replica that can poll Invox holds it, a caller who does not cannot mint a token). Verification
is constant-time and needs no ledger; the ticket in the ledger then binds the nonce to the
job's current submission, and a used-mark makes each token single-use.

The ticket is the poll message the transcribe stage built (the job and its signed handle) and the
trace it belongs to: the receiver publishes exactly that message, so the poll stage's own checks
(signature, ledger, done-marks) decide it as they decide the copy waiting in the delay tier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict

from worker.handles import handle_keys
from worker.settings import Settings

CALLBACK_ROUTE_PREFIX: Final = "/callbacks/invox"
_KEY_CONTEXT: Final = b"scribe-callback-key/v1/"
_MAC_CONTEXT: Final = "scribe-callback/v1"
_NONCE_BYTES: Final = 16
# A nonce (token_urlsafe(16): 22 characters) and a MAC (32 bytes: 43 characters), base64url.
_TOKEN: Final = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CallbackTicket(BaseModel):
    """What the ledger keeps per job between the submission and its callback. The poll message
    embeds the job (patient data, as on the broker): it lives only in the ledger, for at most
    the poll deadline, and is never printed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    nonce: str
    poll_body: str
    traceparent: str

    def __repr__(self) -> str:
        return "CallbackTicket(***)"

    __str__ = __repr__


def callback_key(settings: Settings) -> bytes | None:
    """The HMAC key of callback tokens, derived from the Invox handle key; None when this worker
    holds no Invox credential (then it issues no callbackUrl)."""
    handle_key = handle_keys(settings).get("invox")
    if handle_key is None:
        return None
    return hashlib.sha256(_KEY_CONTEXT + handle_key).digest()


@dataclass(frozen=True, repr=False)
class CallbackTokens:
    """Makes and checks callback tokens; `base_url` is SCRIBE_CALLBACK_BASE_URL (no trailing /)."""

    key: bytes
    base_url: str

    def __repr__(self) -> str:
        return "CallbackTokens(***)"

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackTokens | None:
        key = callback_key(settings)
        if key is None or settings.callback_base_url is None:
            return None
        return cls(key, settings.callback_base_url)

    def issue(self, job_id: str) -> tuple[str, str]:
        """(nonce, callbackUrl) for one presigned-URL request of this job."""
        nonce = secrets.token_urlsafe(_NONCE_BYTES)
        token = f"{nonce}.{self._mac(job_id, nonce)}"
        return nonce, f"{self.base_url}{CALLBACK_ROUTE_PREFIX}/{job_id}/{token}"

    def verify(self, job_id: str, token: str) -> str | None:
        """The token's nonce if this worker's key made it for job_id; else None. Constant-time
        in the MAC; the shapes are checked first (they carry no secret)."""
        match = _TOKEN.fullmatch(token)
        if match is None or not _UUID.fullmatch(job_id):
            return None
        nonce, mac = match.groups()
        expected = self._mac(job_id, nonce).encode("ascii")
        return nonce if hmac.compare_digest(expected, mac.encode("ascii")) else None

    def _mac(self, job_id: str, nonce: str) -> str:
        message = f"{_MAC_CONTEXT}\n{job_id}\n{nonce}".encode("ascii")
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
