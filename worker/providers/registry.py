"""Which provider implementation serves each name a job can ask for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.errors import ErrorType
from worker.errors import PermanentError
from worker.providers.base import NoteProvider, SummaryProvider, TranscriptionProvider


def _missing(kind: str, name: str) -> PermanentError:
    return PermanentError(
        ErrorType.PROVIDER_NOT_CONFIGURED, f"{kind} {name!r} is not configured on this worker"
    )


@dataclass(frozen=True)
class ProviderRegistry:
    transcribers: Mapping[str, TranscriptionProvider] = field(default_factory=dict)
    summarizers: Mapping[str, SummaryProvider] = field(default_factory=dict)
    note_writers: Mapping[str, NoteProvider] = field(default_factory=dict)

    def transcriber(self, name: str) -> TranscriptionProvider:
        provider = self.transcribers.get(name)
        if provider is None:
            raise _missing("transcriber", name)
        return provider

    def summarizer(self, name: str) -> SummaryProvider:
        provider = self.summarizers.get(name)
        if provider is None:
            raise _missing("summarizer", name)
        return provider

    def close(self) -> None:
        """Release what providers hold (the local ASR thread pool); each is closed once."""
        providers = {
            id(p): p
            for p in (*self.transcribers.values(), *self.summarizers.values(),
                      *self.note_writers.values())
        }  # fmt: skip
        for provider in providers.values():
            close = getattr(provider, "close", None)
            if callable(close):
                close()

    def note_writer(self, name: str) -> NoteProvider:
        provider = self.note_writers.get(name)
        if provider is None:
            raise _missing("note provider", name)
        return provider
