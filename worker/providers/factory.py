"""Builds the provider registry a worker serves, from its settings."""

from __future__ import annotations

from worker.providers.http import VendorHttp
from worker.providers.intron import IntronSummarizer, IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxNoteWriter, InvoxSummarizer, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.providers.llm import LlmClient, LlmNoteWriter, LlmSummarizer
from worker.providers.local_asr import LocalTranscriber
from worker.providers.local_note import LocalNoteWriter
from worker.providers.local_summary import LocalSummarizer
from worker.providers.registry import ProviderRegistry
from worker.settings import Settings


def build_registry(settings: Settings, http: VendorHttp) -> ProviderRegistry:
    """Vendor providers are always registered; one without credentials answers
    providerNotConfigured for the job that asks for it, so the others keep working."""
    invox = InvoxClient(
        settings.invox,
        http,
        InvoxTokenSource(settings.invox, http),
        upload_allowlist=settings.url_allowlist,
    )
    registry = ProviderRegistry(
        transcribers={
            "intron": IntronTranscriber(settings.intron, http),
            "invox": InvoxTranscriber(invox),
        },
        summarizers={"intron": IntronSummarizer(), "invox": InvoxSummarizer(invox)},
        note_writers={"invox": InvoxNoteWriter(invox)},
    )
    return _with_offline_and_llm(registry, settings, http)


def _with_offline_and_llm(
    registry: ProviderRegistry, settings: Settings, http: VendorHttp
) -> ProviderRegistry:
    """Offline providers ("local") are always there: the ASR model loads on first use, and a
    worker without the `local` extra answers providerNotConfigured then. "llm" ones only when
    SCRIBE_LLM_BASE_URL is set."""
    transcribers = {
        **registry.transcribers,
        "local": LocalTranscriber(workers=settings.local.asr_workers),
    }
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
