"""scribe-db: the job index's schema (worker/jobindex.py), for operators.

  scribe-db migrate   apply the migrations not applied yet (the worker does the same at start)
  scribe-db status    print the applied and the known versions, as JSON

The database comes from SCRIBE_DATABASE_URL (or SCRIBE_DATABASE_URL_FILE), or --database-url.
Exit codes: 0 ok, 1 the database refused or could not be reached, 2 bad usage or configuration.
The URL is never printed (it may hold a password).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping

import asyncpg

from worker.errors import SettingsError
from worker.jobindex import INDEX_CONNECT_TIMEOUT_S, INDEX_ERRORS, MIGRATIONS, migrate
from worker.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scribe-db",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("command", choices=("migrate", "status"))
    parser.add_argument("--database-url", help="instead of SCRIBE_DATABASE_URL")
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
        url = Settings.from_env(environment).database_url
    except SettingsError as exc:
        print(f"scribe-db: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if url is None:
        print("scribe-db: set SCRIBE_DATABASE_URL or give --database-url", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(run(args.command, url.value))
    except INDEX_ERRORS as exc:
        print(f"scribe-db: the database failed: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
