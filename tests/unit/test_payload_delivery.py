"""The delivery rules with payload encryption on (issue 19, item 7), against the in-memory
broker side (tests/recorder.py): sealed bodies are opened before the handler, everything a
stage publishes is sealed, a body that cannot be opened ends as one dead letter that keeps its
sealed bytes, and events stay clear unless SCRIBE_ENCRYPT_EVENTS asks otherwise."""

from __future__ import annotations

import json
import os
import uuid

import structlog

from schemas.errors import ErrorType
from tests.recorder import Published, RecordedMessage, Recorder
from worker import constants as c
from worker.delivery import Delivery
from worker.errors import TransientError
from worker.ledger import MemoryLedger
from worker.metrics import Metrics
from worker.outcomes import Advance, DeliveryContext, Outcome
from worker.payload_crypto import STAGE_PURPOSE, PayloadCipher, PayloadKeys
from worker.settings import RetrySettings
from worker.topology import Names

RETRY = RetrySettings(
    delay_tiers_ms=(1_000, 5_000),
    max_attempts=3,
    retry_base_ms=1_000,
    poll_interval_ms=1_000,
    poll_deadline_s=60,
    delivery_limit=10,
    stage_claim_ttl_s=300,
)
SECRET_TEXT = "the patient reports crushing chest pain"
KEY = os.urandom(32)
NAMES = Names("crypto-test")


def cipher(current: str | None = "k1", *, events: bool = False, **keys: bytes) -> PayloadCipher:
    return PayloadCipher(PayloadKeys(keys or {"k1": KEY}, current, events))


def body_of(job_id: str) -> bytes:
    return json.dumps({"schemaVersion": 1, "jobId": job_id, "note": SECRET_TEXT}).encode()


def sealed_message(job_id: str, with_cipher: PayloadCipher) -> RecordedMessage:
    body, headers = with_cipher.seal(body_of(job_id), purpose=STAGE_PURPOSE, binding=job_id)
    return RecordedMessage(
        body, headers={**headers}, correlation_id=job_id, routing_key="summarize"
    )


