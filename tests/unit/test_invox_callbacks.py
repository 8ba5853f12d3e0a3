"""Invox callbacks (worker/callbacks.py, worker/callback_receiver.py): the token, the setting, the
callbackUrl in the presign, and every answer of the receiver, against the loopback emulator
(the vendor boundary) with the real Invox client, ledger and Delivery (over tests/recorder.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from ops.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from schemas.jobs import JobRequest, PollState, TranscriptionHandle
from tests.recorder import Recorder
from worker.callback_receiver import CallbackReceiver
from worker.callbacks import CALLBACK_ROUTE_PREFIX, CallbackTicket, CallbackTokens, callback_key
from worker.codec import StageCodec
from worker.delivery import Delivery
from worker.errors import SettingsError
from worker.handles import HandleSigner
from worker.ledger import MemoryLedger, SubmissionJournal
from worker.metrics import Metrics
from worker.providers.base import PreparedAudio, Submitted
from worker.providers.http import VendorHttp
from worker.providers.invox import InvoxClient, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import Settings
from worker.topology import Names

TOKEN = "callback-test-token"
BODY_MARKER = "MARKER-CALLBACK-BODY-7f3a"
TRACEPARENT = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"


def settings_for(base_url: str, **extra: str) -> Settings:
    env = {
        "SCRIBE_INVOX_BASE_URL": base_url,
        "SCRIBE_INVOX_ACCESS_TOKEN": TOKEN,
        "SCRIBE_CALLBACK_BASE_URL": "http://127.0.0.1:9",
        "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
        **extra,
    }
    return Settings.from_env(env)


# --- the token ---------------------------------------------------------------------------------


def tokens(key: bytes = b"k" * 32) -> CallbackTokens:
    return CallbackTokens(key, "https://scribe.example/base")


def split(url: str) -> tuple[str, str]:
    prefix = f"https://scribe.example/base{CALLBACK_ROUTE_PREFIX}/"
    assert url.startswith(prefix)
    job_id, token = url.removeprefix(prefix).split("/")
    return job_id, token


def test_a_token_is_verified_for_its_job_and_gives_back_its_nonce() -> None:
    job_id = str(uuid.uuid4())
    nonce, url = tokens().issue(job_id)
    assert split(url)[0] == job_id
    assert tokens().verify(job_id, split(url)[1]) == nonce


def test_each_issue_is_a_new_unguessable_token() -> None:
    job_id = str(uuid.uuid4())
    issued = {tokens().issue(job_id)[1] for _ in range(50)}
    assert len(issued) == 50


@pytest.mark.parametrize(
    "forge",
    [
        lambda job, token: (str(uuid.uuid4()), token),  # another job's
        lambda job, token: (job, token[:-1] + ("A" if token[-1] != "A" else "B")),  # MAC changed
        lambda job, token: (job, "B" + token[1:] if token[0] != "B" else "C" + token[1:]),  # nonce
        lambda job, token: (job, token.split(".")[0]),  # no MAC
        lambda job, token: (job, token + "x"),  # too long
        lambda job, token: (job.upper(), token),  # not the worker's spelling of the jobId
        lambda job, token: ("..", token),
        lambda job, token: (job, ""),
    ],
)
def test_a_forged_token_is_refused(forge: Any) -> None:
    job_id = str(uuid.uuid4())
    _, url = tokens().issue(job_id)
    forged_job, forged_token = forge(job_id, split(url)[1])
    assert tokens().verify(forged_job, forged_token) is None


def test_another_key_refuses_the_token() -> None:
    job_id = str(uuid.uuid4())
    _, url = tokens().issue(job_id)
    assert tokens(b"other-key" * 4).verify(job_id, split(url)[1]) is None


def test_the_key_comes_from_the_invox_credential_and_never_prints() -> None:
    one = settings_for("http://127.0.0.1:1")
    other = settings_for("http://127.0.0.1:1", SCRIBE_INVOX_ACCESS_TOKEN="another-token")
    assert callback_key(one) != callback_key(other)
    made = CallbackTokens.from_settings(one)
    assert made is not None
    assert TOKEN not in repr(made)
    assert "***" in repr(CallbackTicket(nonce="n", poll_body=BODY_MARKER, traceparent="t"))
    assert (
        CallbackTokens.from_settings(
            settings_for("http://127.0.0.1:1", SCRIBE_CALLBACK_BASE_URL="")
        )
        is None
    )


# --- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://scribe.example", "https://scribe.example/hooks/", "http://127.0.0.1:8080",
     "http://localhost:8080", "http://[::1]:8080"],
)  # fmt: skip
def test_the_callback_base_url_is_https_or_loopback(url: str) -> None:
    assert settings_for("http://127.0.0.1:1", SCRIBE_CALLBACK_BASE_URL=url).callback_base_url == (
        url.rstrip("/")
    )


@pytest.mark.parametrize(
    "url",
    ["http://scribe.example", "http://10.0.0.5:8080", "ftp://127.0.0.1", "https://",
     "https://scribe.example/?a=1", "https://scribe.example/#x", "https://u:p@scribe.example",
     "https://scribe.example:99999"],
)  # fmt: skip
def test_a_callback_base_url_that_would_leak_the_token_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="SCRIBE_CALLBACK_BASE_URL"):
        settings_for("http://127.0.0.1:1", SCRIBE_CALLBACK_BASE_URL=url)


def test_the_body_cap_is_bounded() -> None:
    with pytest.raises(SettingsError, match="SCRIBE_CALLBACK_MAX_BYTES"):
        settings_for("http://127.0.0.1:1", SCRIBE_CALLBACK_MAX_BYTES="0")
    assert settings_for("http://127.0.0.1:1").callback_max_bytes == 64 * 1024


# --- the receiver, end to end over HTTP --------------------------------------------------------


@dataclass
class Rig:
    sandbox: RunningSandbox
    session: aiohttp.ClientSession
    settings: Settings
    tokens: CallbackTokens
    transcriber: InvoxTranscriber
    signer: HandleSigner
    ledger: MemoryLedger
    recorder: Recorder
    metrics: Metrics
    url: str
    receiver: CallbackReceiver

    async def transcription(self, polls_before_ready: int = 0) -> str:
        """A requestId the emulator has audio for (what the transcribe stage did)."""
        self.sandbox.state.knobs.polls_before_ready = polls_before_ready
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Invox-Medical-Api-Version": "2026-03-01"}
        base = self.sandbox.base_url
        async with self.session.post(
            f"{base}/api/v1/generate-presigned-url", json={"mimeType": "audio/wav"}, headers=headers
        ) as response:
            body = await response.json()
        put = {"Content-Type": "audio/wav"}
        async with self.session.put(body["presignedUrl"], data=b"RIFF", headers=put) as response:
            assert response.status == 200
        return str(body["requestId"])

    async def ticketed(self, polls_before_ready: int = 0) -> tuple[str, str, str]:
        """(jobId, token, poll body) with the ticket in the ledger, as worker/stages.py writes."""
        request_id = await self.transcription(polls_before_ready)
        job = JobRequest.model_validate(
            {
                "jobId": str(uuid.uuid4()),
                "audio": {"url": "https://storage.example/visit.wav", "mimeType": "audio/wav"},
                "providers": {"transcriber": "invox", "summarizer": "invox", "note": "invox"},
            }
        )
        job_id = str(job.job_id)
        handle = TranscriptionHandle(
            provider="invox", handle=request_id, submitted_at=datetime.now(UTC)
        )
        signed = self.signer.sign(job_id, handle)
        body = StageCodec().encode(job, PollState(transcription=signed)).decode()
        nonce, url = self.tokens.issue(job_id)
        ticket = CallbackTicket(nonce=nonce, poll_body=body, traceparent=TRACEPARENT)
        await self.ledger.record_callback_ticket(job_id, ticket.model_dump_json(), 60.0)
        return job_id, url.rsplit("/", 1)[1], body

    async def call(
        self, job_id: str, token: str, data: bytes | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        payload = data if data is not None else json.dumps({"note": BODY_MARKER}).encode()
        target = f"{self.url}{CALLBACK_ROUTE_PREFIX}/{job_id}/{token}"
        async with self.session.post(target, data=payload, **kwargs) as response:
            return response.status, await response.json()

    def status_calls(self) -> int:
        return self.sandbox.state.stats.calls["invox.transcription"]

    def outcomes(self, outcome: str) -> float:
        value: float = self.metrics.callbacks.labels(outcome)._value.get()
        return value


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    config = SandboxConfig(invox_static_token=TOKEN, polls_before_ready=0)
    async with running_sandbox(config) as sandbox, aiohttp.ClientSession() as session:
        settings = settings_for(sandbox.base_url, SCRIBE_CALLBACK_MAX_BYTES="1024")
        made = CallbackTokens.from_settings(settings)
        assert made is not None
        http = VendorHttp(session, timeout_s=5.0)
        client = InvoxClient(
            settings.invox, http, InvoxTokenSource(settings.invox, http),
            upload_allowlist=settings.url_allowlist,
        )  # fmt: skip
        transcriber = InvoxTranscriber(client, made)
        signer = HandleSigner.from_settings(settings)
        ledger, recorder, metrics = MemoryLedger(), Recorder(), Metrics()
        delivery = Delivery(recorder, Names("cb-test"), settings.retry, ledger, metrics)
        receiver = CallbackReceiver(
            made, ledger, transcriber, signer, delivery.publish_early, metrics, 1024, 5.0
        )
        app = web.Application()
        receiver.add_routes(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            url = str(server.make_url("")).rstrip("/")
            yield Rig(
                sandbox, session, settings, made, transcriber, signer, ledger, recorder,
                metrics, url, receiver,
            )  # fmt: skip
        finally:
            await server.close()


async def test_a_confirmed_callback_publishes_the_poll_message_once(rig: Rig) -> None:
    job_id, token, body = await rig.ticketed()
    status, answer = await rig.call(job_id, token)
    assert (status, answer) == (202, {"status": "advanced"})
    [published] = rig.recorder.published
    assert (published.exchange, published.routing_key) == ("cb-test.jobs", "poll")
    assert published.body == body.encode()
    assert published.correlation_id == job_id
    assert published.headers == {"traceparent": TRACEPARENT}
    assert published.mandatory
    assert rig.status_calls() == 1  # the one confirming get-transcription


async def test_a_replayed_callback_is_refused_and_changes_nothing(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    assert (await rig.call(job_id, token))[0] == 202
    status, answer = await rig.call(job_id, token)
    assert (status, answer) == (409, {"status": "replayed"})
    assert len(rig.recorder.published) == 1
    assert rig.status_calls() == 1
    assert rig.outcomes("replayed") == 1


async def test_a_forged_callback_is_refused_before_anything_is_read(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await rig.call(job_id, forged) == (401, {"status": "forged"})
    assert await rig.call(str(uuid.uuid4()), token) == (401, {"status": "forged"})
    assert await rig.call(job_id, "not-a-token") == (401, {"status": "forged"})
    assert rig.recorder.published == []
    assert rig.status_calls() == 0
    # The genuine token still works: a forgery spends nothing.
    assert (await rig.call(job_id, token))[0] == 202


async def test_a_callback_for_an_unknown_job_changes_nothing(rig: Rig) -> None:
    job_id = str(uuid.uuid4())
    _, url = rig.tokens.issue(job_id)  # a valid token, but no ticket was ever written
    assert await rig.call(job_id, url.rsplit("/", 1)[1]) == (404, {"status": "unknown"})
    assert rig.recorder.published == []
    assert rig.status_calls() == 0


async def test_an_earlier_submissions_token_is_unknown(rig: Rig) -> None:
    job_id, token, body = await rig.ticketed()
    nonce, _ = rig.tokens.issue(job_id)  # a new submission replaced the ticket
    ticket = CallbackTicket(nonce=nonce, poll_body=body, traceparent=TRACEPARENT)
    await rig.ledger.record_callback_ticket(job_id, ticket.model_dump_json(), 60.0)
    assert await rig.call(job_id, token) == (404, {"status": "unknown"})
    assert rig.status_calls() == 0


async def test_a_callback_for_a_finished_or_advanced_job_changes_nothing(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    await rig.ledger.mark_done(job_id, "poll")  # polling got there first
    assert await rig.call(job_id, token) == (409, {"status": "alreadyAdvanced"})
    assert rig.recorder.published == []
    assert rig.status_calls() == 0


async def test_a_callback_before_the_transcript_is_ready_leaves_it_to_polling(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed(polls_before_ready=5)
    assert await rig.call(job_id, token) == (202, {"status": "pending"})
    assert rig.recorder.published == []
    assert rig.status_calls() == 1


async def test_a_failed_confirmation_publishes_nothing(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    rule = {"endpoint": "invox.transcription", "kind": "http_error", "status": 503, "times": 1}
    async with rig.session.post(f"{rig.sandbox.base_url}/_sandbox/faults", json=[rule]) as r:
        assert r.status == 200
    assert await rig.call(job_id, token) == (502, {"status": "confirmFailed"})
    assert rig.recorder.published == []


async def test_a_broker_that_cannot_confirm_is_unavailable(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    rig.recorder.fail_publishing = True
    assert await rig.call(job_id, token) == (503, {"status": "unavailable"})


async def test_a_body_over_the_cap_is_refused(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    big = json.dumps({"pad": "x" * 2000}).encode()
    assert await rig.call(job_id, token, big) == (413, {"status": "tooLarge"})

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        yield b'{"pad": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'"}'

    target = f"{rig.url}{CALLBACK_ROUTE_PREFIX}/{job_id}/{token}"
    async with rig.session.post(target, data=streamed()) as response:
        assert response.status == 413
    assert rig.recorder.published == []
    assert rig.status_calls() == 0
    # Refused before the ticket was redeemed: the token still works.
    assert (await rig.call(job_id, token))[0] == 202


async def test_a_body_that_does_not_arrive_in_time_is_refused(rig: Rig) -> None:
    job_id, token, _ = await rig.ticketed()
    app = web.Application()
    dataclasses.replace(rig.receiver, read_timeout_s=0.05).add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    stalled = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"{"
        await stalled.wait()  # never set: the body never ends
        yield b"}"

    try:
        target = str(server.make_url(f"{CALLBACK_ROUTE_PREFIX}/{job_id}/{token}"))
        async with rig.session.post(target, data=slow()) as response:
            assert (response.status, await response.json()) == (408, {"status": "timedOut"})
    finally:
        await server.close()
    assert rig.status_calls() == 0


@pytest.mark.parametrize("data", [b"", b"not json", b"{", b"[" * 500 + b"]" * 500, b"NaN"])
async def test_a_body_that_is_not_json_is_refused(rig: Rig, data: bytes) -> None:
    job_id, token, _ = await rig.ticketed()
    assert await rig.call(job_id, token, data) == (400, {"status": "notJson"})
    assert rig.status_calls() == 0


@pytest.mark.parametrize("data", [b"{}", b"[]", b"null", b'"COMPLETED"', b'{"a": {"b": [1, 2]}}'])
async def test_any_json_body_is_accepted(rig: Rig, data: bytes) -> None:
    job_id, token, _ = await rig.ticketed()
    assert (await rig.call(job_id, token, data))[0] == 202


async def test_the_receiver_never_logs_the_body_or_the_token(rig: Rig) -> None:
    with structlog.testing.capture_logs() as logs:
        job_id, token, _ = await rig.ticketed()
        await rig.call(job_id, token)
        await rig.call(job_id, token)
        await rig.call(job_id, token[:-1] + "A")
        await rig.call(job_id, token, json.dumps({"x": BODY_MARKER * 100}).encode())
        await rig.call(job_id, token, BODY_MARKER.encode())
    text = repr(logs)
    assert logs  # the receiver does log its outcomes
    assert {entry.get("outcome") for entry in logs} >= {"advanced", "replayed", "forged"}
    for secret in (BODY_MARKER, token, token.split(".")[1], "storage.example"):
        assert secret not in text


# --- the transcriber sends the callbackUrl -----------------------------------------------------


@pytest.fixture
def audio(tmp_path: Path) -> PreparedAudio:
    path = tmp_path / "consult.wav"
    path.write_bytes(b"RIFF" * 64)
    return PreparedAudio(
        path=path, size_bytes=path.stat().st_size, duration_s=5.0, mime_type="audio/wav",
        file_name="consult.wav", source_url=None,
    )  # fmt: skip


def job() -> JobRequest:
    return JobRequest.model_validate(
        {"jobId": str(uuid.uuid4()), "audio": {"path": "/x.wav", "mimeType": "audio/wav"}}
    )


async def test_the_presign_carries_a_callback_url_whose_nonce_is_journalled(
    rig: Rig, audio: PreparedAudio
) -> None:
    submitted_job = job()
    journal = SubmissionJournal(rig.ledger, str(submitted_job.job_id))
    result = await rig.transcriber.submit(submitted_job, audio, journal)
    assert isinstance(result, Submitted)
    record = rig.sandbox.state.transcriptions[result.handle.handle]
    assert record.callback_url is not None
    job_id, token = record.callback_url.rsplit("/", 2)[1:]
    assert job_id == str(submitted_job.job_id)
    assert rig.tokens.verify(job_id, token) == result.callback_nonce
    # A redelivery that resumes the submission gets the same nonce back from the journal.
    intent = await rig.ledger.submission_intent(job_id)
    assert intent is not None
    assert result.callback_nonce is not None
    assert intent.callback_nonce == result.callback_nonce
    assert result.callback_nonce not in repr(intent)
    resumed = await rig.transcriber.submit(submitted_job, audio, journal)
    assert isinstance(resumed, Submitted)
    assert resumed.callback_nonce == result.callback_nonce
    assert len(rig.sandbox.state.stats.paid) == 1


async def test_without_callbacks_the_presign_has_no_callback_url(
    rig: Rig, audio: PreparedAudio
) -> None:
    http = VendorHttp(rig.session, timeout_s=5.0)
    tokens = InvoxTokenSource(rig.settings.invox, http)
    client = InvoxClient(
        rig.settings.invox, http, tokens, upload_allowlist=frozenset({"127.0.0.1"})
    )
    result = await InvoxTranscriber(client).submit(job(), audio)
    assert isinstance(result, Submitted)
    assert result.callback_nonce is None
    assert rig.sandbox.state.transcriptions[result.handle.handle].callback_url is None


# --- the emulator calls back -------------------------------------------------------------------


class Hook:
    """A loopback receiver for the emulator's callbacks."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.arrived.set()
        return web.json_response({}, status=202)


