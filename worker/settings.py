"""Typed, frozen settings read from SCRIBE_* environment variables.

Every parse failure raises SettingsError naming the variable, so a bad deployment fails at start
instead of at the first job. Secrets may also come from a file named by <VARIABLE>_FILE.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from worker import constants as c
from worker.amqp_tls import AmqpTls, read_amqp_tls
from worker.audio import DEMUXERS, TranscriberLimits
from worker.constants import STAGES, Stage
from worker.errors import SettingsError
from worker.payload_crypto import PayloadKeys, read_payload_keys

T = TypeVar("T")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A DNS name (labels of letters, digits, '-' and '_', as Compose service names allow).
_ALLOWLIST_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_][a-z0-9_-]{0,62})*\.?$"
)


@dataclass(frozen=True, repr=False)
class Secret:
    """A credential that never prints itself."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class IntronSettings:
    base_url: str
    api_key: Secret | None
    upload_path: str
    status_path: str
    # SCRIBE_INTRON_REDELIVERY: what a redelivery does when an earlier delivery started an upload
    # and never learnt its file_id (it may have been paid): upload again ("reupload"), or
    # dead-letter it as uploadOutcomeUnknown for a person to decide ("dead-letter").
    redelivery: str = "reupload"


@dataclass(frozen=True)
class InvoxSettings:
    base_url: str | None
    api_version: str
    access_token: Secret | None
    token_url: str | None
    app_id: str | None
    app_key: Secret | None

    @property
    def configured(self) -> bool:
        return self.base_url is not None and (
            self.access_token is not None or self.token_url is not None
        )


@dataclass(frozen=True)
class ChunkSettings:
    """Long recordings (worker/chunking.py): SCRIBE_WORK_DIR holds each message's chunk files
    (removed when its work ends, and swept at start); SCRIBE_LOCAL_CHUNK_S is the longest chunk
    the local model transcribes in one message (under RabbitMQ's 30-minute consumer_timeout)."""

    work_dir: Path = Path(tempfile.gettempdir()) / c.DEFAULT_WORK_DIR_NAME
    local_chunk_s: float = c.DEFAULT_LOCAL_CHUNK_S


@dataclass(frozen=True)
class AudioSettings:
    """A job's audio: SCRIBE_MAX_JOB_AUDIO_S is the longest any job may be (audioTooLong over
    it); each transcriber's limits only decide whether audio within it is converted or chunked
    (Intron: its documented 10 minutes and 100 MB; Invox: SCRIBE_INVOX_MAX_AUDIO_S; local: none).
    """

    max_job_s: float = c.DEFAULT_MAX_JOB_AUDIO_S
    invox_max_s: float = c.DEFAULT_INVOX_MAX_AUDIO_S
    intron_formats: frozenset[str] = frozenset({c.DEFAULT_VENDOR_AUDIO_FORMATS})
    invox_formats: frozenset[str] = frozenset({c.DEFAULT_VENDOR_AUDIO_FORMATS})
    read_timeout_s: float = c.DEFAULT_AUDIO_READ_TIMEOUT_S

    def limits(self) -> dict[str, TranscriberLimits]:
        """Per transcriber (the registry's names); local takes every accepted format, any length.
        WAV is always taken: it is what the others are converted to."""
        return {
            "intron": TranscriberLimits(
                c.INTRON_MAX_AUDIO_S, c.INTRON_MAX_AUDIO_BYTES, self.intron_formats | {"wav"}
            ),
            "invox": TranscriberLimits(self.invox_max_s, None, self.invox_formats | {"wav"}),
            "local": TranscriberLimits(None, None, frozenset(DEMUXERS)),
        }


