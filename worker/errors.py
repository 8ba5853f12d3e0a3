"""One exception hierarchy. Stage code raises these; worker/delivery.py decides what they mean.

Messages must never contain patient data (transcripts, summaries, notes, URLs, tokens): they end
up in dead-letter headers, events and logs.
"""

from __future__ import annotations

from schemas.errors import ErrorType
from worker.constants import MAX_ERROR_MESSAGE_CHARS


class ScribeError(Exception):
    """Base of every error the worker raises on purpose."""

    retryable: bool = False

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.error_type = str(error_type)
        self.message = message[:MAX_ERROR_MESSAGE_CHARS]
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        super().__init__(f"{self.error_type}: {self.message}")


class PermanentError(ScribeError):
    """Retrying cannot help: dead-letter at once."""


class TransientError(ScribeError):
    """May succeed later: retry through the delay tiers, then dead-letter with this errorType."""

    retryable = True


class Deferred(ScribeError):
    """Not a failure: the message should come back after delay_s (e.g. the shared rate-limit
    budget is used up). It does not count as an attempt."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__("deferred", reason, retry_after_s=delay_s)
        self.delay_s = delay_s


class InvalidMessage(PermanentError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.INVALID_MESSAGE, message)


class SettingsError(Exception):
    """A SCRIBE_* variable is missing or wrong; raised at start, naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")
