"""scribe-db: the job index's schema (worker/jobindex.py), for operators.

  scribe-db migrate   apply the migrations not applied yet (the worker does the same at start)
  scribe-db status    print the applied and the known versions, as JSON
  scribe-db follow    keep the index from <prefix>.events (ops/index_follow.py): a durable queue
                      holds the events while the index is down; --until-empty stops once it is
                      drained (a rebuild), else it runs until SIGINT/SIGTERM

The database comes from SCRIBE_DATABASE_URL (or SCRIBE_DATABASE_URL_FILE), or --database-url;
follow also reads SCRIBE_AMQP_URL and SCRIBE_PREFIX. Exit codes: 0 ok, 1 the database or the
broker refused or could not be reached (follow: a write still failing at the end), 2 bad usage or
configuration.
The URL is never printed (it may hold a password).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping

import asyncpg
from aio_pika.exceptions import AMQPError

from ops import index_follow
from worker.errors import SettingsError
from worker.jobindex import INDEX_CONNECT_TIMEOUT_S, INDEX_ERRORS, MIGRATIONS, migrate
from worker.payload_crypto import PayloadCipher
from worker.settings import Settings
from worker.topology import Names

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scribe-db",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("command", choices=("migrate", "status", "follow"))
    parser.add_argument("--database-url", help="instead of SCRIBE_DATABASE_URL")
    parser.add_argument(
        "--until-empty", action="store_true", help="follow: stop once the queue is drained"
    )
    return parser


async def _status(connection: asyncpg.Connection) -> dict[str, object]:
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = await connection.fetch("SELECT version FROM schema_migrations") if exists else []
    return {
        "applied": sorted(int(row["version"]) for row in rows),
        "known": [migration.version for migration in MIGRATIONS],
    }


async def run(command: str, url: str) -> dict[str, object]:
    connection = await asyncpg.connect(url, timeout=INDEX_CONNECT_TIMEOUT_S)
    try:
        if command == "migrate":
            return {"applied_now": await migrate(connection), **await _status(connection)}
        return await _status(connection)
    finally:
        await connection.close()


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environment = dict(os.environ if env is None else env)
    if args.database_url:
        environment["SCRIBE_DATABASE_URL"] = args.database_url
        environment.pop("SCRIBE_DATABASE_URL_FILE", None)
    try:
        settings = Settings.from_env(environment)
    except SettingsError as exc:
        print(f"scribe-db: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = settings.database_url
    if url is None:
        print("scribe-db: set SCRIBE_DATABASE_URL or give --database-url", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "follow":
        return _follow(settings, url.value, args.until_empty)
    try:
        result = asyncio.run(run(args.command, url.value))
    except INDEX_ERRORS as exc:
        print(f"scribe-db: the database failed: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result))
    return EXIT_OK


async def _follow_until_stopped(
    settings: Settings, url: str, until_empty: bool
) -> index_follow.FollowReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await index_follow.follow(
            settings.amqp_url.value,
            Names(settings.prefix),
            url,
            until_empty,
            stop,
            cipher=PayloadCipher(settings.payload_keys),
        )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _follow(settings: Settings, url: str, until_empty: bool) -> int:
    try:
        report = asyncio.run(_follow_until_stopped(settings, url, until_empty))
    except (*INDEX_ERRORS, AMQPError) as exc:
        print(f"scribe-db: follow failed: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    print(report.line())
    return EXIT_FAILED if until_empty and report.unwritten else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
