"""Fault rules: which vendor calls misbehave, how, and how often.

Rules are plain JSON so tests and a chaos program can replace them at runtime;
probabilistic rules draw from a seeded RNG so a chaos run can be replayed.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ops.sandbox.config import ENDPOINTS

# timeout: no answer for delayS, the request not handled (a client giving up first pays nothing);
# slow_answer: the request handled at once, answered delayS later (a client that dies or gives up
# in between leaves it done: the window in which a paid submission goes unrecorded).
TRANSPORT_KINDS: Final = frozenset(
    {"http_error", "rate_limit", "timeout", "slow_answer", "malformed"}
)
STATUS_KINDS: Final = frozenset({"failed_status", "unknown_status"})
STATUS_ENDPOINTS: Final = frozenset({"intron.status", "invox.transcription"})
MALFORMED_BODIES: Final = ("truncated_json", "html")
# What the OpenAI-compatible endpoint (ops/sandbox/llm.py) gets wrong in an answer that is
# otherwise a 200 chat.completion.
LLM_KINDS: Final = frozenset({"bad_citations", "bad_answer"})
LLM_ENDPOINTS: Final = frozenset({"llm.chat"})
CITATION_FAULTS: Final = ("out_of_range", "unsupported", "missing")
ANSWER_FAULTS: Final = ("not_json", "wrong_shape", "no_choices")

# The optional keys each kind uses; to_json shows only these.
_KIND_KEYS: Final = {
    "http_error": ("status", "errorType", "message"),
    "rate_limit": ("retryAfterS", "errorType", "message"),
    "timeout": ("delayS",),
    "slow_answer": ("delayS",),
    "malformed": ("body",),
    "failed_status": ("statusValue", "message"),
    "unknown_status": ("statusValue",),
    "bad_citations": ("citations",),
    "bad_answer": ("answer",),
}
_KEYS: Final = frozenset(
    {
        "endpoint",
        "kind",
        "status",
        "errorType",
        "message",
        "retryAfterS",
        "delayS",
        "body",
        "statusValue",
        "citations",
        "answer",
        "times",
        "probability",
    }
)


def _number(rule: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = rule.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{key} must be a number in [{low}, {high}]")
    return float(value)


def _choice(rule: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = rule.get(key, allowed[0])
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}")
    return str(value)


def _optional_str(rule: Mapping[str, Any], key: str) -> str | None:
    value = rule.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


@dataclass(frozen=True)
class FaultRule:
    """One validated rule; `times=None` and `probability=None` mean "every call"."""

    endpoint: str
    kind: str
    status: int = 500
    error_type: str | None = None
    message: str | None = None
    retry_after_s: int = 1
    delay_s: float = 30.0
    body: str = "truncated_json"
    status_value: str | None = None
    citations: str = CITATION_FAULTS[0]
    answer: str = ANSWER_FAULTS[0]
    times: int | None = None
    probability: float | None = None

    @classmethod
    def parse(cls, rule: object) -> FaultRule:
        """Build a rule from its JSON form; raise ValueError on anything doubtful."""
        if not isinstance(rule, Mapping):
            raise ValueError("a fault rule must be a JSON object")
        unknown = sorted(set(rule) - _KEYS)
        if unknown:
            raise ValueError(f"unknown fault rule keys: {unknown}")
        endpoint, kind = rule.get("endpoint"), rule.get("kind")
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be '*' or one of {', '.join(ENDPOINTS)}")
        if kind not in TRANSPORT_KINDS | STATUS_KINDS | LLM_KINDS:
            raise ValueError(f"unknown fault kind: {kind!r}")
        if kind in STATUS_KINDS and endpoint not in STATUS_ENDPOINTS | {"*"}:
            raise ValueError(f"{kind} only applies to {sorted(STATUS_ENDPOINTS)}")
        if kind in LLM_KINDS and endpoint not in LLM_ENDPOINTS | {"*"}:
            raise ValueError(f"{kind} only applies to {sorted(LLM_ENDPOINTS)}")
        if kind == "http_error" and "status" not in rule:
            raise ValueError("http_error needs a status")
        times = rule.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError("times must be an integer")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        probability = rule.get("probability")
        return cls(
            endpoint=str(endpoint),
            kind=str(kind),
            status=int(_number(rule, "status", 500, 400, 599)),
            error_type=_optional_str(rule, "errorType"),
            message=_optional_str(rule, "message"),
            retry_after_s=int(_number(rule, "retryAfterS", 1, 0, 86400)),
            delay_s=_number(rule, "delayS", 30.0, 0, 3600),
            body=_choice(rule, "body", MALFORMED_BODIES),
            status_value=_optional_str(rule, "statusValue"),
            citations=_choice(rule, "citations", CITATION_FAULTS),
            answer=_choice(rule, "answer", ANSWER_FAULTS),
            times=times,
            probability=None if probability is None else _number(rule, "probability", 0, 0, 1),
        )

    def to_json(self) -> dict[str, Any]:
        """The rule in the same JSON shape the control API accepts."""
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "status": self.status,
            "errorType": self.error_type,
            "message": self.message,
            "retryAfterS": self.retry_after_s,
            "delayS": self.delay_s,
            "body": self.body,
            "statusValue": self.status_value,
            "citations": self.citations,
            "answer": self.answer,
            "times": self.times,
            "probability": self.probability,
        }
        shown = ("endpoint", "kind", *_KIND_KEYS[self.kind], "times", "probability")
        return {key: out[key] for key in shown if out[key] is not None}


@dataclass
class _Armed:
    rule: FaultRule
    remaining: int | None


class FaultSet:
    """The active rules, first match wins; counts what it injected."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._armed: list[_Armed] = []
        self.injected = 0

    def replace(self, rules: Collection[FaultRule]) -> None:
        """Swap in a new rule list and reseed, so the same list replays the same way."""
        self._armed = [_Armed(rule, rule.times) for rule in rules]
        self._rng = random.Random(self._seed)

    def clear(self) -> None:
        self.replace(())

    def take(self, endpoint: str, kinds: Collection[str]) -> FaultRule | None:
        """The first rule of `kinds` that fires for this call, consuming one of its times."""
        for armed in self._armed:
            rule = armed.rule
            if armed.remaining == 0 or rule.kind not in kinds:
                continue
            if rule.endpoint not in ("*", endpoint):
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
            self.injected += 1
            return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """Active rules with how many firings each has left (null = unlimited)."""
        return [{**armed.rule.to_json(), "remaining": armed.remaining} for armed in self._armed]
