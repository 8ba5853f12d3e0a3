"""Builds the provider registry a worker serves, from its settings."""

from __future__ import annotations

from importlib.util import find_spec

from schemas.jobs import NoteProviderName, SummarizerName, TranscriberName
from worker.callbacks import CallbackTokens
from worker.constants import DEFAULT_LOCAL_ASR_MODEL, LocalAsrModel
from worker.providers import whisper_models
from worker.providers.base import NoteProvider, SummaryProvider, TranscriptionProvider
from worker.providers.http import VendorHttp
from worker.providers.intron import IntronSummarizer, IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxNoteWriter, InvoxSummarizer, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.providers.llm import LlmClient, LlmNoteWriter, LlmSummarizer
from worker.providers.local_asr import LocalTranscriber
from worker.providers.local_note import LocalNoteWriter
from worker.providers.local_summary import LocalSummarizer
from worker.providers.registry import ProviderRegistry
from worker.settings import InvoxSettings, Settings

LOCAL_ASR_MODULES = ("faster_whisper",)


def invox_configured(settings: InvoxSettings) -> bool:
    """A base URL and a way to a token: a static one, or a token URL with its app id and key."""
    if settings.base_url is None:
        return False
    token_url_usable = settings.token_url is not None and (
        settings.app_id is not None and settings.app_key is not None
    )
    return settings.access_token is not None or token_url_usable


def local_asr_installed(model: LocalAsrModel = DEFAULT_LOCAL_ASR_MODEL) -> bool:
    """The `local` extra (faster-whisper and the model's wheels) is importable; nothing is
    loaded."""
    names = (*LOCAL_ASR_MODULES, *whisper_models.MODELS[model].packages)
    return all(find_spec(name) is not None for name in names)


def build_registry(settings: Settings, http: VendorHttp) -> ProviderRegistry:
    """Only configured providers are registered: a job naming another is refused at the door
    (registry.admit, providerNotConfigured) before any vendor call, and the others keep working.
    Intron needs SCRIBE_INTRON_API_KEY; Invox a base URL and a token (invox_configured). The
    Intron summarizer needs no credentials of its own: it reads what the Intron transcriber
    fetched, which the door requires."""
    transcribers: dict[TranscriberName, TranscriptionProvider] = {}
    summarizers: dict[SummarizerName, SummaryProvider] = {"intron": IntronSummarizer()}
    note_writers: dict[NoteProviderName, NoteProvider] = {}
    if settings.intron.api_key is not None:
        transcribers["intron"] = IntronTranscriber(settings.intron, http)
    if invox_configured(settings.invox):
        invox = InvoxClient(
            settings.invox,
            http,
            InvoxTokenSource(settings.invox, http),
            upload_allowlist=settings.url_allowlist,
        )
        transcribers["invox"] = InvoxTranscriber(invox, CallbackTokens.from_settings(settings))
        summarizers["invox"] = InvoxSummarizer(invox)
        note_writers["invox"] = InvoxNoteWriter(invox)
    registry = ProviderRegistry(
        transcribers=transcribers, summarizers=summarizers, note_writers=note_writers
    )
    return _with_offline_and_llm(registry, settings, http)


def _with_offline_and_llm(
    registry: ProviderRegistry, settings: Settings, http: VendorHttp
) -> ProviderRegistry:
    """Offline providers ("local"): the summary and the note are always there; the transcriber
    when the `local` extra is installed (its model loads on first use). "llm" ones only when
    SCRIBE_LLM_BASE_URL is set."""
    transcribers = dict(registry.transcribers)
    if local_asr_installed(settings.local.asr_model):
        transcribers["local"] = LocalTranscriber(
            workers=settings.local.asr_workers,
            model=settings.local.asr_model,
            vad=settings.local.asr_vad,
            prompt=settings.local.asr_prompt,
            beam_size=settings.local.asr_beam_size,
        )
    summarizers = {
        **registry.summarizers,
        "local": LocalSummarizer(budget_s=settings.local.summary_budget_s),
    }
    note_writers = {
        **registry.note_writers,
        "local": LocalNoteWriter(budget_s=settings.local.note_budget_s),
    }
    if settings.llm.configured:
        llm = LlmClient(settings.llm, http)
        summarizers["llm"] = LlmSummarizer(llm)
        note_writers["llm"] = LlmNoteWriter(llm)
    return ProviderRegistry(
        transcribers=transcribers, summarizers=summarizers, note_writers=note_writers
    )
