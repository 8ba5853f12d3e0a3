"""`make demo`: one consultation end to end on this machine, then everything it started stops.

It makes sure RabbitMQ answers, starts the vendor emulator (for the vendor mode) and a worker as
subprocesses under a fresh prefix, submits the sample consultation, prints the note and the time
each stage took, and finally stops the worker and the emulator and deletes its queues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from ops.procs import child, delete_prefix, sandbox_process, worker_argv
from schemas.jobs import JobRequest, Template
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.settings import Settings
from worker.topology import Names, declare_topology
from worker.tracing import new_traceparent

SAMPLES = Path(__file__).parent / "samples"
AMQP_URL = os.environ.get("SCRIBE_AMQP_URL", c.DEFAULT_AMQP_URL)
MODES = {
    "local": {"transcriber": "local", "summarizer": "local", "note": "local"},
    "vendors": {"transcriber": "intron", "summarizer": "invox", "note": "invox"},
    # The "llm" providers against the emulator's OpenAI-compatible endpoint (docs/sandbox.md).
    "llm": {"transcriber": "invox", "summarizer": "llm", "note": "llm"},
}
DEMO_INTRON_KEY = "demo-intron-key"
DEMO_INVOX_TOKEN = "demo-invox-token"  # noqa: S105 - the emulator's, not a real credential


async def ensure_broker() -> None:
    """Start the local RabbitMQ node if nothing answers (as .ci/run does)."""
    for attempt in range(60):
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=2)
        except (OSError, aio_pika.exceptions.AMQPError):
            if attempt == 0:
                print("RabbitMQ is not answering; starting it", file=sys.stderr)
                starter = await asyncio.create_subprocess_exec("rabbitmq-server", "-detached")
                await starter.wait()
            await asyncio.sleep(1)
            continue
        await connection.close()
        return
    raise SystemExit("RabbitMQ did not come up on " + AMQP_URL.split("@")[-1])


def sample_job(mode: str) -> JobRequest:
    template = Template.model_validate_json((SAMPLES / "template.json").read_bytes())
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": str(SAMPLES / "consultation.wav"), "mimeType": "audio/wav"},
            "providers": MODES[mode],
            "summary": {"outputFormat": "SUMMARY", "outputLanguage": "en"},
            "template": template.model_dump(by_alias=True),
            "noteLanguage": "en",
        }
    )


async def run_job(prefix: str, job: JobRequest, timeout_s: float) -> list[dict[str, Any]]:
    """Publish with confirms and collect the job's events until its outcome."""
    names = Names(prefix)
    settings = Settings.from_env({"SCRIBE_AMQP_URL": AMQP_URL, "SCRIBE_PREFIX": prefix})
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, names, settings.retry)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(
            await channel.get_exchange(names.events_exchange), routing_key=c.EVENTS_ALL_BINDING
        )
        events: list[dict[str, Any]] = []
        finished = asyncio.Event()

        async def on_event(message: AbstractIncomingMessage) -> None:
            async with message.process():
                if message.correlation_id == str(job.job_id):
                    event = json.loads(message.body)
                    events.append(event)
                    if event["type"] in (c.EVENT_COMPLETED, c.EVENT_FAILED):
                        finished.set()

        await queue.consume(on_event)
        publisher = await Publisher.open(connection)
        message = build_message(
            job.to_wire(),
            correlation_id=str(job.job_id),
            headers={c.HEADER_TRACEPARENT: new_traceparent()},
        )
        await publisher.publish(names.jobs_exchange, "transcribe", message)
        await asyncio.wait_for(finished.wait(), timeout_s)
        return events


