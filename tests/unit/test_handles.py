"""Forged poll messages (issue 12, item 10): a vendor handle is bound to the job it was issued
for, its syntax is checked before any vendor call, and a future submittedAt cannot switch the
poll deadline off. The vendor boundary is aioresponses: every test asserts what was requested."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, PollMessage, PollState, TranscriptionHandle
from worker.codec import StageCodec
from worker.errors import PermanentError, SettingsError
from worker.handles import HandleSigner
from worker.ledger import MemoryLedger
from worker.media import FetchPolicy, MediaFetcher
from worker.outcomes import Advance, DeliveryContext, PollLater
from worker.providers.factory import build_registry
from worker.providers.http import VendorHttp
from worker.settings import Settings
from worker.stages import Stages

INTRON = "https://intron.handles.test"
INVOX = "https://invox.handles.test"
INTRON_KEY = "MARKER-INTRON-KEY"
INVOX_TOKEN = "MARKER-INVOX-TOKEN"
ENV = {
    "SCRIBE_INTRON_BASE_URL": INTRON,
    "SCRIBE_INTRON_API_KEY": INTRON_KEY,
    "SCRIBE_INVOX_BASE_URL": INVOX,
    "SCRIBE_INVOX_ACCESS_TOKEN": INVOX_TOKEN,
}
SETTINGS = Settings.from_env(ENV)
ANY_INTRON = re.compile(r"^https://intron\.handles\.test/.*$")
ANY_INVOX = re.compile(r"^https://invox\.handles\.test/.*$")
# What the vendors' own pages and our emulator issue.
GOOD_HANDLES = ["12a9760f-b165-4404-91d0-a65d4cdt78fs", "mock-requestId", str(uuid.uuid4())]
BAD_HANDLES = [
    "..",
    ".",
    "a/../b",
    "a/b",
    "%2e%2e",
    "a?b=1",
    "a#b",
    "a..b",
    "-a",
    "a\n",
    "é",
    "a" * 129,
]


def job(transcriber: str = "intron") -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"url": "https://storage.test/a.wav"},
            "providers": {"transcriber": transcriber},
        }
    )


def ctx(stage: str = "poll", polls: int = 0) -> DeliveryContext:
    return DeliveryContext(
        stage="poll" if stage == "poll" else "transcribe",
        job_id=None,
        attempts=0,
        polls=polls,
        replays=0,
        redelivered=False,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def handle(value: str = "file-123", provider: str = "intron", **extra: Any) -> TranscriptionHandle:
    data: dict[str, Any] = {"provider": provider, "handle": value}
    data["submittedAt"] = extra.pop("submittedAt", datetime.now(UTC).isoformat())
    return TranscriptionHandle.model_validate({**data, **extra})


def poll_body(for_job: JobRequest, transcription: dict[str, Any]) -> bytes:
    wire = {
        "schemaVersion": 1,
        "jobId": str(for_job.job_id),
        "job": json.loads(for_job.to_wire()),
        "transcription": transcription,
    }
    return json.dumps(wire).encode()


def documented_signature(secret: str, job_id: str, h: TranscriptionHandle) -> str:
    """The MAC as README documents it, computed here independently of worker/handles.py."""
    key = hashlib.sha256(b"scribe-handle-key/" + h.provider.encode() + b"/" + secret.encode())
    micros = (h.submitted_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    message = json.dumps(
        ["scribe-handle/v1", job_id, h.provider, h.handle, micros], separators=(",", ":")
    )
    digest = hmac.new(key.digest(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class World:
    stages: Stages
    ledger: MemoryLedger
    mocked: aioresponses

    async def genuine_poll(self, for_job: JobRequest, h: TranscriptionHandle) -> bytes:
        """The poll message the transcribe stage writes for a handle it has recorded."""
        await self.ledger.record_transcription_handle(str(for_job.job_id), h)
        outcome = await self.stages.transcribe(for_job.to_wire(), ctx("transcribe"))
        assert isinstance(outcome, Advance)
        assert outcome.next_stage == "poll"
        return outcome.body

    def requests(self) -> int:
        return sum(len(calls) for calls in self.mocked.requests.values())


def stages_for(settings: Settings, session: aiohttp.ClientSession) -> tuple[Stages, MemoryLedger]:
    registry = build_registry(settings, VendorHttp(session, timeout_s=5.0))
    policy = FetchPolicy(frozenset(), None, 5.0)
    media = MediaFetcher(session, policy, 1, 1.0, 1)
    ledger = MemoryLedger()
    signer = HandleSigner.from_settings(settings)
    return Stages(registry, media, ledger, settings.retry, StageCodec(), signer), ledger


@pytest.fixture
async def world(mocked: aioresponses) -> AsyncIterator[World]:
    async with aiohttp.ClientSession() as session:
        stages, ledger = stages_for(SETTINGS, session)
        yield World(stages, ledger, mocked)
        stages.providers.close()


def pending(mocked: aioresponses) -> None:
    mocked.get(ANY_INTRON, payload={"data": {"processing_status": "FILE_PENDING"}}, repeat=True)


async def refused(world: World, body: bytes) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        await world.stages.poll(body, ctx())
    assert caught.value.error_type == ErrorType.UNTRUSTED_HANDLE
    assert world.requests() == 0, "a vendor was called for an untrusted handle"
    return caught.value


# ---------------------------------------------------------------- the genuine flow


async def test_genuine_handle_is_signed_by_transcribe_and_polled(world: World) -> None:
    mine = job()
    body = await world.genuine_poll(mine, handle())
    sent = PollMessage.model_validate_json(body).transcription
    assert sent.signature == documented_signature(INTRON_KEY, str(mine.job_id), sent)
    world.mocked.get(
        ANY_INTRON,
        payload={"data": {"processing_status": "FILE_TRANSCRIBED", "audio_transcript": "hi"}},
    )
    outcome = await world.stages.poll(body, ctx())
    assert isinstance(outcome, Advance)
    assert outcome.next_stage == "summarize"
    assert world.requests() == 1


async def test_a_replica_with_the_same_credentials_accepts_the_handle(world: World) -> None:
    body = await world.genuine_poll(job(), handle())
    pending(world.mocked)
    async with aiohttp.ClientSession() as session:
        other, _ = stages_for(Settings.from_env(ENV), session)
        assert isinstance(await other.poll(body, ctx()), PollLater)
        other.providers.close()


# ---------------------------------------------------------------- forged handles


async def test_handle_of_another_job_is_refused_without_a_vendor_call(world: World) -> None:
    victim = await world.genuine_poll(job(), handle("victims-file"))
    stolen = json.loads(victim)["transcription"]
    error = await refused(world, poll_body(job(), stolen))
    assert "victims-file" not in str(error)


async def test_unsigned_handle_is_refused_without_a_vendor_call(world: World) -> None:
    await refused(world, poll_body(job(), handle().model_dump(mode="json", by_alias=True)))


@pytest.mark.parametrize(
    "edit",
    [
        {"handle": "someone-elses-file"},
        {"provider": "invox"},
        {"submittedAt": "2099-01-01T00:00:00Z"},
        {"signature": "A" * 43},
        {"signature": "\u00e9"},
    ],
)
async def test_a_signed_handle_edited_in_any_field_is_refused(
    world: World, edit: dict[str, str]
) -> None:
    mine = job()
    genuine = json.loads(await world.genuine_poll(mine, handle()))
    world.mocked.post(ANY_INVOX, payload={}, repeat=True)
    await refused(world, poll_body(mine, {**genuine["transcription"], **edit}))


async def test_a_submitted_at_without_an_offset_is_refused_at_the_door(world: World) -> None:
    """Not RFC 3339 (the JSON Schema's date-time): the message is invalid before any handle is
    looked at, and no vendor is called."""
    mine = job()
    genuine = json.loads(await world.genuine_poll(mine, handle()))
    naive = datetime.now(UTC).replace(tzinfo=None).isoformat()
    with pytest.raises(PermanentError) as caught:
        await world.stages.poll(
            poll_body(mine, {**genuine["transcription"], "submittedAt": naive}), ctx()
        )
    assert caught.value.error_type == ErrorType.INVALID_MESSAGE
    assert world.requests() == 0


@pytest.mark.parametrize("bad", BAD_HANDLES)
@pytest.mark.parametrize("provider", ["intron", "invox"])
async def test_a_handle_outside_the_vendor_syntax_is_refused_even_when_signed(
    world: World, bad: str, provider: str
) -> None:
    """'..' made the worker GET {intron}/file/v1/ with the Bearer key. A key holder's signature
    does not make such a handle acceptable: the syntax is checked on its own."""
    mine = job(provider)
    forged = handle("placeholder", provider).model_copy(update={"handle": bad})
    forged = forged.model_copy(
        update={"signature": documented_signature(INTRON_KEY, str(mine.job_id), forged)}
    )
    world.mocked.get(ANY_INTRON, payload={}, repeat=True)
    world.mocked.post(ANY_INVOX, payload={}, repeat=True)
    await refused(world, poll_body(mine, forged.model_dump(mode="json", by_alias=True)))


@pytest.mark.parametrize("good", GOOD_HANDLES)
def test_vendor_handles_as_documented_and_emulated_are_accepted(good: str) -> None:
    signer = HandleSigner.from_settings(SETTINGS)
    job_id = str(uuid.uuid4())
    for provider in ("intron", "invox"):
        signer.verify(job_id, signer.sign(job_id, handle(good, provider)))


@pytest.mark.parametrize("bad", BAD_HANDLES)
def test_transcribe_refuses_to_sign_a_vendor_handle_outside_the_syntax(bad: str) -> None:
    signer = HandleSigner.from_settings(SETTINGS)
    odd = handle("placeholder").model_copy(update={"handle": bad})
    with pytest.raises(PermanentError) as caught:
        signer.sign(str(uuid.uuid4()), odd)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE


# ---------------------------------------------------------------- submittedAt and the deadline


async def test_submitted_at_in_2099_does_not_switch_the_deadline_off(world: World) -> None:
    """A future submittedAt counts as now, and the polls made so far (each at least one poll
    interval apart) bound the wait from below: past the deadline's worth of polls, it ends."""
    mine = job()
    future = handle(submittedAt="2099-01-01T00:00:00Z")
    body = await world.genuine_poll(mine, future)
    pending(world.mocked)
    deadline_polls = int(SETTINGS.retry.poll_deadline_s * 1000 / SETTINGS.retry.poll_interval_ms)
    assert isinstance(await world.stages.poll(body, ctx(polls=deadline_polls - 1)), PollLater)
    with pytest.raises(PermanentError) as caught:
        await world.stages.poll(body, ctx(polls=deadline_polls))
    assert caught.value.error_type == ErrorType.TRANSCRIPTION_TIMED_OUT


async def test_a_future_submitted_at_counts_as_now(mocked: aioresponses) -> None:
    async with aiohttp.ClientSession() as session:
        stages, ledger = stages_for(
            Settings.from_env({**ENV, "SCRIBE_POLL_DEADLINE_S": "0"}), session
        )
        world = World(stages, ledger, mocked)
        body = await world.genuine_poll(job(), handle(submittedAt="2099-01-01T00:00:00Z"))
        pending(mocked)
        with pytest.raises(PermanentError) as caught:
            await stages.poll(body, ctx())
        assert caught.value.error_type == ErrorType.TRANSCRIPTION_TIMED_OUT
        stages.providers.close()


# ---------------------------------------------------------------- keys


def test_without_a_handle_key_rotating_vendor_credentials_invalidates_handles() -> None:
    job_id = str(uuid.uuid4())
    signed = HandleSigner.from_settings(SETTINGS).sign(job_id, handle())
    rotated = Settings.from_env({**ENV, "SCRIBE_INTRON_API_KEY": "MARKER-NEW-INTRON-KEY"})
    with pytest.raises(PermanentError) as caught:
        HandleSigner.from_settings(rotated).verify(job_id, signed)
    assert caught.value.error_type == ErrorType.UNTRUSTED_HANDLE


def test_with_a_handle_key_handles_survive_credential_rotation(tmp_path: Path) -> None:
    key_file = tmp_path / "handle.key"
    key_file.write_text("k" * 32 + "\n", encoding="utf-8")
    job_id = str(uuid.uuid4())
    before = Settings.from_env({**ENV, "SCRIBE_HANDLE_KEY": "k" * 32})
    after = Settings.from_env(
        {**ENV, "SCRIBE_INTRON_API_KEY": "MARKER-NEW", "SCRIBE_HANDLE_KEY_FILE": str(key_file)}
    )
    signed = HandleSigner.from_settings(before).sign(job_id, handle())
    HandleSigner.from_settings(after).verify(job_id, signed)
    assert signed.signature == documented_signature("k" * 32, job_id, signed)


def test_a_provider_without_credentials_or_handle_key_has_no_handles() -> None:
    """Offline transcription answers at once; a poll message naming "local" is never genuine
    unless SCRIBE_HANDLE_KEY is set (the benchmark's instant provider issues such handles)."""
    signer = HandleSigner.from_settings(SETTINGS)
    job_id = str(uuid.uuid4())
    with pytest.raises(PermanentError) as caught:
        signer.sign(job_id, handle(provider="local"))
    assert caught.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    with pytest.raises(PermanentError) as caught:
        signer.verify(job_id, handle(provider="local", signature="A" * 43))
    assert caught.value.error_type == ErrorType.UNTRUSTED_HANDLE
    keyed = HandleSigner.from_settings(Settings.from_env({**ENV, "SCRIBE_HANDLE_KEY": "k" * 40}))
    keyed.verify(job_id, keyed.sign(job_id, handle(provider="local")))


def test_invox_key_comes_from_the_app_key_when_tokens_are_fetched() -> None:
    job_id = str(uuid.uuid4())
    fetched = {
        **ENV,
        "SCRIBE_INVOX_TOKEN_URL": "https://invox.handles.test/token",
        "SCRIBE_INVOX_APP_ID": "app",
        "SCRIBE_INVOX_APP_KEY": "MARKER-APP-KEY",
    }
    signed = HandleSigner.from_settings(Settings.from_env(fetched)).sign(
        job_id, handle(provider="invox")
    )
    assert signed.signature == documented_signature("MARKER-APP-KEY", job_id, signed)
    static = HandleSigner.from_settings(SETTINGS).sign(job_id, handle(provider="invox"))
    assert static.signature == documented_signature(INVOX_TOKEN, job_id, static)


@pytest.mark.parametrize("variable", ["SCRIBE_HANDLE_KEY", "SCRIBE_HANDLE_KEY_FILE"])
def test_a_short_handle_key_stops_the_worker_naming_the_variable(
    variable: str, tmp_path: Path
) -> None:
    value = "k" * 31
    if variable.endswith("_FILE"):
        (tmp_path / "short.key").write_text(value, encoding="utf-8")
        value = str(tmp_path / "short.key")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == "SCRIBE_HANDLE_KEY"
    assert "k" * 31 not in str(caught.value)


def test_poll_state_carries_the_signature_on_the_wire() -> None:
    signed = HandleSigner.from_settings(SETTINGS).sign(str(uuid.uuid4()), handle())
    wire = json.loads(PollState(transcription=signed).to_wire())
    assert wire["transcription"]["signature"] == signed.signature