@dataclass(frozen=True)
class LocalSettings:
    """Offline providers: SCRIBE_LOCAL_ASR_WORKERS threads share one lazily loaded ASR model;
    the summary and the note each get a time budget (over it: summaryTimedOut, noteTimedOut),
    as one hostile but valid job must not hold a thread, and the CPU, for minutes."""

    asr_workers: int = 1
    # SCRIBE_LOCAL_ASR_MODEL (one of c.LOCAL_ASR_MODELS), SCRIBE_LOCAL_ASR_VAD (on/off: skip
    # silence with faster-whisper's Silero VAD), SCRIBE_LOCAL_ASR_PROMPT ("none", the default;
    # "clinical": the built-in vocabulary prompt; or the prompt's own text),
    # SCRIBE_LOCAL_ASR_BEAM_SIZE (1 = greedy decoding): docs/quality.md.
    asr_model: c.LocalAsrModel = c.DEFAULT_LOCAL_ASR_MODEL
    asr_vad: bool = True
    asr_prompt: str | None = None
    asr_beam_size: int = c.DEFAULT_LOCAL_ASR_BEAM_SIZE
    summary_budget_s: float = c.DEFAULT_LOCAL_SUMMARY_BUDGET_S
    note_budget_s: float = c.DEFAULT_LOCAL_NOTE_BUDGET_S


@dataclass(frozen=True)
class LlmSettings:
    """An OpenAI-compatible chat endpoint (provider "llm"); registered only when base_url is set."""

    base_url: str | None = None
    model: str = "default"
    api_key: Secret | None = None
    timeout_s: float = 120.0

    @property
    def configured(self) -> bool:
        return self.base_url is not None


@dataclass(frozen=True)
class RetrySettings:
    delay_tiers_ms: tuple[int, ...]
    max_attempts: int
    retry_base_ms: int
    poll_interval_ms: int
    poll_deadline_s: float
    delivery_limit: int
    stage_claim_ttl_s: float


