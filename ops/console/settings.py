"""scribe-console's settings: its own SCRIBE_CONSOLE_* variables beside the worker's (the broker,
prefix, Redis and job index it reads), typed and frozen, each failure naming its variable."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ops.console.auth import User, UsersFileError, load_users
from worker.errors import SettingsError
from worker.settings import EnvReader, Settings

DEFAULT_CONSOLE_PORT = 8090


@dataclass(frozen=True)
class ConsoleSettings:
    worker: Settings
    host: str
    port: int
    users: dict[str, User]
    session_idle_s: float
    session_max_s: float
    # Secure cookies need https; off only where the console is reached over loopback http.
    secure_cookie: bool
    sample_every_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsoleSettings:
        reader = EnvReader(env)
        users_file = reader.raw("SCRIBE_CONSOLE_USERS_FILE")
        if users_file is None:
            raise SettingsError(
                "SCRIBE_CONSOLE_USERS_FILE",
                "required: the console has no anonymous access "
                "(see `scribe-console hash-password`)",
            )
        try:
            users = load_users(Path(users_file))
        except UsersFileError as exc:
            raise SettingsError("SCRIBE_CONSOLE_USERS_FILE", str(exc)) from None
        secure = (reader.raw("SCRIBE_CONSOLE_SECURE_COOKIE") or "true").lower()
        if secure not in {"true", "false"}:
            raise SettingsError("SCRIBE_CONSOLE_SECURE_COOKIE", "expected true or false")
        host = reader.parse(
            "SCRIBE_CONSOLE_HOST",
            "127.0.0.1",
            lambda text: str(ipaddress.ip_address(text)),
            "expected an IP address to listen on",
        )
        return cls(
            worker=Settings.from_env(env),
            host=host,
            port=reader.integer("SCRIBE_CONSOLE_PORT", DEFAULT_CONSOLE_PORT, 0, 65535),
            users=users,
            session_idle_s=reader.number("SCRIBE_CONSOLE_SESSION_IDLE_S", 900.0, 1.0),
            session_max_s=reader.number("SCRIBE_CONSOLE_SESSION_MAX_S", 28_800.0, 1.0),
            secure_cookie=secure == "true",
            sample_every_s=reader.number("SCRIBE_CONSOLE_SAMPLE_S", 15.0, 0.1),
        )
