"""scribe-worker: run the stage consumers until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable

import structlog

from worker.app import RegistryFactory, WorkerApp
from worker.errors import SettingsError
from worker.logs import configure_logging
from worker.providers.factory import build_registry
from worker.settings import Settings

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
    """Run a WorkerApp until SIGTERM or SIGINT, then stop it gracefully."""
    app = WorkerApp(settings, registry_factory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    try:
        if on_ready is not None:
            on_ready(app)
        await stop.wait()
        log.info("worker.stopping")
    finally:
        await app.stop()


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
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