def render(events: list[dict[str, Any]]) -> str:
    outcome = events[-1]
    lines = []
    if outcome["type"] == c.EVENT_FAILED:
        return (
            f"The job failed at {outcome['stage']}: {outcome['errorType']} ({outcome['message']})"
        )
    lines.append("Time per stage:")
    for event in events:
        if event["type"] == "job.stage":
            lines.append(
                f"  {event['stage']:<11} {event['durationMs']:>9.1f} ms  ({event['provider']})"
            )
    transcript = outcome["transcript"]["text"]
    lines += ["", f"Transcript ({len(transcript.split())} words):", "  " + transcript[:600] + "…"]
    summary = outcome["summary"]
    lines += ["", "Summary (each sentence with the transcript it rests on):"]
    if summary.get("text"):
        lines.append(with_evidence(summary["text"], summary.get("evidence") or []))
    for field in summary.get("fields") or []:
        lines.append(f"  {field['name']}: {with_evidence(field['value'], field.get('evidence'))}")
    lines += ["", "Clinical note:"]
    for field in outcome.get("clinicalNote") or []:
        lines.append(f"  {field['name']}: {shown_value(field)}")
    return "\n".join(lines)


def evidence_mark(evidence: dict[str, Any]) -> str:
    """[12.4-18.9 s] (with an en dash) for timed segments, [segments 3, 4] for untimed ones,
    [unsupported] for a statement nothing in the transcript carries."""
    if not evidence.get("supported"):
        return "[unsupported]"
    if evidence.get("start") is not None and evidence.get("end") is not None:
        return f"[{evidence['start']:.1f}\u2013{evidence['end']:.1f} s]"
    return "[segments " + ", ".join(str(i) for i in evidence.get("segmentIds", [])) + "]"


def with_evidence(text: str, evidence: list[dict[str, Any]] | None, item: int | None = None) -> str:
    """text with each statement's evidence mark after it."""
    marks = [
        (e["textEnd"], evidence_mark(e))
        for e in evidence or []
        if e.get("textEnd") is not None and e.get("item") == item
    ]
    for end, mark in sorted(marks, reverse=True):
        text = f"{text[:end]} {mark}{text[end:]}"
    return text


def shown_value(field: dict[str, Any]) -> str:
    value, evidence = field["value"], field.get("evidence") or []
    if value in ("", None, []):
        return "(not stated)"
    if isinstance(value, list):
        return "; ".join(with_evidence(item, evidence, i) for i, item in enumerate(value))
    if isinstance(value, str) and field.get("type") != "enum":
        return with_evidence(value, evidence)
    shown = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return " ".join([shown, *(evidence_mark(e) for e in evidence)])


async def demo(mode: str, timeout_s: float) -> int:
    await ensure_broker()
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    env = {
        "SCRIBE_AMQP_URL": AMQP_URL,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_STORAGE_ROOT": str(SAMPLES),
        "SCRIBE_HTTP_PORT": "0",
        "SCRIBE_POLL_INTERVAL_MS": "1000",
        "SCRIBE_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    tiers = Settings.from_env(env).retry.delay_tiers_ms
    try:
        async with AsyncExitStack() as stack:
            if mode in ("vendors", "llm"):
                flags = (
                    "--intron-api-key",
                    DEMO_INTRON_KEY,
                    "--invox-static-token",
                    DEMO_INVOX_TOKEN,
                )
                base_url = await stack.enter_async_context(sandbox_process(*flags))
                env |= {
                    "SCRIBE_INTRON_BASE_URL": base_url,
                    "SCRIBE_INTRON_API_KEY": DEMO_INTRON_KEY,
                    "SCRIBE_INVOX_BASE_URL": base_url,
                    "SCRIBE_INVOX_ACCESS_TOKEN": DEMO_INVOX_TOKEN,
                    "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
                    "SCRIBE_LLM_BASE_URL": base_url,
                    "SCRIBE_LLM_MODEL": "sandbox",
                }
            await stack.enter_async_context(child(worker_argv(), env, capture_stdout=False))
            events = await run_job(prefix, sample_job(mode), timeout_s)
    finally:
        await delete_prefix(AMQP_URL, prefix, tiers)
    print(render(events))
    return 0 if events[-1]["type"] == c.EVENT_COMPLETED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scribe-demo", description=__doc__)
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="local",
        help="local: offline models; vendors: Intron + Invox via the emulator; "
        "llm: Invox transcript, llm summary and note via the emulator's chat endpoint",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.mode, args.timeout_s))


if __name__ == "__main__":
    sys.exit(main())
