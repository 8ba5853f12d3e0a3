"""Start-up configuration and the runtime knobs the control API may change.

One validator per knob serves both the frozen config and runtime updates, so a
chaos program cannot put the emulator into a state a config could not express.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ENDPOINTS: Final = (
    "intron.upload",
    "intron.status",
    "invox.token",
    "invox.presign",
    "invox.audio_put",
    "invox.transcription",
    "invox.summary",
    "invox.note",
    "invox.documents",
    "invox.document_put",
    "llm.chat",
)
STATUS_KEYS: Final = ("transcriptionStatus", "processingStatus")
API_VERSIONS: Final = frozenset({"2025-10-01", "2025-11-01", "2026-03-01"})
INTRON_MAX_UPLOAD_BYTES: Final = 100 * 1024 * 1024

# Written for the emulator; no real patient. Alternating doctor and patient turns.
DEFAULT_TRANSCRIPT_TURNS: Final = (
    "Good morning, I'm Dr. Adeyemi. What brings you in today?",
    "Good morning. My right knee has been hurting for about three weeks now.",
    "Did it start after an injury, or did it come on gradually?",
    "Gradually. I started jogging again last month and it got worse after longer runs.",
    "Where exactly is the pain, and does the knee ever swell, lock or give way?",
    "It is at the front, around the kneecap. It swells a little in the evening but never locks.",
    "Does anything make it worse, like stairs or sitting for a long time?",
    "Going down stairs is the worst, and it aches after sitting through a long film.",
    "On examination there is mild tenderness at the patellar margin and no effusion. "
    "Ligaments are stable and the range of motion is full.",
    "Is it something serious? Should I stop running completely?",
    "This looks like patellofemoral pain syndrome. Reduce your running for four weeks, "
    "take ibuprofen 400 milligrams with food up to three times a day if needed, "
    "and start the quadriceps strengthening exercises I will give you.",
    "Thank you. When should I come back?",
    "Come back in six weeks, or sooner if the knee locks, swells a lot or you cannot bear weight.",
)


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _non_negative_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


def _status_key(name: str, value: object) -> str:
    if value not in STATUS_KEYS:
        raise ValueError(f"{name} must be one of {', '.join(STATUS_KEYS)}")
    return str(value)


def _endpoint_set(name: str, value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{name} must be a list of endpoint names")
    unknown = [item for item in value if item not in ENDPOINTS]
    if unknown:
        raise ValueError(f"{name} has unknown endpoint names: {unknown}")
    return frozenset(str(item) for item in value)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _non_empty_str(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


KNOB_PARSERS: Final[Mapping[str, Callable[[str, object], object]]] = {
    "polls_before_ready": _non_negative_int,
    "latency_ms": _non_negative_int,
    "invox_status_key": _status_key,
    "forbidden": _endpoint_set,
    "forbidden_error_type": _non_empty_str,
    "intron_upload_rate_per_min": _non_negative_int,
    "intron_status_rate_per_min": _non_negative_int,
    "token_ttl_s": _non_negative_number,
    "rate_window_s": _non_negative_number,
    "no_speech": _bool,
    "ready_after_ms": _non_negative_int,
    "callbacks": _bool,
}


def parse_knobs(changes: Mapping[str, object]) -> dict[str, Any]:
    """Validate a partial knob update; raise ValueError naming the first bad knob."""
    unknown = sorted(set(changes) - set(KNOB_PARSERS))
    if unknown:
        raise ValueError(f"unknown knobs: {unknown}")
    return {name: KNOB_PARSERS[name](name, value) for name, value in changes.items()}


@dataclass(frozen=True)
class SandboxConfig:
    """How the emulator starts; the knobs in KNOB_PARSERS can change at runtime."""

    intron_api_key: str = "sandbox-intron-key"
    invox_static_token: str | None = None
    invox_app_id: str = "sandbox-app"
    invox_app_key: str = "sandbox-app-key"
    # The OpenAI-compatible endpoint's bearer key; None: it takes any request, with a key or not.
    llm_api_key: str | None = None
    token_ttl_s: float = 7200.0
    polls_before_ready: int = 2
    latency_ms: int = 0
    intron_upload_rate_per_min: int = 30
    intron_status_rate_per_min: int = 100
    # The vendor's window is a minute; tests and benchmarks shrink it to keep runs short.
    rate_window_s: float = 60.0
    invox_status_key: str = "transcriptionStatus"
    # Transcriptions finish with no words, as a recording of silence does (the worker's noSpeech).
    no_speech: bool = False
    # > 0: an Invox transcription is ready this long after its audio PUT (polls do not count),
    # and then, with `callbacks`, the emulator POSTs to its callbackUrl (loopback only).
    ready_after_ms: int = 0
    callbacks: bool = True
    forbidden: frozenset[str] = frozenset()
    forbidden_error_type: str = "missingPermission"
    seed: int = 0
    transcript_turns: tuple[str, ...] = DEFAULT_TRANSCRIPT_TURNS
    intron_max_upload_bytes: int = INTRON_MAX_UPLOAD_BYTES
    # Intron's documented 10 minutes: a longer WAV upload ends FILE_INVALID_DURATION.
    intron_max_audio_s: float = 600.0
    public_base_url: str | None = None
    api_versions: frozenset[str] = field(default=API_VERSIONS)

    def __post_init__(self) -> None:
        parse_knobs(self.knobs())
        if not self.transcript_turns or not all(self.transcript_turns):
            raise ValueError("transcript_turns must be non-empty strings")

    def knobs(self) -> dict[str, Any]:
        """The runtime-changeable subset, as the control API shows it."""
        return {name: getattr(self, name) for name in KNOB_PARSERS}

    def replace(self, **changes: Any) -> SandboxConfig:
        """A copy with some fields changed (the config itself stays frozen)."""
        return dataclasses.replace(self, **changes)
