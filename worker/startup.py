"""Start-up failures that the CLIs report as one line and a distinct exit code, not a traceback.

A wrong broker password, a broker that does not answer and an HTTP port already taken are
mistakes of the deployment, not bugs of the worker: the operator needs the host and port (never
the password) and an exit code that a supervisor or a script can tell apart (README, "Exit
codes"). A wrong password is never retried (no retry can fix it); a broker that does not answer
yet is retried quietly, as a broker restarting while its workers start is normal.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import (
    AMQPError,
    AuthenticationError,
    ChannelAccessRefused,
    ChannelPreconditionFailed,
    ProbableAuthenticationError,
)

from worker.amqp_tls import describe_tls_error, tls_error

log = structlog.get_logger("scribe.startup")

EXIT_BROKER_UNREACHABLE = 3
EXIT_BROKER_REFUSED = 4
EXIT_HTTP_LISTEN = 5
EXIT_TOPOLOGY = 6

RETRY_EVERY_S = 1.0
ATTEMPT_TIMEOUT_S = 10.0
_NAME_NOT_FOUND = {-2, -3, -5}  # EAI_NONAME, EAI_AGAIN, EAI_NODATA from getaddrinfo

ConnectionT = TypeVar("ConnectionT", bound=AbstractConnection)


class StartupError(Exception):
    """Stops a CLI with one line on stderr and exit_code; the message holds no secret."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def broker_endpoint(amqp_url: str) -> str:
    """host:port of an AMQP URL: what an operator needs to see, without the credentials."""
    parts = urlsplit(amqp_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default_port = 5671 if parts.scheme == "amqps" else 5672
    return host_port(parts.hostname or "?", port or default_port)


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return "timed out"
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code in _NAME_NOT_FOUND:
        return "host name not found"
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


def broker_failure(exc: OSError | AMQPError, endpoint: str) -> StartupError | None:
    """The final error for a failed connection attempt, or None when a retry may still help
    (nothing answered: refused, timed out, name not found)."""
    tls = tls_error(exc)
    if tls is not None:  # a wrong CA or server name does not get better by retrying
        return StartupError(
            EXIT_BROKER_REFUSED,
            f"TLS verification of the broker at {endpoint} failed ({describe_tls_error(tls)}): "
            "check SCRIBE_AMQP_CA_FILE, SCRIBE_AMQP_SERVER_NAME and the client certificate",
        )
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError):
        return StartupError(
            EXIT_BROKER_REFUSED,
            f"the broker at {endpoint} refused the login: "
            "check the user name and password in SCRIBE_AMQP_URL",
        )
    if isinstance(exc, OSError):  # aiormq's AMQPConnectionError for a refused socket is one
        return None
    return StartupError(
        EXIT_BROKER_REFUSED,
        f"the broker at {endpoint} refused the connection ({type(exc).__name__}): "
        "check the virtual host and the user's permissions in SCRIBE_AMQP_URL",
    )


def unreachable(endpoint: str, waited_s: float, reason: str) -> StartupError:
    within = f" within {waited_s:g} s" if waited_s > 0 else ""
    return StartupError(
        EXIT_BROKER_UNREACHABLE,
        f"the broker at {endpoint} did not answer{within} ({reason}): "
        "check the host and port in SCRIBE_AMQP_URL",
    )


class _DropTransportErrors(logging.Filter):
    """aiormq logs "error when creating transport" at ERROR for every refused attempt; the
    caller reports the outcome once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


@contextmanager
def _quiet_connect_attempts() -> Iterator[None]:
    logger = logging.getLogger("aiormq.connection")
    quiet = _DropTransportErrors()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


async def open_broker_connection(
    amqp_url: str,
    *,
    wait_s: float,
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractConnection | None:
    """A plain connection, retried every second while nothing answers, for up to wait_s
    (0: one attempt). Logs one line at the first failed attempt, not one per retry.

    Raises StartupError (refused login: at once; no answer: after wait_s). Returns None if
    stop is set while it waits.
    """
    return await _connect_with_retry(aio_pika.connect, amqp_url, wait_s, stop, ssl_context)


async def open_robust_connection(
    amqp_url: str, ssl_context: ssl.SSLContext | None = None
) -> AbstractRobustConnection:
    """One attempt at a robust connection (a CLI fails fast); StartupError if it fails."""
    connection: AbstractRobustConnection | None = await _connect_with_retry(
        aio_pika.connect_robust, amqp_url, 0.0, None, ssl_context
    )
    if connection is None:  # only a stop event ends the wait without a connection
        raise unreachable(broker_endpoint(amqp_url), 0.0, "stopped")
    return connection


async def _connect_with_retry(
    connect: Callable[..., Awaitable[ConnectionT]],
    amqp_url: str,
    wait_s: float,
    stop: asyncio.Event | None,
    ssl_context: ssl.SSLContext | None = None,
) -> ConnectionT | None:
    endpoint = broker_endpoint(amqp_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    warned = False
    with _quiet_connect_attempts():
        while True:
            timeout_s = max(0.5, min(ATTEMPT_TIMEOUT_S, deadline - loop.time()))
            try:
                return await connect(amqp_url, timeout=timeout_s, ssl_context=ssl_context)
            except (OSError, AMQPError) as exc:
                failure = broker_failure(exc, endpoint)
                if failure is not None:
                    raise failure from None
                reason = _reason(exc)
            if loop.time() >= deadline:
                raise unreachable(endpoint, wait_s, reason)
            if not warned:
                log.warning("broker.unreachable", broker=endpoint, reason=reason, wait_s=wait_s)
                warned = True
            if stop is None:
                await asyncio.sleep(RETRY_EVERY_S)
                continue
            try:
                await asyncio.wait_for(stop.wait(), RETRY_EVERY_S)
            except TimeoutError:
                continue
            return None


def _reply_text(exc: AMQPError) -> str:
    """The broker's reply text (names queues, exchanges and arguments; no message content)."""
    texts = [arg for arg in exc.args if isinstance(arg, str)]
    return texts[-1][:300] if texts else type(exc).__name__


def topology_failure(exc: Exception, endpoint: str) -> StartupError | None:
    """The one line for a topology the broker would not declare as this version does, or for a
    user without the permission to declare it; None for anything else."""
    if isinstance(exc, ChannelPreconditionFailed):
        return StartupError(
            EXIT_TOPOLOGY,
            f"the broker refused this worker's topology ({_reply_text(exc)}): a queue or "
            "exchange exists with other arguments; see docs/operations.md, 'Upgrading'",
        )
    if isinstance(exc, ChannelAccessRefused):
        return StartupError(
            EXIT_BROKER_REFUSED,
            f"the broker at {endpoint} refused access ({_reply_text(exc)}): check the user's "
            "configure, write and read permissions",
        )
    return None


def http_listen_failure(exc: OSError, host: str, port: int) -> StartupError | None:
    """The one line for an HTTP endpoint that cannot listen, or None for another OSError."""
    where = host_port(host, port)
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            EXIT_HTTP_LISTEN,
            f"cannot listen on {where}: the port is already in use "
            "(another process or worker on this host?); set SCRIBE_HTTP_PORT",
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            EXIT_HTTP_LISTEN,
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
            "set SCRIBE_HTTP_PORT",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            EXIT_HTTP_LISTEN,
            f"cannot listen on {where}: not an address of this machine; set SCRIBE_HTTP_HOST",
        )
    return None
