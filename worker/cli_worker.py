"""scribe-worker: run the stage consumers until SIGTERM or SIGINT, then stop gracefully.

Exit codes: 0 stopped by a signal, 2 a bad SCRIBE_* setting, 3 the broker did not answer within
SCRIBE_BROKER_START_TIMEOUT_S, 4 the broker refused the login, the virtual host or a
permission, 5 the HTTP endpoint cannot listen (port in use), 6 a queue or exchange exists with
other arguments than this version declares. Each failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable

import structlog
from aiormq.exceptions import AMQPError

from worker.app import RegistryFactory, WorkerApp
from worker.errors import SettingsError
from worker.failover import endpoints
from worker.logs import configure_logging
from worker.providers.factory import build_registry
from worker.settings import Settings
from worker.startup import (
    EXIT_TOPOLOGY,
    StartupError,
    broker_failure,
    http_listen_failure,
    open_broker_connection,
    topology_failure,
    unreachable,
)
from worker.topology import TopologyMismatch

log = structlog.get_logger("scribe.cli")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scribe-worker",
        description="Run the stage consumers; settings come from SCRIBE_* variables.",
    )
    parser.add_argument(
        "--stages",
        help="comma-separated stages to consume (default: all; overrides SCRIBE_STAGES)",
    )
    return parser.parse_args(argv)


async def serve(
    settings: Settings,
    registry_factory: RegistryFactory = build_registry,
    on_ready: Callable[[WorkerApp], None] | None = None,
) -> None:
    """Run a WorkerApp until SIGTERM or SIGINT, then stop it gracefully.

    Raises StartupError when the broker or the HTTP port is not usable.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Waits (one log line, not one per retry) for a broker that does not answer yet, and fails
    # at once on a refused login, before the app opens anything that would need closing.
    probe = await open_broker_connection(
        settings.broker_urls(),
        wait_s=settings.broker_start_timeout_s,
        stop=stop,
        ssl_context=settings.amqp_ssl_context(),
    )
    if probe is None:
        log.info("worker.stopped_before_start")
        return
    await probe.close()
    app = WorkerApp(settings, registry_factory)
    await _start(app)
    try:
        if on_ready is not None:
            on_ready(app)
        await stop.wait()
        log.info("worker.stopping")
    finally:
        await app.stop()


async def _start(app: WorkerApp) -> None:
    """app.start(), or StartupError for a broker or port problem; either way a failed start
    leaves nothing open (app.stop() closes what start() had opened)."""
    started = False
    try:
        await app.start()
        started = True
    except (OSError, AMQPError) as exc:
        raise _start_failure(exc, app.settings) from None
    except TopologyMismatch as exc:
        raise StartupError(EXIT_TOPOLOGY, str(exc)) from None
    finally:
        if not started:
            await app.stop()


def _start_failure(exc: OSError | AMQPError, settings: Settings) -> StartupError:
    if isinstance(exc, OSError):
        listen = http_listen_failure(exc, settings.http_host, settings.http_port)
        if listen is not None:
            return listen
    endpoint = endpoints(settings.broker_urls())
    topology = topology_failure(exc, endpoint)
    if topology is not None:
        return topology
    # The broker answered the probe, then went away while the app was starting.
    return broker_failure(exc, endpoint) or unreachable(
        endpoint, settings.broker_start_timeout_s, type(exc).__name__
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    env = dict(os.environ)
    if args.stages:
        env["SCRIBE_STAGES"] = args.stages
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"scribe-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"scribe-worker: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
