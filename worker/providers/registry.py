"""Which provider implementation serves each name a job can ask for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, Template
from worker.errors import PermanentError
from worker.providers.base import NoteProvider, SummaryProvider, TranscriptionProvider


def _missing(kind: str, name: str) -> PermanentError:
    return PermanentError(
        ErrorType.PROVIDER_NOT_CONFIGURED, f"{kind} {name!r} is not configured on this worker"
    )


@runtime_checkable
class ChecksTemplate(Protocol):
    """A note writer that can tell, before any work, that it cannot use a template."""

    def check_template(self, template: Template) -> None: ...


@dataclass(frozen=True)
class ProviderRegistry:
    """The providers this worker can serve: only configured ones are registered (factory.py),
    so a name missing here is providerNotConfigured."""

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

    def admit(self, job: JobRequest) -> None:
        """The door, before the audio is read and before any vendor call: every provider the
        job will use is configured here and can serve it, or PermanentError. Found later, each
        of these cost a paid transcription (and perhaps a summary) for nothing:
        incompatibleProviders (a combination no worker can serve), providerNotConfigured (a
        transcriber, summarizer, or, with a template, note provider this worker lacks), and what
        the note writer refuses of the template (templateTooLarge for the local one). Without a
        template the note stage never runs: its provider does not matter."""
        conflict = job.provider_conflict()
        if conflict is not None:
            raise PermanentError(ErrorType.INCOMPATIBLE_PROVIDERS, conflict)
        self.transcriber(job.providers.transcriber)
        self.summarizer(job.providers.summarizer)
        if job.template is not None:
            writer = self.note_writer(job.providers.note)
            if isinstance(writer, ChecksTemplate):
                writer.check_template(job.template)

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
