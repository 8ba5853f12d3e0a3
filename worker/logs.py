"""structlog JSON logging. Log calls pass identifiers and outcomes only; bodies never reach here,
and a last processor drops any key that names patient data in case a caller slips."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
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


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    logging.basicConfig(format="%(message)s", stream=stream or sys.stderr, level=level.upper())
    for name in FRAME_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_patient_data,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (print() writes the line and its newline separately).
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
