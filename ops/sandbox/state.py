"""Everything the emulator remembers: knobs, jobs, tokens, rate windows, stats.

One object per app, reachable from tests (`RunningSandbox.state`) so they can
inspect uploads or swap the clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from ops.sandbox.config import SandboxConfig, parse_knobs
from ops.sandbox.faults import FaultSet

RATE_WINDOW_S = 60.0


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII input."""
    return secrets.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


@dataclass
class Knobs:
    """The runtime-changeable settings (see config.KNOB_PARSERS)."""

    polls_before_ready: int
    latency_ms: int
    invox_status_key: str
    forbidden: frozenset[str]
    forbidden_error_type: str
    intron_upload_rate_per_min: int
    intron_status_rate_per_min: int
    token_ttl_s: float
    rate_window_s: float
    no_speech: bool
    ready_after_ms: int
    callbacks: bool

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Knobs:
        return cls(**config.knobs())

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a validated partial update: all of it or, on error, none of it."""
        for name, value in parse_knobs(changes).items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return {
            "polls_before_ready": self.polls_before_ready,
            "latency_ms": self.latency_ms,
            "invox_status_key": self.invox_status_key,
            "forbidden": sorted(self.forbidden),
            "forbidden_error_type": self.forbidden_error_type,
            "intron_upload_rate_per_min": self.intron_upload_rate_per_min,
            "intron_status_rate_per_min": self.intron_status_rate_per_min,
            "token_ttl_s": self.token_ttl_s,
            "rate_window_s": self.rate_window_s,
            "no_speech": self.no_speech,
            "ready_after_ms": self.ready_after_ms,
            "callbacks": self.callbacks,
        }


@dataclass
class IntronFile:
    file_id: str
    name: str
    diarize: bool
    category: str
    post_processing: tuple[str, ...]
    source: str
    size_bytes: int
    polls: int = 0
    duration_s: float | None = None


@dataclass
class InvoxTranscription:
    request_id: str
    mime_type: str
    callback_url: str | None
    uploaded: bool = False
    size_bytes: int = 0
    polls: int = 0
    # Set by the ready_after_ms timer: ready from then on, whatever the polls (wall clock).
    timed: bool = False
    ready_at_s: float | None = None
    audio_sha256: str = ""
    # The callback's HTTP status; 0: not sent (not loopback, or the connection failed).
    callback_status: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What /_sandbox/stats tells of it (never the callbackUrl: it holds a token)."""
        return {
            "requestId": self.request_id,
            "audioSha256": self.audio_sha256,
            "readyAt": self.ready_at_s,
            "callbackStatus": self.callback_status,
            "polls": self.polls,
        }


@dataclass
class InvoxDocument:
    document_id: str
    session_id: str
    document_type: str
    document_name: str
    uploaded: bool = False
    size_bytes: int = 0


@dataclass(frozen=True)
class PaidSubmission:
    """A transcription the vendor would bill: an Intron upload that got a file_id, the first PUT
    of audio to an Invox requestId (a later PUT to the same requestId replaces its audio, one
    transcription still). audio_sha256 identifies the recording (scribe-chaos gives every job
    its own), at_s is wall-clock time (time.time())."""

    vendor: str
    audio_sha256: str
    at_s: float
    # Seconds of audio, when the upload was a WAV whose header says (Intron blobs).
    duration_s: float | None = None


def audio_digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)
    paid: list[PaidSubmission] = field(default_factory=list)
    responses: dict[str, Counter[int]] = field(default_factory=dict)
    rate_limited: int = 0
    tokens_issued: int = 0

    def paid_submission(
        self, vendor: str, audio_sha256: str, duration_s: float | None = None
    ) -> None:
        self.paid.append(PaidSubmission(vendor, audio_sha256, time.time(), duration_s))

    def record(self, endpoint: str, status: int) -> None:
        self.responses.setdefault(endpoint, Counter())[status] += 1
        if status == 429:
            self.rate_limited += 1


class SlidingWindow:
    """Per-key sliding-window limiter that answers with the seconds until a slot frees."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def acquire(self, key: str, limit: int, window_s: float = RATE_WINDOW_S) -> int | None:
        """Take a slot and return None, or return the Retry-After in whole seconds."""
        if limit <= 0:
            return None
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) >= limit:
            return max(1, math.ceil(hits[-limit] + window_s - now))
        hits.append(now)
        return None


class SandboxState:
    """Mutable state of one emulator instance."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.reset()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        """Swap the time source (tests advance a fake clock instead of sleeping)."""
        self._clock = clock
        self.rate_windows = SlidingWindow(lambda: self._clock())

    def reset(self) -> None:
        """Back to the start-up config: no jobs, tokens, faults or stats."""
        self.knobs = Knobs.from_config(self.config)
        self.faults = FaultSet(self.config.seed)
        self.stats = Stats()
        self.intron_files: dict[str, IntronFile] = {}
        self.transcriptions: dict[str, InvoxTranscription] = {}
        self.documents: dict[str, InvoxDocument] = {}
        self.tokens: dict[str, float] = {}
        self.rate_windows = SlidingWindow(lambda: self._clock())
        self.background: set[asyncio.Task[None]] = getattr(self, "background", set())

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work beside the requests (a ready timer); cancelled when the app stops."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self._clock() + self.knobs.token_ttl_s
        self.stats.tokens_issued += 1
        return token

    def token_valid(self, token: str) -> bool:
        static = self.config.invox_static_token
        if static is not None and same_secret(token, static):
            return True
        expiry = self.tokens.get(token)
        return expiry is not None and self._clock() < expiry

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def stats_json(self) -> dict[str, Any]:
        per_session: Counter[str] = Counter(
            doc.session_id for doc in self.documents.values() if doc.uploaded
        )
        return {
            "calls": dict(self.stats.calls),
            "responses": {
                endpoint: {str(status): n for status, n in counts.items()}
                for endpoint, counts in self.stats.responses.items()
            },
            "rate_limited": self.stats.rate_limited,
            "faults_injected": self.faults.injected,
            "uploads_recorded": {
                "intron": len(self.intron_files),
                "invox_audio": sum(t.uploaded for t in self.transcriptions.values()),
                "invox_documents": sum(per_session.values()),
            },
            "documents_uploaded": dict(per_session),
            # Per recording: how many transcriptions each vendor would bill, and when.
            "paid_submissions": [
                {
                    "vendor": paid.vendor,
                    "audioSha256": paid.audio_sha256,
                    "at": paid.at_s,
                    "durationS": paid.duration_s,
                }
                for paid in self.stats.paid
            ],
            "tokens_issued": self.stats.tokens_issued,
            # Timed transcriptions (ready_after_ms): when each was ready, and its callback.
            "invox_transcriptions": [
                record.to_json() for record in self.transcriptions.values() if record.timed
            ],
        }
