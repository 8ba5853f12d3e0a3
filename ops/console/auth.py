"""Who may use the console, and their sessions.

Users come from a JSON file (SCRIBE_CONSOLE_USERS_FILE) that holds scrypt hashes, never
passwords. Three permissions, each granted on its own: `view` (every page, patient text
redacted), `operator` (replay and purge) and `patientText` (a dead letter's body and headers
unredacted). Sessions live in the console's memory: an unguessable token in an HttpOnly,
SameSite=Strict cookie, expiring after an idle time and after an absolute time, each with its own
CSRF token for every state-changing form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

Permission = Literal["view", "operator", "patientText"]
PERMISSIONS: Final[tuple[Permission, ...]] = ("view", "operator", "patientText")

# scrypt with n=2**14, r=8, p=1: about 16 MiB and tens of milliseconds per check.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_HASH_BYTES: Final = 32
MAX_USERS_FILE_BYTES: Final = 1_000_000
MAX_PASSWORD_CHARS: Final = 1024
# A user name is shown on pages and written to the audit table.
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
# Failed logins per user name before it is locked out for LOCKOUT_S.
MAX_FAILED_LOGINS: Final = 5
LOCKOUT_S: Final = 300.0


class UsersFileError(Exception):
    """The users file cannot be used; the message names the problem, never a hash."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES
    )
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded[0]}${encoded[1]}"


def _check_hash(password: str, stored: str) -> bool:
    scheme, n, r, p, salt, digest = stored.split("$")
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode()[: MAX_PASSWORD_CHARS * 4],
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
    )
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _valid_hash(stored: object) -> bool:
    if not isinstance(stored, str) or stored.count("$") != 5:
        return False
    scheme, n, r, p, salt, digest = stored.split("$")
    try:
        base64.b64decode(salt, validate=True)
        base64.b64decode(digest, validate=True)
        numbers = (int(n), int(r), int(p))
    except ValueError:
        return False
    return scheme == "scrypt" and numbers == (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P)


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    permissions: frozenset[Permission]


def _user(entry: object, index: int) -> User:
    if not isinstance(entry, dict):
        raise UsersFileError(f"users[{index}] is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 64 or set(name) - _NAME_CHARS:
        raise UsersFileError(f"users[{index}].name must be 1-64 of [A-Za-z0-9._-@]")
    if not _valid_hash(entry.get("passwordHash")):
        raise UsersFileError(
            f"users[{index}].passwordHash is not a scrypt hash from `scribe-console hash-password`"
        )
    granted = entry.get("permissions")
    if not isinstance(granted, list) or not all(p in PERMISSIONS for p in granted):
        raise UsersFileError(f"users[{index}].permissions must be a list of {list(PERMISSIONS)}")
    permissions = frozenset(p for p in PERMISSIONS if p in granted)
    return User(name, str(entry["passwordHash"]), permissions)


def load_users(path: Path) -> dict[str, User]:
    """The users file: {"users": [{"name", "passwordHash", "permissions"}, ...]}."""
    try:
        raw = path.read_bytes()[: MAX_USERS_FILE_BYTES + 1]
    except OSError as exc:
        raise UsersFileError(f"cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_USERS_FILE_BYTES:
        raise UsersFileError(f"larger than {MAX_USERS_FILE_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise UsersFileError("not JSON") from None
    entries = document.get("users") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsersFileError('expected {"users": [...]} with at least one user')
    users = [_user(entry, index) for index, entry in enumerate(entries)]
    by_name = {user.name: user for user in users}
    if len(by_name) != len(users):
        raise UsersFileError("a user name appears twice")
    return by_name


@dataclass
class Session:
    user: str
    permissions: frozenset[Permission]
    csrf: str
    started_at: float
    seen_at: float

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions


@dataclass
class Sessions:
    """Sessions by token; a session ends after idle_s without a request or absolute_s after the
    login, whichever comes first, and at logout."""

    users: dict[str, User]
    idle_s: float
    absolute_s: float
    clock: Callable[[], float] = time.monotonic
    _by_token: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def login(self, name: str, password: str) -> tuple[str, Session] | None:
        """A new session for the right password; None otherwise (or while the name is locked
        out). An unknown name costs the same scrypt work as a known one."""
        now = self.clock()
        recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_S]
        self._failures[name] = recent
        user = self.users.get(name)
        stored = user.password_hash if user else _DUMMY_HASH
        correct = _check_hash(password[:MAX_PASSWORD_CHARS], stored) and user is not None
        if len(recent) >= MAX_FAILED_LOGINS or not correct or user is None:
            recent.append(now)
            return None
        self._failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.permissions, secrets.token_urlsafe(32), now, now)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen_at > self.idle_s or now - session.started_at > self.absolute_s:
            del self._by_token[token]
            return None
        session.seen_at = now
        return session

    def logout(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def sweep(self) -> None:
        """Forget expired sessions (the console calls it now and then)."""
        for token in list(self._by_token):
            self.get(token)


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


_DUMMY_HASH: Final = hash_password(secrets.token_urlsafe(16))
