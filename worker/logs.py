"""structlog JSON logging. Log calls pass identifiers and outcomes only; bodies never reach here,
and a last processor drops any key that names patient data in case a caller slips.

Every line on stderr is one JSON object: structlog hands its events to the standard library
(structlog.stdlib), and the one root handler renders them and every library's records (aiormq,
aio-pika, asyncio, faster-whisper, warnings, uncaught exceptions) with the same processors, so
an operator's log pipeline never meets a plain-text line or a multi-line traceback."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog

FORBIDDEN_KEYS = frozenset(
    {"body", "transcript", "summary", "note", "clinical_note", "text", "url", "audio_url", "token"}
)


def _drop_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in FORBIDDEN_KEYS & event_dict.keys():
        event_dict[key] = "[redacted]"
    return event_dict


# At DEBUG these libraries log whole AMQP frames and HTTP payloads, i.e. patient data; they
# never log below WARNING, whatever SCRIBE_LOG_LEVEL says.
FRAME_LOGGING_LIBRARIES = ("aiormq", "aio_pika", "aiohttp.client", "pamqp")


class _JsonHandler(logging.StreamHandler[TextIO]):
    """The root handler configure_logging installs (and replaces when called again); other
    handlers on the root logger (pytest's caplog, say) are left alone."""


def _json_formatter() -> structlog.stdlib.ProcessorFormatter:
    """Every record as one JSON line: structlog's own (already processed, handed over by
    wrap_for_formatter) and the standard library's (aiormq and aio-pika on a reconnect,
    asyncio's "Task exception was never retrieved", faster-whisper's progress, warnings),
    which get a level, a timestamp and their logger's name. A traceback is one field
    ("exception", text), never lines of its own."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _drop_patient_data,
            structlog.processors.JSONRenderer(),
        ],
    )


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    """sys.excepthook: an exception nothing caught ends the process as one JSON line too."""
    logging.getLogger("worker").critical(
        "process.uncaught_exception", exc_info=(exc_type, exc, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream or sys.stderr)  # one write per line: message + newline
    handler.setFormatter(_json_formatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in FRAME_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn() output: a "py.warnings" record, not text
    # Only over Python's own hooks: a test runner's (pytest collects thread exceptions) stays.
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_patient_data,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
