"""A running scribe-console for the tests: real broker (the test's prefix), real PostgreSQL (the
test's database, migrated), a users file with three users of different permissions, served on
loopback by aiohttp on a free port."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiohttp import web

from ops.console.app import CLOSE_STEP_TIMEOUT_S, Console, build_app
from ops.console.auth import hash_password
from ops.console.settings import ConsoleSettings
from worker.jobindex import migrate

# name -> (password, permissions)
USERS = {
    "viewer": ("viewer-pass-1", ["view"]),
    "operator": ("operator-pass-1", ["view", "operator"]),
    "clinician": ("clinician-pass-1", ["view", "operator", "patientText"]),
}


def write_users_file(path: Path) -> Path:
    users = [
        {"name": name, "passwordHash": hash_password(password), "permissions": permissions}
        for name, (password, permissions) in USERS.items()
    ]
    path.write_text(json.dumps({"users": users}), encoding="utf-8")
    return path


@dataclass
class RunningConsole:
    url: str
    console: Console


@asynccontextmanager
async def running_console(
    env: dict[str, str], users_file: Path, database_url: str | None
) -> AsyncIterator[RunningConsole]:
    console_env = {
        **env,
        "SCRIBE_CONSOLE_USERS_FILE": str(users_file),
        "SCRIBE_CONSOLE_SECURE_COOKIE": "false",
        "SCRIBE_CONSOLE_SAMPLE_S": "0.5",
    }
    if database_url is not None:
        console_env["SCRIBE_DATABASE_URL"] = database_url
        connection = await asyncpg.connect(database_url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
    settings = ConsoleSettings.from_env(console_env)
    console = Console(settings)
    await console.start()
    runner = web.AppRunner(
        build_app(console), access_log=None, shutdown_timeout=CLOSE_STEP_TIMEOUT_S
    )
    await runner.setup()
    # A socket bound here, so the port is known without reaching into aiohttp's server.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield RunningConsole(f"http://127.0.0.1:{port}", console)
    finally:
        await runner.cleanup()
        await console.close()
