"""scribe-console's pure parts: password hashes, the users file, sessions (idle and absolute
expiry, lockout), the runbook agreeing with docs/operations.md, escaping in pages and charts,
and filter validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ops.console import charts, pages
from ops.console.app import BadFilter, dead_letter_filters, job_filter
from ops.console.auth import (
    LOCKOUT_S,
    MAX_FAILED_LOGINS,
    Sessions,
    User,
    UsersFileError,
    hash_password,
    load_users,
)
from ops.console.settings import ConsoleSettings
from ops.runbook import RUNBOOK, advice
from schemas.errors import ErrorType
from worker.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sessions(clock: Clock, idle_s: float = 60.0, absolute_s: float = 600.0) -> Sessions:
    user = User("ana", hash_password("right-password"), frozenset({"view"}))
    return Sessions({"ana": user}, idle_s, absolute_s, clock=clock)


def test_a_session_needs_the_right_password() -> None:
    sessions = _sessions(Clock())
    assert sessions.login("ana", "wrong") is None
    assert sessions.login("nobody", "right-password") is None
    started = sessions.login("ana", "right-password")
    assert started is not None
    token, session = started
    assert sessions.get(token) is session
    assert session.permissions == frozenset({"view"})
    assert not session.allows("operator")


def test_sessions_expire_when_idle_and_after_the_absolute_time() -> None:
    clock = Clock()
    sessions = _sessions(clock)
    started = sessions.login("ana", "right-password")
    assert started is not None
    token, _ = started
    clock.now += 59
    assert sessions.get(token) is not None
    clock.now += 61
    assert sessions.get(token) is None  # idle too long
    started = sessions.login("ana", "right-password")
    assert started is not None
    token, _ = started
    for _ in range(12):  # kept busy, but past the absolute limit
        clock.now += 55
        sessions.get(token)
    assert sessions.get(token) is None


def test_logout_ends_the_session() -> None:
    sessions = _sessions(Clock())
    started = sessions.login("ana", "right-password")
    assert started is not None
    sessions.logout(started[0])
    assert sessions.get(started[0]) is None


def test_repeated_failures_lock_the_name_out_for_a_while() -> None:
    clock = Clock()
    sessions = _sessions(clock)
    for _ in range(MAX_FAILED_LOGINS):
        assert sessions.login("ana", "guess") is None
    assert sessions.login("ana", "right-password") is None  # locked out
    clock.now += LOCKOUT_S + 1
    assert sessions.login("ana", "right-password") is not None


def _users_file(tmp_path: Path, users: object) -> Path:
    path = tmp_path / "users.json"
    path.write_text(json.dumps(users), encoding="utf-8")
    return path


def test_users_file_is_checked(tmp_path: Path) -> None:
    good = {"name": "ana", "passwordHash": hash_password("x"), "permissions": ["view"]}
    assert set(load_users(_users_file(tmp_path, {"users": [good]}))) == {"ana"}
    cases: tuple[object, ...] = (
        {"users": []},
        {"users": [{**good, "passwordHash": "plain-text-password"}]},
        {"users": [{**good, "permissions": ["root"]}]},
        {"users": [{**good, "name": "<b>"}]},
        {"users": [good, good]},
        [good],
    )
    for broken in cases:
        with pytest.raises(UsersFileError) as caught:
            load_users(_users_file(tmp_path, broken))
        assert "plain-text-password" not in str(caught.value)


def test_console_settings_refuse_anonymous_access_by_name() -> None:
    env = {"SCRIBE_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}
    with pytest.raises(SettingsError) as caught:
        ConsoleSettings.from_env(env)
    assert "SCRIBE_CONSOLE_USERS_FILE" in str(caught.value)


def test_console_settings_name_a_bad_cookie_flag(tmp_path: Path) -> None:
    users = {"users": [{"name": "a", "passwordHash": hash_password("x"), "permissions": []}]}
    env = {
        "SCRIBE_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "SCRIBE_CONSOLE_USERS_FILE": str(_users_file(tmp_path, users)),
        "SCRIBE_CONSOLE_SECURE_COOKIE": "sometimes",
    }
    with pytest.raises(SettingsError) as caught:
        ConsoleSettings.from_env(env)
    assert "SCRIBE_CONSOLE_SECURE_COOKIE" in str(caught.value)


def _runbook_rows_in_docs() -> dict[str, str]:
    """Section 2's table: from its header row to the first line that is not a row."""
    lines = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| errorType | kind |"))
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for error_type in re.findall(r"`([A-Za-z]+)`", cells[0]) or ["other"]:
            rows[error_type] = cells[3]
    return rows


def test_runbook_says_what_the_operations_page_says() -> None:
    documented = _runbook_rows_in_docs()
    in_code = {error_type: text for types, text in RUNBOOK for error_type in types}
    assert in_code == documented


def test_every_catalogued_error_type_has_advice() -> None:
    missing = [e.value for e in ErrorType if advice(e.value) is None]
    assert missing == []


def test_charts_escape_their_labels() -> None:
    svg = charts.bar_chart("<t>", {"<script>alert(1)</script>": 3})
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    line = charts.line_chart("x", {"a<b": [(0.0, 1.0), (10.0, 2.0)]}, "ms")
    assert "a&lt;b" in line
    assert "<polyline" in line
    assert "no data" in charts.line_chart("x", {}, "ms")


def test_pages_escape_what_they_show() -> None:
    viewer = pages.Viewer("<img src=x>", "tok", operator=True, patient_text=False)
    page = pages.message_page("T", "<b>hi</b>", viewer)
    assert "<img src=x>" not in page
    assert "<b>hi</b>" not in page
    assert 'name="csrf" value="tok"' in page


def test_filters_are_validated() -> None:
    with pytest.raises(BadFilter):
        job_filter({"stage": "nowhere"})
    with pytest.raises(BadFilter):
        job_filter({"since": "yesterday"})
    with pytest.raises(BadFilter):
        job_filter({"since": "2026-01-01T00:00:00"})  # no offset: ambiguous
    with pytest.raises(BadFilter):
        dead_letter_filters({"jobId": "not-a-uuid"})
    wanted = job_filter({"stage": "poll", "outcome": "failed", "errorType": "noSpeech"})
    assert (wanted.stage, wanted.outcome, wanted.error_type) == ("poll", "failed", "noSpeech")
    filters, shown = dead_letter_filters({"errorType": "noSpeech", "stage": "transcribe"})
    assert filters.error_types == frozenset({"noSpeech"})
    assert shown["stage"] == "transcribe"