@dataclass(frozen=True)
class Settings:
    # The first node of SCRIBE_AMQP_URL; amqp_urls holds every node, in the order given.
    amqp_url: Secret
    prefix: str
    intron: IntronSettings
    invox: InvoxSettings
    retry: RetrySettings
    stages: tuple[Stage, ...]
    stage_events: frozenset[Stage]
    prefetch: dict[Stage, int]
    http_timeout_s: float
    rate_limits_per_min: dict[str, int]
    rate_limit_max_wait_s: float
    max_audio_bytes: int
    audio: AudioSettings
    max_document_bytes: int
    url_allowlist: frozenset[str]
    storage_root: Path | None
    redis_url: Secret | None
    http_port: int
    shutdown_grace_s: float
    log_level: str
    # Where /healthz, /readyz and /metrics listen: loopback unless a container asks for more.
    http_host: str = c.DEFAULT_HTTP_HOST
    # /readyz turns false when a stage holds messages and has settled none for this long.
    stall_after_s: float = c.DEFAULT_STALL_AFTER_S
    # A vendor answer (wire or decoded bytes) over this is refused while it is read.
    max_vendor_response_bytes: int = c.DEFAULT_MAX_VENDOR_RESPONSE_BYTES
    local: LocalSettings = LocalSettings()
    llm: LlmSettings = LlmSettings()
    # Signs the vendor handles of poll messages (worker/handles.py); None: derived per vendor.
    handle_key: Secret | None = None
    # How long a starting worker waits for the broker to answer before it exits (code 3).
    broker_start_timeout_s: float = c.DEFAULT_BROKER_START_TIMEOUT_S
    # Long recordings: where chunk files live, how long a local chunk is (worker/chunking.py).
    chunking: ChunkSettings = ChunkSettings()
    # SCRIBE_CALLBACK_BASE_URL: where Invox reaches this worker's HTTP port (worker/callbacks.py);
    # None: no callbackUrl is sent and transcriptions are found by polling alone.
    callback_base_url: str | None = None
    # A callback body over this is refused (413) before it is parsed.
    callback_max_bytes: int = c.DEFAULT_CALLBACK_MAX_BYTES
    # The job index (worker/jobindex.py) and its status API: off without a database URL.
    database_url: Secret | None = None
    # GET /jobs answers only requests bearing this token, when set.
    api_token: Secret | None = None
    # Index entries waiting to be written; past this, new ones are dropped (never an ack held).
    index_queue_max: int = c.DEFAULT_INDEX_QUEUE_MAX
    # Payload encryption in the broker (worker/payload_crypto.py): no keys, nothing sealed.
    payload_keys: PayloadKeys | None = None
    # amqps: CA, optional client certificate, server name (worker/amqp_tls.py); None for amqp.
    amqp_tls: AmqpTls | None = None
    # SCRIBE_AMQP_URL's nodes (a comma-separated list, one per cluster node): connections go to
    # the first live one and move to another when it dies (worker/failover.py). Empty: amqp_url.
    amqp_urls: tuple[Secret, ...] = ()

    def broker_urls(self) -> tuple[str, ...]:
        """Every node's URL, in the order given (one for a single broker)."""
        return tuple(url.value for url in self.amqp_urls) or (self.amqp_url.value,)

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        return self.amqp_tls.context() if self.amqp_tls is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return _Reader(env).settings()


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address literal (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind_host(text: str) -> str:
    """An address to listen on: an IP literal (0.0.0.0 or :: for every interface)."""
    return str(ipaddress.ip_address(text))


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def parse(self, name: str, default: T, convert: Callable[[str], T], problem: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            raise SettingsError(name, f"{problem} (got {value[:40]!r})") from exc

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.parse(name, default, int, "expected an integer")
        if value < minimum:
            raise SettingsError(name, f"must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise SettingsError(name, f"must be <= {maximum}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self.parse(name, default, float, "expected a number")
        if value < minimum:
            raise SettingsError(name, f"must be >= {minimum}")
        return value

    def on_off(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("on", "true", "1", "yes"):
            return True
        if value.lower() in ("off", "false", "0", "no"):
            return False
        raise SettingsError(name, f"expected on or off (got {value[:40]!r})")

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(name, f"expected a {'/'.join(schemes)} URL with a host")
        return value.rstrip("/")

    def secret(self, name: str) -> Secret | None:
        file_name = self.raw(f"{name}_FILE")
        if file_name is not None:
            try:
                text = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(
                    f"{name}_FILE", f"cannot read the file ({exc.strerror})"
                ) from exc
            if not text:
                raise SettingsError(f"{name}_FILE", "the file is empty")
            return Secret(text)
        value = self.raw(name)
        return Secret(value) if value is not None else None

    def stage_list(self, name: str, allow_none: bool = False) -> tuple[Stage, ...]:
        value = self.raw(name)
        if value is None:
            return STAGES
        if allow_none and value.lower() == "none":
            return ()
        chosen: list[Stage] = []
        for part in (part.strip() for part in value.split(",")):
            matches = [stage for stage in STAGES if stage == part]
            if not matches:
                also = " or none" if allow_none else ""
                raise SettingsError(name, f"unknown stage {part[:20]!r}; use {STAGES}{also}")
            chosen.append(matches[0])
        return tuple(chosen)

    def rate_limits(self) -> dict[str, int]:
        """SCRIBE_RATE_LIMITS: endpoint=calls per minute, e.g. intron.upload=30,invox.summary=60."""

        def convert(text: str) -> dict[str, int]:
            limits: dict[str, int] = {}
            if text.lower() == "none":
                return limits
            for item in filter(None, (part.strip() for part in text.split(","))):
                endpoint, _, value = item.partition("=")
                if not re.match(r"^[a-z]+\.[a-z_]+$", endpoint.strip()) or int(value) <= 0:
                    raise ValueError(item)
                if endpoint.strip() not in c.RATE_LIMIT_ENDPOINTS:
                    raise SettingsError(
                        "SCRIBE_RATE_LIMITS",
                        f"unknown endpoint {endpoint.strip()[:40]!r}; "
                        f"use one of {', '.join(c.RATE_LIMIT_ENDPOINTS)}",
                    )
                limits[endpoint.strip()] = int(value)
            return limits

        return self.parse(
            "SCRIBE_RATE_LIMITS",
            dict(c.DEFAULT_RATE_LIMITS_PER_MIN),
            convert,
            "expected endpoint=calls-per-minute pairs, e.g. intron.upload=30,intron.status=100",
        )

    def delay_tiers(self) -> tuple[int, ...]:
        def convert(text: str) -> tuple[int, ...]:
            tiers = tuple(sorted({int(part) for part in text.split(",")}))
            if not tiers or tiers[0] <= 0:
                raise ValueError("tiers must be positive")
            return tiers

        return self.parse(
            "SCRIBE_DELAY_TIERS_MS",
            c.DEFAULT_DELAY_TIERS_MS,
            convert,
            "expected comma-separated positive milliseconds",
        )

    def settings(self) -> Settings:
        prefix = self.raw("SCRIBE_PREFIX") or c.DEFAULT_PREFIX
        if not _PREFIX_RE.fullmatch(prefix):
            raise SettingsError("SCRIBE_PREFIX", "use letters, digits, '.', '_' or '-'")
        api_version = self.raw("SCRIBE_INVOX_API_VERSION") or c.DEFAULT_INVOX_API_VERSION
        if not _API_VERSION_RE.match(api_version):
            raise SettingsError("SCRIBE_INVOX_API_VERSION", "expected a date like 2026-03-01")
        log_level = (self.raw("SCRIBE_LOG_LEVEL") or "info").lower()
        if log_level not in {"debug", "info", "warning", "error"}:
            raise SettingsError("SCRIBE_LOG_LEVEL", "use debug, info, warning or error")
        storage_root = self.raw("SCRIBE_STORAGE_ROOT")
        if storage_root is not None and not Path(storage_root).is_dir():
            raise SettingsError("SCRIBE_STORAGE_ROOT", "not a readable directory")
        stages = self.stage_list("SCRIBE_STAGES")
        default_prefetch = self.integer("SCRIBE_PREFETCH", c.DEFAULT_PREFETCH, minimum=1)
        amqp_urls = self.amqp_urls()
        return Settings(
            amqp_url=amqp_urls[0],
            amqp_urls=amqp_urls,
            amqp_tls=read_amqp_tls(self._env, urlsplit(amqp_urls[0].value).scheme),
            prefix=prefix,
            intron=IntronSettings(
                base_url=self.url(
                    "SCRIBE_INTRON_BASE_URL", c.DEFAULT_INTRON_BASE_URL, ("https", "http")
                )
                or c.DEFAULT_INTRON_BASE_URL,
                api_key=self.secret("SCRIBE_INTRON_API_KEY"),
                upload_path=self.raw("SCRIBE_INTRON_UPLOAD_PATH") or c.DEFAULT_INTRON_UPLOAD_PATH,
                status_path=self._status_path(),
                redelivery=self._intron_redelivery(),
            ),
            invox=self._invox(api_version),
            retry=RetrySettings(
                delay_tiers_ms=self.delay_tiers(),
                max_attempts=self.integer("SCRIBE_MAX_ATTEMPTS", c.DEFAULT_MAX_ATTEMPTS, 1),
                retry_base_ms=self.integer("SCRIBE_RETRY_BASE_MS", c.DEFAULT_RETRY_BASE_MS, 1),
                poll_interval_ms=self.integer(
                    "SCRIBE_POLL_INTERVAL_MS", c.DEFAULT_POLL_INTERVAL_MS, 1
                ),
                poll_deadline_s=self.number("SCRIBE_POLL_DEADLINE_S", c.DEFAULT_POLL_DEADLINE_S),
                delivery_limit=self.integer("SCRIBE_DELIVERY_LIMIT", c.DEFAULT_DELIVERY_LIMIT, 1),
                stage_claim_ttl_s=self.number(
                    "SCRIBE_STAGE_CLAIM_TTL_S", c.DEFAULT_STAGE_CLAIM_TTL_S, 1.0
                ),
            ),
            stages=stages,
            stage_events=frozenset(self.stage_list("SCRIBE_STAGE_EVENTS", allow_none=True)),
            prefetch={
                stage: self.integer(f"SCRIBE_PREFETCH_{stage.upper()}", default_prefetch, 1)
                for stage in stages
            },
            http_timeout_s=self.number("SCRIBE_HTTP_TIMEOUT_S", c.DEFAULT_HTTP_TIMEOUT_S, 0.001),
            rate_limits_per_min=self.rate_limits(),
            rate_limit_max_wait_s=self.number(
                "SCRIBE_RATE_LIMIT_MAX_WAIT_S", c.DEFAULT_RATE_LIMIT_MAX_WAIT_S
            ),
            max_audio_bytes=self.integer("SCRIBE_MAX_AUDIO_BYTES", c.DEFAULT_MAX_AUDIO_BYTES, 1),
            audio=self._audio(),
            chunking=self._chunking(),
            max_document_bytes=self.integer(
                "SCRIBE_MAX_DOCUMENT_BYTES", c.DEFAULT_MAX_DOCUMENT_BYTES, 1
            ),
            max_vendor_response_bytes=self.integer(
                "SCRIBE_MAX_VENDOR_RESPONSE_BYTES", c.DEFAULT_MAX_VENDOR_RESPONSE_BYTES, 1024
            ),
            url_allowlist=self._url_allowlist(),
            storage_root=Path(storage_root).resolve() if storage_root else None,
            redis_url=self._redis_url(),
            http_port=self.integer("SCRIBE_HTTP_PORT", c.DEFAULT_HTTP_PORT, 0, 65535),
            http_host=self.parse(
                "SCRIBE_HTTP_HOST", c.DEFAULT_HTTP_HOST, _bind_host, "expected an IP address"
            ),
            stall_after_s=self.number("SCRIBE_STALL_AFTER_S", c.DEFAULT_STALL_AFTER_S, 1.0),
            shutdown_grace_s=self.number("SCRIBE_SHUTDOWN_GRACE_S", c.DEFAULT_SHUTDOWN_GRACE_S),
            log_level=log_level,
            local=self._local(),
            llm=self._llm(),
            handle_key=self._handle_key(),
            broker_start_timeout_s=self.number(
                "SCRIBE_BROKER_START_TIMEOUT_S", c.DEFAULT_BROKER_START_TIMEOUT_S
            ),
            callback_base_url=self._callback_base_url(),
            callback_max_bytes=self.integer(
                "SCRIBE_CALLBACK_MAX_BYTES", c.DEFAULT_CALLBACK_MAX_BYTES, 1, 1024 * 1024
            ),
            database_url=self._database_url(),
            api_token=self._api_token(),
            index_queue_max=self.integer(
                "SCRIBE_INDEX_QUEUE_MAX", c.DEFAULT_INDEX_QUEUE_MAX, 1, 10_000_000
            ),
            payload_keys=self._payload_keys(),
        )

    def _payload_keys(self) -> PayloadKeys | None:
        """SCRIBE_PAYLOAD_KEYS (or _FILE), SCRIBE_PAYLOAD_KEY_ID, SCRIBE_ENCRYPT_EVENTS."""
        keys = self.secret("SCRIBE_PAYLOAD_KEYS")
        return read_payload_keys(
            keys.value if keys is not None else None,
            self.raw("SCRIBE_PAYLOAD_KEY_ID"),
            self.on_off("SCRIBE_ENCRYPT_EVENTS", False),
        )

    def amqp_urls(self) -> tuple[Secret, ...]:
        """SCRIBE_AMQP_URL: one URL, or several separated by commas (the nodes of a cluster).
        Each is checked; all use one scheme, as one TLS setting (worker/amqp_tls.py) serves
        every node. Messages name an item by its position, never its text (it holds the
        password)."""
        name = "SCRIBE_AMQP_URL"
        items = [item.strip() for item in (self.raw(name) or c.DEFAULT_AMQP_URL).split(",")]
        if len(items) > c.MAX_AMQP_NODES:
            raise SettingsError(name, f"at most {c.MAX_AMQP_NODES} node URLs")
        urls: list[Secret] = []
        endpoints: set[tuple[str, int | None]] = set()
        for position, item in enumerate(items, start=1):
            parts = urlsplit(item)
            where = f"URL {position} of {len(items)}: " if len(items) > 1 else ""
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                raise SettingsError(name, f"{where}expected an amqp/amqps URL with a host")
            try:
                port = parts.port
            except ValueError:
                raise SettingsError(name, f"{where}the port is not within 0..65535") from None
            if parts.scheme != urlsplit(items[0]).scheme:
                raise SettingsError(name, f"{where}every node URL must use the same scheme")
            if (parts.hostname, port) in endpoints:
                raise SettingsError(name, f"{where}the same host and port as an earlier one")
            endpoints.add((parts.hostname, port))
            urls.append(Secret(item.rstrip("/")))
        return tuple(urls)

    def _database_url(self) -> Secret | None:
        """SCRIBE_DATABASE_URL (or SCRIBE_DATABASE_URL_FILE: it may hold a password)."""
        url = self.secret("SCRIBE_DATABASE_URL")
        if url is not None:
            parts = urlsplit(url.value)
            if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
                raise SettingsError(
                    "SCRIBE_DATABASE_URL", "expected a postgresql:// URL with a host"
                )
        return url

    def _callback_base_url(self) -> str | None:
        """https, or http to a loopback host (the emulator, a local proxy): the URL carries the
        callback token, which must not cross a network in clear text. No query or fragment:
        the worker appends the path."""
        name = "SCRIBE_CALLBACK_BASE_URL"
        url = self.url(name, None, ("https", "http"))
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise SettingsError(name, "expected a base URL without credentials, query or fragment")
        if parts.scheme != "https" and not is_loopback_host(parts.hostname or ""):
            raise SettingsError(name, "must be https unless its host is a loopback address")
        try:
            parts.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError as exc:
            raise SettingsError(name, "the port is not a number within 0..65535") from exc
        return url

    def _api_token(self) -> Secret | None:
        """SCRIBE_API_TOKEN (or SCRIBE_API_TOKEN_FILE): the status API's bearer token."""
        token = self.secret("SCRIBE_API_TOKEN")
        if token is not None and len(token.value.encode("utf-8")) < 16:
            raise SettingsError("SCRIBE_API_TOKEN", "must be at least 16 bytes")
        return token

    def _audio(self) -> AudioSettings:
        if self.raw("SCRIBE_MAX_AUDIO_DURATION_S") is not None:
            raise SettingsError(
                "SCRIBE_MAX_AUDIO_DURATION_S",
                "replaced by SCRIBE_MAX_JOB_AUDIO_S (the job maximum; each transcriber's own "
                "limit now chunks instead of refusing)",
            )
        return AudioSettings(
            max_job_s=self.number("SCRIBE_MAX_JOB_AUDIO_S", c.DEFAULT_MAX_JOB_AUDIO_S, 0.001),
            invox_max_s=self.number("SCRIBE_INVOX_MAX_AUDIO_S", c.DEFAULT_INVOX_MAX_AUDIO_S, 1.0),
            intron_formats=self._audio_formats("SCRIBE_INTRON_AUDIO_FORMATS"),
            invox_formats=self._audio_formats("SCRIBE_INVOX_AUDIO_FORMATS"),
            read_timeout_s=self.number(
                "SCRIBE_AUDIO_READ_TIMEOUT_S", c.DEFAULT_AUDIO_READ_TIMEOUT_S, 0.001
            ),
        )

    def _chunking(self) -> ChunkSettings:
        work_dir = self.raw("SCRIBE_WORK_DIR")
        return ChunkSettings(
            work_dir=Path(work_dir).resolve() if work_dir else ChunkSettings().work_dir,
            local_chunk_s=self.number("SCRIBE_LOCAL_CHUNK_S", c.DEFAULT_LOCAL_CHUNK_S, 10.0),
        )

    def _audio_formats(self, name: str) -> frozenset[str]:
        """A comma-separated list of worker/audio.py's container names."""
        value = self.raw(name) or c.DEFAULT_VENDOR_AUDIO_FORMATS
        formats = frozenset(part.strip().lower() for part in value.split(",") if part.strip())
        unknown = sorted(formats - set(DEMUXERS))
        if unknown or not formats:
            raise SettingsError(
                name, f"expected some of {', '.join(DEMUXERS)} (got {value[:40]!r})"
            )
        return formats

    def _url_allowlist(self) -> frozenset[str]:
        """SCRIBE_URL_ALLOWLIST: comma-separated host names or IP addresses, each checked, as a
        list split on anything else ("a;b", "a b") would be one host that matches no URL."""
        hosts: set[str] = set()
        for part in (self.raw("SCRIBE_URL_ALLOWLIST") or "").split(","):
            host = part.strip().lower()
            if not host:
                continue
            if not _ALLOWLIST_HOST_RE.match(host) and not _is_ip_address(host):
                hint = "; separate hosts with commas" if re.search(r"[\s;|]", host) else ""
                raise SettingsError(
                    "SCRIBE_URL_ALLOWLIST",
                    f"{host[:60]!r} is not a host name or IP address{hint}",
                )
            hosts.add(host)
        return frozenset(hosts)

    def _handle_key(self) -> Secret | None:
        """SCRIBE_HANDLE_KEY: an HMAC key guessable by nobody, so at least 32 bytes."""
        key = self.secret("SCRIBE_HANDLE_KEY")
        if key is not None and len(key.value.encode("utf-8")) < 32:
            raise SettingsError(
                "SCRIBE_HANDLE_KEY", "must be at least 32 bytes (e.g. `openssl rand -hex 32`)"
            )
        return key

    def _local(self) -> LocalSettings:
        budgets: dict[str, float] = {}
        for name, default in (
            ("SCRIBE_LOCAL_SUMMARY_BUDGET_S", c.DEFAULT_LOCAL_SUMMARY_BUDGET_S),
            ("SCRIBE_LOCAL_NOTE_BUDGET_S", c.DEFAULT_LOCAL_NOTE_BUDGET_S),
        ):
            budgets[name] = self.number(name, default, 0.001)
            if budgets[name] != budgets[name]:  # NaN compares false with everything
                raise SettingsError(name, "expected a number of seconds")
        return LocalSettings(
            asr_workers=self.integer("SCRIBE_LOCAL_ASR_WORKERS", 1, 1),
            asr_model=self._asr_model(),
            asr_vad=self.on_off("SCRIBE_LOCAL_ASR_VAD", True),
            asr_prompt=self._asr_prompt(),
            asr_beam_size=self.integer(
                "SCRIBE_LOCAL_ASR_BEAM_SIZE", c.DEFAULT_LOCAL_ASR_BEAM_SIZE, 1, 10
            ),
            summary_budget_s=budgets["SCRIBE_LOCAL_SUMMARY_BUDGET_S"],
            note_budget_s=budgets["SCRIBE_LOCAL_NOTE_BUDGET_S"],
        )

    def _asr_model(self) -> c.LocalAsrModel:
        value = self.raw("SCRIBE_LOCAL_ASR_MODEL")
        if value is None:
            return c.DEFAULT_LOCAL_ASR_MODEL
        for model in c.LOCAL_ASR_MODELS:
            if model == value.lower():
                return model
        raise SettingsError(
            "SCRIBE_LOCAL_ASR_MODEL",
            f"unknown model {value[:40]!r}; use one of {', '.join(c.LOCAL_ASR_MODELS)}",
        )

    def _asr_prompt(self) -> str | None:
        """None for "none" (the default, measured best in docs/quality.md); "clinical" names
        the built-in vocabulary prompt."""
        value = self.raw("SCRIBE_LOCAL_ASR_PROMPT")
        if value is None:
            return None
        if value.lower() in (c.LOCAL_ASR_PROMPT_NONE, c.LOCAL_ASR_PROMPT_CLINICAL):
            return None if value.lower() == c.LOCAL_ASR_PROMPT_NONE else value.lower()
        if len(value) > c.LOCAL_ASR_PROMPT_MAX_CHARS or not value.isprintable():
            raise SettingsError(
                "SCRIBE_LOCAL_ASR_PROMPT",
                f"a prompt of at most {c.LOCAL_ASR_PROMPT_MAX_CHARS} printable characters, "
                f"{c.LOCAL_ASR_PROMPT_CLINICAL!r} or {c.LOCAL_ASR_PROMPT_NONE!r}",
            )
        return value

    def _llm(self) -> LlmSettings:
        return LlmSettings(
            base_url=self.url("SCRIBE_LLM_BASE_URL", None, ("https", "http")),
            model=self.raw("SCRIBE_LLM_MODEL") or "default",
            api_key=self.secret("SCRIBE_LLM_API_KEY"),
            timeout_s=self.number("SCRIBE_LLM_TIMEOUT_S", 120.0, 0.001),
        )

    def _intron_redelivery(self) -> str:
        value = (self.raw("SCRIBE_INTRON_REDELIVERY") or c.INTRON_REDELIVERY_POLICIES[0]).lower()
        if value not in c.INTRON_REDELIVERY_POLICIES:
            raise SettingsError(
                "SCRIBE_INTRON_REDELIVERY",
                f"use {' or '.join(c.INTRON_REDELIVERY_POLICIES)} (got {value[:20]!r})",
            )
        return value

    def _status_path(self) -> str:
        path = self.raw("SCRIBE_INTRON_STATUS_PATH") or c.DEFAULT_INTRON_STATUS_PATH
        if "{file_id}" not in path:
            raise SettingsError("SCRIBE_INTRON_STATUS_PATH", "must contain {file_id}")
        return path

    def _redis_url(self) -> Secret | None:
        url = self.url("SCRIBE_REDIS_URL", None, ("redis", "rediss", "unix"))
        return Secret(url) if url else None

    def _invox(self, api_version: str) -> InvoxSettings:
        token_url = self.url("SCRIBE_INVOX_TOKEN_URL", None, ("https", "http"))
        app_id = self.raw("SCRIBE_INVOX_APP_ID")
        app_key = self.secret("SCRIBE_INVOX_APP_KEY")
        if token_url is not None and (app_id is None or app_key is None):
            raise SettingsError(
                "SCRIBE_INVOX_TOKEN_URL",
                "needs SCRIBE_INVOX_APP_ID and SCRIBE_INVOX_APP_KEY to fetch tokens",
            )
        return InvoxSettings(
            base_url=self.url("SCRIBE_INVOX_BASE_URL", None, ("https", "http")),
            api_version=api_version,
            access_token=self.secret("SCRIBE_INVOX_ACCESS_TOKEN"),
            token_url=token_url,
            app_id=app_id,
            app_key=app_key,
        )


# The same typed reading for the operator tools' own settings (ops/console/settings.py): one
# set of rules for every SCRIBE_* variable, each failure naming it.
EnvReader = _Reader
