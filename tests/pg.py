"""The real PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres): a database of its own per
test, dropped afterwards (tests/conftest.py's database_url fixture)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url_of(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A new, empty database; its URL; dropped (with any connection left to it) afterwards."""
    name = f"scribe_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url_of(name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
