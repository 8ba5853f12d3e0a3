"""No transcript, summary, note text, audio URL or token in logs, metrics or error text."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from prometheus_client import generate_latest

from ops.sandbox import RunningSandbox, SandboxConfig
from tests.harness import (
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    sandbox_control,
    watching,
    worker_env,
)
from worker.logs import configure_logging

pytestmark = pytest.mark.broker

MARKERS = {
    "transcript": "Zyxtranscriptmarker",
    "url_path": "zyxurlpathmarker",
    "url_secret": "zyxurlsignaturemarker",
    "invox_token": "zyxinvoxtokenmarker",
    "intron_key": "zyxintronkeymarker",
}


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    turns = (
        f"[doctor] Good morning, what brings you in? {MARKERS['transcript']} is my note word.",
        f"[patient] My left knee hurts since {MARKERS['transcript']} last week.",
        "[doctor] Any swelling?",
        "[patient] Yes, a little.",
    )
    return SandboxConfig(
        intron_api_key=MARKERS["intron_key"],
        invox_static_token=MARKERS["invox_token"],
        polls_before_ready=1,
        transcript_turns=turns,
    )


@pytest.fixture
async def audio_server(audio_file: Path) -> AsyncIterator[str]:
    async def serve(request: web.Request) -> web.StreamResponse:
        if request.query.get("sig") != MARKERS["url_secret"]:
            return web.Response(status=403)
        return web.FileResponse(audio_file)

    app = web.Application()
    app.router.add_get(f"/{MARKERS['url_path']}/consult.wav", serve)
    runner = web.AppRunner(app, access_log=None)  # the test server is not under test
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/{MARKERS['url_path']}/consult.wav?sig={MARKERS['url_secret']}"
    await runner.cleanup()


def assert_clean(text: str, where: str) -> None:
    lowered = text.lower()
    for name, marker in MARKERS.items():
        assert marker.lower() not in lowered, f"{name} leaked into {where}"


async def test_full_jobs_leak_nothing(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_server: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_INTRON_API_KEY=MARKERS["intron_key"],
        SCRIBE_INVOX_ACCESS_TOKEN=MARKERS["invox_token"],
        SCRIBE_LOG_LEVEL="debug",
    )
    audio = {"url": audio_server, "mimeType": "audio/wav"}
    good = [
        make_job(
            storage_root,
            audio=audio,
            template=SAMPLE_TEMPLATE,
            providers={"transcriber": t, "summarizer": s, "note": "invox"},
        )
        for t, s in [("intron", "invox"), ("invox", "invox")]
    ]
    broken_url = {"url": audio_server.replace("sig=", "sig=wrong"), "mimeType": "audio/wav"}
    bad_audio = make_job(storage_root, audio=broken_url)
    failing_note = make_job(
        storage_root,
        audio=audio,
        template=SAMPLE_TEMPLATE,
        providers={"transcriber": "invox", "summarizer": "invox"},
    )
    try:
        async with running_worker(env) as app, watching(prefix) as watcher:
            outcomes = [await watcher.outcome(await watcher.submit(job)) for job in good]
            assert [o["type"] for o in outcomes] == ["job.completed", "job.completed"]
            assert MARKERS["transcript"] in outcomes[0]["transcript"]["text"]  # data did flow
            failed = [await watcher.outcome(await watcher.submit(bad_audio))]
            rule = {
                "endpoint": "invox.note",
                "kind": "http_error",
                "status": 400,
                "errorType": "invalidTemplate",
                "message": "Template is not valid",
            }
            await sandbox_control(sandbox.base_url, "faults", [rule])
            failed.append(await watcher.outcome(await watcher.submit(failing_note)))
            dead = await watcher.dead_letters(2)
            metrics_text = generate_latest(app.metrics.registry).decode()
    finally:
        structlog.reset_defaults()

    assert [f["type"] for f in failed] == ["job.failed", "job.failed"]
    logs = stream.getvalue()
    assert "stage.done" in logs  # logging was on
    assert_clean(logs, "structlog output")
    assert_clean(caplog.text, "stdlib logging")
    assert_clean(metrics_text, "metrics")
    for event in failed:
        assert_clean(event["message"], "job.failed message")
    for message in dead:
        assert_clean(repr(message.headers), "dead-letter headers")
