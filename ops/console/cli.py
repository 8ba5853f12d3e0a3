"""scribe-console: `serve` runs the console (SCRIBE_CONSOLE_* and the worker's SCRIBE_* settings);
`hash-password` reads a password on stdin and prints the scrypt hash for the users file.

Exit codes: 0 stopped by a signal, 1 could not start (broker, database), 2 a bad setting or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from ops.console.app import CLOSE_STEP_TIMEOUT_S, Console, build_app
from ops.console.auth import hash_password
from ops.console.data import BROKER_ERRORS
from ops.console.settings import ConsoleSettings
from worker.errors import SettingsError
from worker.jobindex import INDEX_ERRORS, migrate

PROG = "scribe-console"


async def serve(settings: ConsoleSettings, stop: asyncio.Event) -> int:
    console = Console(settings)
    try:
        await console.start()
    except (*BROKER_ERRORS, *INDEX_ERRORS) as exc:
        print(f"{PROG}: cannot start ({type(exc).__name__})", file=sys.stderr)
        await console.close()
        return 1
    if console.pool is not None:
        async with console.pool.acquire() as connection:
            await migrate(connection)
    runner = web.AppRunner(
        build_app(console), access_log=None, shutdown_timeout=CLOSE_STEP_TIMEOUT_S
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    print(
        f"{PROG}: listening on http://{settings.host}:{settings.port}", file=sys.stderr, flush=True
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await console.close()
    return 0


async def _serve_until_signal(settings: ConsoleSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await serve(settings, stop)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="The operator web console.")
    parser.add_argument("command", choices=["serve", "hash-password"])
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            print(f"{PROG}: no password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        settings = ConsoleSettings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve_until_signal(settings))


if __name__ == "__main__":
    sys.exit(main())