class Handler:
    def __init__(self, outcome: Outcome | Exception) -> None:
        self.outcome = outcome
        self.bodies: list[bytes] = []

    async def __call__(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        self.bodies.append(body)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def delivery(recorder: Recorder, with_cipher: PayloadCipher | None) -> Delivery:
    return Delivery(recorder, NAMES, RETRY, MemoryLedger(), Metrics(), cipher=with_cipher)


def only(recorder: Recorder, exchange: str) -> list[Published]:
    return [item for item in recorder.published if item.exchange == exchange]


async def test_a_sealed_message_is_opened_and_what_follows_is_sealed() -> None:
    job_id, recorder, sealer = str(uuid.uuid4()), Recorder(), cipher()
    handler = Handler(Advance(next_stage="note", body=body_of(job_id), provider="local"))
    message = sealed_message(job_id, sealer)
    await delivery(recorder, sealer).process("summarize", handler, message)
    assert handler.bodies == [body_of(job_id)]
    assert message.settlements == ["ack"]
    [advanced] = only(recorder, NAMES.jobs_exchange)
    assert SECRET_TEXT.encode() not in advanced.body
    assert job_id.encode() not in advanced.body
    assert advanced.headers[c.HEADER_PAYLOAD_KEY_ID] == "k1"
    assert advanced.correlation_id == job_id
    opened = sealer.open(
        advanced.body, advanced.headers, purpose=STAGE_PURPOSE, binding=advanced.correlation_id
    )
    assert opened == body_of(job_id)
    [progress] = only(recorder, NAMES.events_exchange)  # events stay clear by default
    assert json.loads(progress.body)["jobId"] == job_id
    assert c.HEADER_PAYLOAD_KEY_ID not in progress.headers


async def test_events_are_sealed_when_asked_bound_to_their_routing_key() -> None:
    job_id, recorder, sealer = str(uuid.uuid4()), Recorder(), cipher(events=True)
    handler = Handler(Advance(next_stage="note", body=body_of(job_id), provider="local"))
    await delivery(recorder, sealer).process("summarize", handler, sealed_message(job_id, sealer))
    [progress] = only(recorder, NAMES.events_exchange)
    assert job_id.encode() not in progress.body
    opened = sealer.open(
        progress.body, progress.headers, purpose=progress.routing_key, binding=job_id
    )
    assert json.loads(opened)["stage"] == "summarize"


async def test_a_plain_message_is_sealed_on_its_way_to_a_delay_tier() -> None:
    job_id, recorder, sealer = str(uuid.uuid4()), Recorder(), cipher()
    handler = Handler(TransientError(ErrorType.UPSTREAM_TIMEOUT, "timed out"))
    message = RecordedMessage(body_of(job_id), correlation_id=job_id, routing_key="summarize")
    await delivery(recorder, sealer).process("summarize", handler, message)
    [delayed] = only(recorder, NAMES.delay_exchange)
    assert SECRET_TEXT.encode() not in delayed.body
    assert delayed.headers[c.HEADER_ERROR_TYPE] == ErrorType.UPSTREAM_TIMEOUT  # routing: clear
    opened = sealer.open(delayed.body, delayed.headers, purpose=STAGE_PURPOSE, binding=job_id)
    assert opened == body_of(job_id)


async def test_an_unknown_key_ends_as_one_dead_letter_that_keeps_the_sealed_bytes() -> None:
    job_id, recorder = str(uuid.uuid4()), Recorder()
    old = cipher("old", old=os.urandom(32))
    message = sealed_message(job_id, old)
    handler = Handler(Advance(next_stage="note", body=b"{}", provider="local"))
    worker = delivery(recorder, cipher())
    with structlog.testing.capture_logs() as logs:
        await worker.process("summarize", handler, message)
    assert handler.bodies == []  # never handed to a parser
    assert message.settlements == ["ack"]  # settled once: no redelivery storm
    [dead] = recorder.published  # no job.failed: the jobId is inside the sealed body
    assert dead.exchange == NAMES.dead_exchange
    assert dead.routing_key == f"summarize.{ErrorType.PAYLOAD_UNDECRYPTABLE}"
    assert dead.body == message.body
    assert dead.correlation_id == job_id
    assert dead.headers[c.HEADER_PAYLOAD_KEY_ID] == "old"
    assert dead.headers[c.HEADER_ERROR_TYPE] == ErrorType.PAYLOAD_UNDECRYPTABLE
    assert "'old'" in dead.headers[c.HEADER_ERROR_MESSAGE]
    # The key configured later still opens the dead letter as it was kept.
    assert old.open(dead.body, dead.headers, purpose=STAGE_PURPOSE, binding=dead.correlation_id)
    assert [entry["error_type"] for entry in logs] == [ErrorType.PAYLOAD_UNDECRYPTABLE]
    assert SECRET_TEXT not in repr(logs)


async def test_an_altered_body_and_no_keys_at_all_are_dead_letters_too() -> None:
    job_id, sealer = str(uuid.uuid4()), cipher()
    altered = sealed_message(job_id, sealer)
    altered.body = altered.body[:-1] + bytes([altered.body[-1] ^ 1])
    moved = sealed_message(job_id, sealer)
    moved.correlation_id = str(uuid.uuid4())  # a body moved into another job's message
    for message, worker_cipher in (
        (altered, sealer),
        (moved, sealer),
        (sealed_message(job_id, sealer), None),
    ):
        recorder = Recorder()
        handler = Handler(Advance(next_stage="note", body=b"{}", provider="local"))
        await delivery(recorder, worker_cipher).process("summarize", handler, message)
        [dead] = recorder.published
        assert dead.routing_key == f"summarize.{ErrorType.PAYLOAD_UNDECRYPTABLE}"
        assert handler.bodies == []
        assert message.settlements == ["ack"]
