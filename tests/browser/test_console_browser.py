"""The console in a real browser (Debian's chromium, headless, through chromedriver): log in, see
the dead letter a real failing job produced, dry-run and replay it, watch the job complete on its
timeline, log out, and see that a logged-out browser gets nothing but the login page.

With SCRIBE_CONSOLE_SCREENSHOTS=<dir> the test also saves what the browser showed (the
screenshots in docs/ come from such a run)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from ops.sandbox import RunningSandbox
from tests.console_harness import USERS, RunningConsole, running_console, write_users_file
from tests.harness import make_job, running_worker, watching, worker_env, write_wav

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.broker,
    pytest.mark.postgres,
    pytest.mark.slow,
    # Skipped only outside CI: .ci/run installs both, so there a missing browser fails the run.
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
]


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def stack(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[RunningConsole, dict[str, str]]]:
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_DATABASE_URL=database_url)
    users = write_users_file(tmp_path / "users.json")
    async with running_console(env, users, database_url) as console:
        yield console, env


def _shot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("SCRIBE_CONSOLE_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / f"console-{name}.png"))


def _wait_title(driver: WebDriver, title: str) -> None:
    WebDriverWait(driver, 30).until(expected_conditions.title_contains(title))


def _wait_for_text(driver: WebDriver, url: str, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        driver.get(url)
        if text in driver.page_source:
            return
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared at {url}")


def _session(driver: WebDriver, base: str, job_id: str, make_audio: Path, source: Path) -> None:
    """The operator's session, as a person would click through it (runs in a thread)."""
    driver.get(base + "/dead-letters")
    assert driver.current_url == base + "/login"  # no session: the login page
    assert job_id not in driver.page_source
    # By keyboard alone: Tab past the skip link to the name, Tab to the password, Enter.
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB, Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "name"
    driver.switch_to.active_element.send_keys("operator", Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "password"
    driver.switch_to.active_element.send_keys(USERS["operator"][0], Keys.ENTER)
    _wait_title(driver, "Overview")
    _shot(driver, "overview")
    driver.find_element(By.LINK_TEXT, "Dead letters").click()
    _wait_title(driver, "Dead letters")
    page = driver.page_source
    assert "audioUnavailable (1)" in page
    assert job_id in page
    assert "What to do:" in page
    _shot(driver, "dead-letters")
    driver.find_element(By.XPATH, "//button[text()='Dry run a replay of these']").click()
    _wait_title(driver, "Replay: dry run")
    assert "Nothing has changed yet" in driver.page_source
    assert job_id in driver.page_source
    shutil.copyfile(source, make_audio)  # the missing recording arrives
    driver.find_element(By.XPATH, "//button[starts-with(text(), 'Replay these')]").click()
    _wait_title(driver, "Replay done")
    assert "replayed=1" in driver.page_source
    _wait_for_text(
        driver, f"{base}/jobs/{job_id}", "Outcome: <strong>completed</strong>", timeout_s=30
    )
    page = driver.page_source
    assert "failed" in page  # the first attempt's transition stays on the timeline
    _shot(driver, "job-timeline")
    driver.find_element(By.XPATH, "//button[text()='Log out']").click()
    _wait_title(driver, "Log in")
    driver.get(base + "/dead-letters")
    assert driver.current_url == base + "/login"
    assert job_id not in driver.page_source


async def test_operator_replays_a_dead_letter_in_a_real_browser(
    stack: tuple[RunningConsole, dict[str, str]],
    browser: WebDriver,
    storage_root: Path,
    prefix: str,
) -> None:
    console, env = stack
    audio = storage_root / "arrives-late.wav"
    source = write_wav(storage_root / "source.wav", seconds=2.0)
    job = make_job(audio)
    async with running_worker(env), watching(prefix) as watcher:
        await watcher.submit(job)
        failed = await watcher.outcome(str(job.job_id), timeout_s=30)
        assert failed["type"] == "job.failed"
        await asyncio.to_thread(_session, browser, console.url, str(job.job_id), audio, source)
