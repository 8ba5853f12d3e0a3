"""scribe-console against the real broker and PostgreSQL, over HTTP on loopback: no anonymous
access, CSRF on every state change, security headers, redaction by permission, and a dead letter
that a real failing job produced, dry-run, replayed (audited), and the job completed."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yarl

from ops.console.app import SECURITY_HEADERS
from ops.sandbox import RunningSandbox
from tests.console_harness import USERS, RunningConsole, running_console, write_users_file
from tests.harness import Watcher, make_job, running_worker, watching, worker_env, write_wav

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


@pytest.fixture
async def console_env(
    prefix: str, sandbox_url: str, storage_root: Path, database_url: str
) -> dict[str, str]:
    return worker_env(prefix, sandbox_url, storage_root, SCRIBE_DATABASE_URL=database_url)


@pytest.fixture
def sandbox_url(sandbox: RunningSandbox) -> str:
    return sandbox.base_url


@pytest.fixture
async def console(
    console_env: dict[str, str], tmp_path: Path, database_url: str
) -> AsyncIterator[RunningConsole]:
    users = write_users_file(tmp_path / "users.json")
    async with running_console(console_env, users, database_url) as running:
        yield running


def _client() -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP-address host (127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(client: aiohttp.ClientSession, base: str, name: str) -> str:
    """Logs in as name; returns the session's CSRF token (from the overview page's forms)."""
    async with client.get(f"{base}/login") as response:
        token = _hidden(await response.text(), "login_token")
    form = {"login_token": token, "name": name, "password": USERS[name][0]}
    async with client.post(f"{base}/login", data=form) as response:
        assert response.status == 200, await response.text()
        assert response.url.path == "/"
        return _hidden(await response.text(), "csrf")


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found, f"no {name} field"
    return found.group(1)


async def test_nothing_without_a_login(console: RunningConsole) -> None:
    async with _client() as client:
        for path in ("/", "/jobs", "/dead-letters", "/dead-letters/" + "0" * 64):
            async with client.get(console.url + path, allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/login"
        async with client.post(console.url + "/dead-letters/replay", data={}) as response:
            assert response.status == 403


async def test_security_headers_and_cookie_flags(console: RunningConsole) -> None:
    async with _client() as client, client.get(console.url + "/login") as response:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie


async def test_wrong_password_and_forged_login_are_refused(console: RunningConsole) -> None:
    async with _client() as client:
        async with client.get(console.url + "/login") as response:
            token = _hidden(await response.text(), "login_token")
        bad = {"login_token": token, "name": "operator", "password": "wrong"}
        async with client.post(console.url + "/login", data=bad) as response:
            assert response.status == 401
        async with client.get(console.url + "/", allow_redirects=False) as response:
            assert response.status == 303
    async with _client() as other:  # no login cookie: a cross-site login attempt
        form = {"login_token": token, "name": "operator", "password": USERS["operator"][0]}
        async with other.post(console.url + "/login", data=form) as response:
            assert response.status == 403


async def test_state_changes_need_the_csrf_token_and_same_origin(console: RunningConsole) -> None:
    async with _client() as client:
        csrf = await _login(client, console.url, "operator")
        async with client.post(console.url + "/dead-letters/replay", data={}) as response:
            assert response.status == 403
        async with client.post(
            console.url + "/dead-letters/replay", data={"csrf": csrf + "x"}
        ) as response:
            assert response.status == 403
        async with client.post(
            console.url + "/dead-letters/replay",
            data={"csrf": csrf},
            headers={"Origin": "https://evil.example"},
        ) as response:
            assert response.status == 403
        async with client.post(console.url + "/logout", data={"csrf": csrf}) as response:
            assert response.url.path == "/login"
        async with client.get(console.url + "/", allow_redirects=False) as response:
            assert response.status == 303


async def test_bad_filters_are_refused_without_echo(console: RunningConsole) -> None:
    async with _client() as client:
        await _login(client, console.url, "viewer")
        url = yarl.URL(console.url + "/jobs").with_query(stage="<script>x</script>")
        async with client.get(url) as response:
            assert response.status == 400
            assert "<script>x" not in await response.text()


async def _dead_letter_of(watcher: Watcher, job_id: str) -> None:
    outcome = await watcher.outcome(job_id, timeout_s=30)
    assert outcome["type"] == "job.failed"


async def test_a_failed_job_is_replayed_from_the_console_and_completes(
    console: RunningConsole,
    console_env: dict[str, str],
    storage_root: Path,
    prefix: str,
    database_url: str,
) -> None:
    audio = storage_root / "late.wav"
    job = make_job(audio)  # the file is not there yet: audioUnavailable
    async with running_worker(console_env), watching(prefix) as watcher:
        await watcher.submit(job)
        await _dead_letter_of(watcher, str(job.job_id))
        async with _client() as client:
            csrf = await _login(client, console.url, "viewer")
            async with client.get(console.url + "/dead-letters") as response:
                page = await response.text()
            assert "audioUnavailable (1)" in page
            assert str(job.job_id) in page
            assert "Replay and purge need the operator permission" in page
            async with client.post(
                console.url + "/dead-letters/replay", data={"csrf": csrf}
            ) as response:
                assert response.status == 403
        async with _client() as client:
            csrf = await _login(client, console.url, "operator")
            form = {"csrf": csrf, "errorType": "audioUnavailable"}
            async with client.post(console.url + "/dead-letters/replay", data=form) as response:
                plan = await response.text()
            assert "Nothing has changed yet" in plan
            assert str(job.job_id) in plan
            identity = _hidden(plan, "identity")
            # The dry run moved nothing: the letter is still listed.
            async with client.get(console.url + "/dead-letters") as response:
                assert str(job.job_id) in await response.text()
            shutil.copyfile(write_wav(storage_root / "src.wav", seconds=2.0), audio)
            confirm = {"csrf": csrf, "identity": identity, "errorType": "audioUnavailable"}
            async with client.post(
                console.url + "/dead-letters/replay/confirm", data=confirm
            ) as response:
                assert "replayed=1" in await response.text()
            await _completion(watcher, str(job.job_id))
            timeline = await _timeline(client, console.url, str(job.job_id))
            assert "completed" in timeline
            assert "failed" in timeline
    await _assert_audited(database_url, "operator", "replay", 1)


async def _completion(watcher: Watcher, job_id: str) -> None:
    """Waits for the job.completed event (the job.failed one came first)."""
    for _ in range(300):
        if any(e["type"] == "job.completed" for e in watcher.events.get(job_id, [])):
            return
        await _pause()
    raise AssertionError("the replayed job never completed")


async def _timeline(client: aiohttp.ClientSession, base: str, job_id: str) -> str:
    """The job's page, once the index has caught up with its completion (the index is written
    after the broker confirms, in the background)."""
    for _ in range(100):
        async with client.get(f"{base}/jobs/{job_id}") as response:
            page = await response.text()
        if "Outcome: <strong>completed" in page:
            return page
        await _pause()
    raise AssertionError("the job never showed as completed")


async def _pause() -> None:
    await asyncio.sleep(0.1)


async def _assert_audited(database_url: str, actor: str, action: str, done: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT actor, action, planned, done, outcome, filters FROM scribe_console_audit"
        )
    finally:
        await connection.close()
    assert [(r["actor"], r["action"], r["planned"], r["done"], r["outcome"]) for r in rows] == [
        (actor, action, 1, done, "done")
    ]
    assert "audioUnavailable" in rows[0]["filters"]


async def test_patient_text_is_shown_only_with_its_permission(
    console: RunningConsole, console_env: dict[str, str], storage_root: Path, prefix: str
) -> None:
    job = make_job(storage_root / "missing.wav", consultationSessionId="secret-session-text")
    async with running_worker(console_env), watching(prefix) as watcher:
        await watcher.submit(job)
        await _dead_letter_of(watcher, str(job.job_id))
    for name, shown in (("operator", False), ("clinician", True)):
        async with _client() as client:
            await _login(client, console.url, name)
            async with client.get(console.url + "/dead-letters") as response:
                identity = re.search(r'href="/dead-letters/([0-9a-f]{64})"', await response.text())
            assert identity
            async with client.get(f"{console.url}/dead-letters/{identity.group(1)}") as response:
                page = await response.text()
            assert ("missing.wav" in page) is shown
            assert ("[redacted]" in page) is not shown


async def test_purge_is_confirmed_and_audited(
    console: RunningConsole,
    console_env: dict[str, str],
    storage_root: Path,
    prefix: str,
    database_url: str,
) -> None:
    job = make_job(storage_root / "gone.wav")
    async with running_worker(console_env), watching(prefix) as watcher:
        await watcher.submit(job)
        await _dead_letter_of(watcher, str(job.job_id))
    async with _client() as client:
        csrf = await _login(client, console.url, "operator")
        form = {"csrf": csrf, "jobId": str(job.job_id)}
        async with client.post(console.url + "/dead-letters/purge", data=form) as response:
            plan = await response.text()
        assert f"jobId={job.job_id}" in plan
        assert "would be deleted" in plan
        identity = _hidden(plan, "identity")
        async with client.post(
            console.url + "/dead-letters/purge/confirm",
            data={"csrf": csrf, "identity": identity, "jobId": str(job.job_id)},
        ) as response:
            assert "purged=1" in await response.text()
        async with client.get(console.url + "/dead-letters") as response:
            assert str(job.job_id) not in await response.text()
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow("SELECT actor, action, done FROM scribe_console_audit")
    finally:
        await connection.close()
    assert row is not None
    assert (row["actor"], row["action"], row["done"]) == (
        "operator",
        "purge",
        1,
    )


async def test_overview_shows_the_stage_queues(
    console: RunningConsole, console_env: dict[str, str]
) -> None:
    async with running_worker(console_env), _client() as client:
        await _login(client, console.url, "viewer")
        async with client.get(console.url + "/") as response:
            page = await response.text()
    for stage in ("transcribe", "poll", "summarize", "note"):
        assert f"<td>{stage}</td>" in page
    assert "<svg" in page
    assert "Dead letters by errorType" in page


class _Controls(HTMLParser):
    """Form controls that a person operates, and the ids labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[str] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "label" and values.get("for"):
            self.labelled.add(str(values["for"]))
        if tag in {"input", "select", "textarea"} and values.get("type") != "hidden":
            self.controls.append(str(values.get("id")))


def _unlabelled(page: str) -> list[str]:
    parser = _Controls()
    parser.feed(page)
    return [control for control in parser.controls if control not in parser.labelled]


async def test_every_control_has_a_label(console: RunningConsole) -> None:
    async with _client() as client:
        async with client.get(console.url + "/login") as response:
            assert _unlabelled(await response.text()) == []
        await _login(client, console.url, "operator")
        for path in ("/", "/jobs", "/dead-letters"):
            async with client.get(console.url + path) as response:
                page = await response.text()
            assert _unlabelled(page) == [], path
            assert 'class="skip" href="#main"' in page
