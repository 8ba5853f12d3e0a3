"""Which provider implementation serves each name a job can ask for.

The names are the schema's own (schemas/jobs.py TranscriberName, SummarizerName,
NoteProviderName): the registry's keys are typed by them and checked against them, so adding a
provider is its name in the schema and one entry where factory.py builds the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, get_args, runtime_checkable

from schemas.errors import ErrorType
from schemas.jobs import (
    JobRequest,
    NoteProviderName,
    SummarizerName,
    Template,
    TranscriberName,
)
from worker.errors import PermanentError
from worker.providers.base import NoteProvider, SummaryProvider, TranscriptionProvider

TRANSCRIBER_NAMES: Final[frozenset[str]] = frozenset(get_args(TranscriberName))
SUMMARIZER_NAMES: Final[frozenset[str]] = frozenset(get_args(SummarizerName))
NOTE_PROVIDER_NAMES: Final[frozenset[str]] = frozenset(get_args(NoteProviderName))


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

    transcribers: Mapping[TranscriberName, TranscriptionProvider] = field(default_factory=dict)
    summarizers: Mapping[SummarizerName, SummaryProvider] = field(default_factory=dict)
    note_writers: Mapping[NoteProviderName, NoteProvider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A key the schema does not name could never be asked for, and a provider registered
        under another name than its own would mislabel the outcome: both are wiring mistakes,
        refused when the worker builds its registry, not found in a job."""
        for names, providers in (
            (TRANSCRIBER_NAMES, self.transcribers),
            (SUMMARIZER_NAMES, self.summarizers),
            (NOTE_PROVIDER_NAMES, self.note_writers),
        ):
            for key, provider in providers.items():
                if key not in names or provider.name != key:
                    raise ValueError(f"provider {provider.name!r} registered as {key!r}")

    def transcriber(self, name: TranscriberName) -> TranscriptionProvider:
        provider = self.transcribers.get(name)
        if provider is None:
            raise _missing("transcriber", name)
        return provider

    def summarizer(self, name: SummarizerName) -> SummaryProvider:
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
        """Release what providers hold (the local thread pools); each is closed once, through
        the close() every provider Protocol has."""
        every: list[TranscriptionProvider | SummaryProvider | NoteProvider] = [
            *self.transcribers.values(),
            *self.summarizers.values(),
            *self.note_writers.values(),
        ]
        for provider in {id(p): p for p in every}.values():
            provider.close()

    def note_writer(self, name: NoteProviderName) -> NoteProvider:
        provider = self.note_writers.get(name)
        if provider is None:
            raise _missing("note provider", name)
        return provider
