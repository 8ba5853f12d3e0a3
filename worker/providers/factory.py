"""Builds the provider registry a worker serves, from its settings."""

from __future__ import annotations

import aiohttp

from worker.metrics import Metrics
from worker.providers.http import VendorHttp
from worker.providers.intron import IntronSummarizer, IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxNoteWriter, InvoxSummarizer, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.providers.registry import ProviderRegistry
from worker.settings import Settings


def build_registry(
    settings: Settings, session: aiohttp.ClientSession, metrics: Metrics
) -> ProviderRegistry:
    """Vendor providers are always registered; one without credentials answers
    providerNotConfigured for the job that asks for it, so the others keep working."""
    http = VendorHttp(
        session, timeout_s=settings.http_timeout_s, on_call=metrics.observe_vendor_call
    )
    invox = InvoxClient(settings.invox, http, InvoxTokenSource(settings.invox, http))
    return ProviderRegistry(
        transcribers={
            "intron": IntronTranscriber(settings.intron, http),
            "invox": InvoxTranscriber(invox),
        },
        summarizers={"intron": IntronSummarizer(), "invox": InvoxSummarizer(invox)},
        note_writers={"invox": InvoxNoteWriter(invox)},
    )
