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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

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
from worker.failover import (
    FailoverConnection,
    broker_endpoint,
    connect_failover,
    endpoints,
    host_port,
    node_list,
)

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
    amqp_urls: str | Sequence[str],
    *,
    wait_s: float,
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
    name: str | None = None,
) -> AbstractConnection | None:
    """A plain connection to the first node of amqp_urls that answers, all of them retried
    every second while none does, for up to wait_s (0: one round). Logs one line at the first
    failed round, not one per retry.

    Raises StartupError (refused login: at once; no answer: after wait_s). Returns None if
    stop is set while it waits.
    """

    async def plain(url: str, timeout_s: float) -> AbstractConnection:
        if name is None:
            return await aio_pika.connect(url, timeout=timeout_s, ssl_context=ssl_context)
        return await aio_pika.connect(
            url,
            timeout=timeout_s,
            ssl_context=ssl_context,
            client_properties={"connection_name": name},
        )

    return await _connect_with_retry(plain, node_list(amqp_urls), wait_s, stop)


async def open_robust_connection(
    amqp_urls: str | Sequence[str], ssl_context: ssl.SSLContext | None = None
) -> AbstractRobustConnection:
    """One round over the nodes (a CLI fails fast); StartupError if none connects. The
    connection moves to another node if its own dies (worker/failover.py)."""

    urls = node_list(amqp_urls)

    async def robust(url: str, timeout_s: float) -> FailoverConnection:
        return await connect_failover(
            urls, first=urls.index(url), timeout_s=timeout_s, ssl_context=ssl_context
        )

    connection = await _connect_with_retry(robust, urls, 0.0, None)
    if connection is None:  # only a stop event ends the wait without a connection
        raise unreachable(endpoints(amqp_urls), 0.0, "stopped")
    return connection


async def _first_answering(
    connect: Callable[[str, float], Awaitable[ConnectionT]],
    amqp_urls: Sequence[str],
    timeout_s: float,
) -> ConnectionT | str:
    """A connection to the first node that answers, or the reason the last one did not;
    StartupError for a node that answered and refused (every node has the same users)."""
    reason = "no node"
    for url in amqp_urls:
        try:
            return await connect(url, timeout_s)
        except (OSError, AMQPError) as exc:
            failure = broker_failure(exc, broker_endpoint(url))
            if failure is not None:
                raise failure from None
            reason = _reason(exc)
    return reason


async def _connect_with_retry(
    connect: Callable[[str, float], Awaitable[ConnectionT]],
    amqp_urls: Sequence[str],
    wait_s: float,
    stop: asyncio.Event | None,
) -> ConnectionT | None:
    where = endpoints(amqp_urls)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    warned = False
    with _quiet_connect_attempts():
        while True:
            timeout_s = max(0.5, min(ATTEMPT_TIMEOUT_S, deadline - loop.time()))
            result = await _first_answering(connect, amqp_urls, timeout_s)
            if not isinstance(result, str):
                return result
            if loop.time() >= deadline:
                raise unreachable(where, wait_s, result)
            if not warned:
                log.warning("broker.unreachable", broker=where, reason=result, wait_s=wait_s)
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