async def presign(session: aiohttp.ClientSession, base: str, callback_url: str | None) -> str:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Invox-Medical-Api-Version": "2026-03-01"}
    payload: dict[str, Any] = {"mimeType": "audio/wav"}
    if callback_url is not None:
        payload["callbackUrl"] = callback_url
    url = f"{base}/api/v1/generate-presigned-url"
    async with session.post(url, json=payload, headers=headers) as response:
        body = await response.json()
    async with session.put(
        body["presignedUrl"], data=b"RIFF", headers={"Content-Type": "audio/wav"}
    ) as response:
        assert response.status == 200
    return str(body["requestId"])


async def ready(sandbox: RunningSandbox, request_id: str) -> dict[str, Any]:
    """The emulator's record of a timed transcription once it is ready (bounded wait)."""
    for _ in range(400):
        record = sandbox.state.transcriptions[request_id]
        if record.ready_at_s is not None and (
            record.callback_url is None
            or record.callback_status is not None
            or not sandbox.state.knobs.callbacks
        ):
            return record.to_json()
        await asyncio.sleep(0.025)
    raise AssertionError("the transcription never turned ready")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/hook/{token}", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("/hook/t0k3n"))
    finally:
        await server.close()


async def test_the_emulator_calls_back_when_a_timed_transcription_is_ready(
    hook: tuple[Hook, str],
) -> None:
    receiver, url = hook
    config = SandboxConfig(invox_static_token=TOKEN, ready_after_ms=20, polls_before_ready=99)
    async with running_sandbox(config) as sandbox, aiohttp.ClientSession() as session:
        request_id = await presign(session, sandbox.base_url, url)
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        record = await ready(sandbox, request_id)
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Invox-Medical-Api-Version": "2026-03-01"}
        async with session.post(
            f"{sandbox.base_url}/api/v1/get-transcription",
            json={"requestId": request_id},
            headers=headers,
        ) as response:
            status = await response.json()
        async with session.get(f"{sandbox.base_url}/_sandbox/stats") as response:
            stats = await response.json()
    assert receiver.bodies == [{"requestId": request_id, "transcriptionStatus": "COMPLETED"}]
    assert record["callbackStatus"] == 202
    assert status["transcriptionStatus"] == "COMPLETED"  # ready by time, not by polls
    assert stats["calls"]["invox.callback"] == 1
    assert stats["responses"]["invox.callback"] == {"202": 1}
    assert [t["requestId"] for t in stats["invox_transcriptions"]] == [request_id]
    assert "t0k3n" not in json.dumps(stats)


@pytest.mark.parametrize(
    ("callback_url", "knobs"),
    [
        ("http://192.0.2.10:9/hook/x", {}),  # not loopback: never called
        ("http://storage.example/hook/x", {}),
        (None, {}),  # no callbackUrl
        ("LOOPBACK", {"callbacks": False}),  # the vendor does not call back
    ],
)
async def test_the_emulator_calls_back_only_to_loopback_and_when_asked(
    hook: tuple[Hook, str], callback_url: str | None, knobs: dict[str, Any]
) -> None:
    receiver, url = hook
    config = SandboxConfig(invox_static_token=TOKEN, ready_after_ms=20)
    async with running_sandbox(config) as sandbox, aiohttp.ClientSession() as session:
        sandbox.state.knobs.update(knobs)
        request_id = await presign(
            session, sandbox.base_url, url if callback_url == "LOOPBACK" else callback_url
        )
        record = await ready(sandbox, request_id)
    assert receiver.bodies == []
    expected = None if callback_url is None or knobs else 0
    assert record["callbackStatus"] == expected
