"""scribe-submit: publish one job with publisher confirms and, with --wait, print its outcome.

Exit codes: 0 completed (or published without --wait), 1 dead-lettered, 2 timeout or bad usage,
3 the broker did not answer, 4 the broker refused the login, 5 --wait but no worker consumes the
prefix's transcribe queue (nothing published), 6 the prefix's topology is another version's,
141 stdout was closed before the outcome was written (`| head -c0`). Every failure is one line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, get_args

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import AMQPError
from pydantic import ValidationError

from schemas.base import describe_validation_error
from schemas.errors import ErrorType
from schemas.jobs import (
    AudioRef,
    DocumentRef,
    FhirDocumentType,
    FhirOptions,
    IntronOptions,
    JobRequest,
    Providers,
    SummaryOptions,
    Template,
)
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.errors import SettingsError
from worker.failover import endpoints
from worker.payload_crypto import STAGE_PURPOSE, PayloadCipher, PayloadUndecryptable
from worker.settings import Settings
from worker.startup import (
    EXIT_TOPOLOGY,
    StartupError,
    open_robust_connection,
    topology_failure,
)
from worker.topology import Names, TopologyMismatch, declare_topology
from worker.tracing import new_traceparent

EXIT_COMPLETED, EXIT_DEAD_LETTERED, EXIT_USAGE = 0, 1, 2
EXIT_NO_CONSUMER = 5  # 3 and 4 (the broker) are worker/startup.py's
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `| head` gives any other command

# (flag, choices, what it picks, the job's default when the flag is left out: the schema's own)
_DEFAULT_PROVIDERS = Providers()
PROVIDER_OPTIONS = (
    (
        "--transcriber",
        ["intron", "invox", "local"],
        "transcription provider",
        _DEFAULT_PROVIDERS.transcriber,
    ),
    (
        "--summarizer",
        ["invox", "intron", "local", "llm"],
        "summary provider",
        _DEFAULT_PROVIDERS.summarizer,
    ),
    (
        "--note-provider",
        ["invox", "local", "llm"],
        "note provider, used with --template",
        _DEFAULT_PROVIDERS.note,
    ),
)


# The job's optional FHIR references (README "FHIR R4 output"): flag, field, example.
FHIR_OPTIONS = (
    ("--fhir-patient", "patient", "Patient/123"),
    ("--fhir-encounter", "encounter", "Encounter/456"),
    ("--fhir-practitioner", "practitioner", "Practitioner/789"),
)


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scribe-submit", description=__doc__)
    audio = p.add_mutually_exclusive_group(required=True)
    audio.add_argument("--audio-url", help="https URL the worker downloads the audio from")
    audio.add_argument("--audio-file", help="audio path on storage the worker can read")
    p.add_argument("--mime-type", help="audio MIME type (default: guessed from the name)")
    # Provider defaults are None here so that --offline can tell a flag given from one left out;
    # the help names the job's own defaults (schemas.jobs.Providers).
    for flag, choices, what, default in PROVIDER_OPTIONS:
        p.add_argument(
            flag, choices=choices, help=f"{what} (default: {default}; local with --offline)"
        )
    p.add_argument(
        "--offline",
        action="store_true",
        help="run every stage on the worker's machine: --transcriber local --summarizer local "
        "--note-provider local, no vendor called",
    )
    p.add_argument(
        "--template", help="Invox IAPITemplate JSON file; without it the job ends after the summary"
    )
    p.add_argument(
        "--output-format",
        choices=["SUMMARY", "SOAP_TEMPLATE"],
        default="SUMMARY",
        help="summary format (default: %(default)s)",
    )
    p.add_argument(
        "--output-language", default="en", help="summary language (default: %(default)s)"
    )
    p.add_argument(
        "--note-language",
        choices=["es", "en", "ca", "pt-BR", "pt-PT"],
        help="note language (default: none sent; the note provider decides)",
    )
    p.add_argument("--document", action="append", default=[], help="PDF or TXT (repeatable)")
    p.add_argument(
        "--intron-post-processing",
        action="append",
        default=[],
        help="extra Intron output such as get_entity_list (repeatable; default: none, and the "
        "one --intron-summary-source names is asked for by the worker with --summarizer intron)",
    )
    p.add_argument(
        "--intron-summary-source",
        choices=["get_summary", "get_soap_note", "get_clerking"],
        default="get_summary",
        help="Intron output that becomes the summary with --summarizer intron "
        "(default: %(default)s)",
    )
    for flag, field, example in FHIR_OPTIONS:
        p.add_argument(flag, help=f"the note's FHIR {field} reference, such as {example}")
    p.add_argument(
        "--fhir-document-type",
        choices=get_args(FhirDocumentType),
        help="LOINC type of the note's FHIR document (default: 11506-3, progress note)",
    )
    p.add_argument("--job-id", help="UUID (default: a new one)")
    p.add_argument("--consultation-session-id", help="Invox session id (default: the jobId)")
    p.add_argument("--wait", action="store_true", help="wait for job.completed or job.failed")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=300.0,
        help="how long --wait waits (default: %(default)s)",
    )
    return p


def _providers(args: argparse.Namespace) -> Providers:
    """The job's providers: the flags given, else local for all with --offline, else the
    schema's defaults. --offline with a vendor named is a contradiction, not a choice."""
    given = {
        field: value
        for field, value in (
            ("transcriber", args.transcriber),
            ("summarizer", args.summarizer),
            ("note", args.note_provider),
        )
        if value is not None
    }
    if args.offline:
        vendors = sorted(f"{field} {value}" for field, value in given.items() if value != "local")
        if vendors:
            raise UsageError(f"--offline runs every stage locally, but {', '.join(vendors)} given")
        return Providers(transcriber="local", summarizer="local", note="local")
    return Providers.model_validate(given)


def _fhir(args: argparse.Namespace) -> FhirOptions | None:
    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field, _ in FHIR_OPTIONS}
    given["document_type"] = args.fhir_document_type
    given = {field: value for field, value in given.items() if value is not None}
    if not given:
        return None
    try:
        return FhirOptions.model_validate(given)
    except ValidationError as exc:
        raise UsageError(f"invalid job: fhir.{describe_validation_error(exc)}") from exc


def _document(path_text: str) -> DocumentRef:
    path = Path(path_text).resolve()
    kinds = {".pdf": "PDF", ".txt": "TXT"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"--document {path.name}: only .pdf and .txt files are accepted")
    if not path.is_file():
        raise UsageError(f"--document {path.name}: no such file")
    return DocumentRef(path=str(path), document_type=kind, document_name=path.name)


def _template(path_text: str) -> Template:
    shown = f"--template {Path(path_text).name[:60]}"
    try:
        return Template.model_validate_json(Path(path_text).read_bytes())
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read the file ({exc.strerror})") from exc
    except ValidationError as exc:
        raise UsageError(f"{shown}: {_template_problems(exc)}") from exc


def _template_problems(exc: ValidationError, limit: int = 3) -> str:
    """Each problem as field path and pydantic's message, which never repeats the value: the
    template is the user's own file, but its options may still be clinical text."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        if error["type"] == "json_invalid":
            return f"not JSON ({error['ctx']['error']})"
        path = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        problem = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{path[:80] or '(the whole file)'}: {problem}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def build_job(args: argparse.Namespace) -> JobRequest:
    try:
        job_id = uuid.UUID(args.job_id) if args.job_id else uuid.uuid4()
    except ValueError as exc:
        raise UsageError("--job-id must be a UUID") from exc
    if args.audio_file:
        audio_path = Path(args.audio_file).resolve()
        if not audio_path.is_file():
            raise UsageError("--audio-file: no such file")
        audio = AudioRef(path=str(audio_path), mime_type=args.mime_type)
    else:
        audio = AudioRef(url=args.audio_url, mime_type=args.mime_type)
    try:
        job = JobRequest(
            job_id=job_id,
            consultation_session_id=args.consultation_session_id,
            audio=audio,
            providers=_providers(args),
            summary=SummaryOptions(
                output_format=args.output_format, output_language=args.output_language
            ),
            template=_template(args.template) if args.template else None,
            note_language=args.note_language,
            fhir=_fhir(args),
            documents=tuple(_document(d) for d in args.document),
            intron=IntronOptions(
                post_processing=tuple(args.intron_post_processing),
                summary_source=args.intron_summary_source,
            ),
        )
    except ValidationError as exc:
        raise UsageError(f"invalid job: {describe_validation_error(exc)}") from exc
    # Refused here as every worker would refuse it at its door, before anything is published.
    conflict = job.provider_conflict()
    if conflict is not None:
        raise UsageError(f"{ErrorType.INCOMPATIBLE_PROVIDERS}: {conflict}")
    return job


async def submit(settings: Settings, job: JobRequest, wait: bool, timeout_s: float) -> int:
    names = Names(settings.prefix)
    connection = await open_robust_connection(settings.broker_urls(), settings.amqp_ssl_context())
    async with connection:
        channel = await connection.channel()
        await _declare(channel, names, settings)
        if wait and not await _has_consumers(channel, names.stage_queue("transcribe")):
            print(
                f"scribe-submit: no worker consumes {names.stage_queue('transcribe')}; nothing "
                f"was published (start scribe-worker with SCRIBE_PREFIX={settings.prefix}, or "
                "check SCRIBE_PREFIX and SCRIBE_AMQP_URL)",
                file=sys.stderr,
            )
            return EXIT_NO_CONSUMER
        outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        job_id = str(job.job_id)
        cipher = PayloadCipher(settings.payload_keys)
        if wait:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            events = await channel.get_exchange(names.events_exchange)
            for key in (c.EVENT_COMPLETED, c.EVENT_FAILED):
                await queue.bind(events, routing_key=key)

            async def on_event(message: AbstractIncomingMessage) -> None:
                async with message.process():
                    if message.correlation_id == job_id and not outcome.done():
                        outcome.set_result(_event_body(cipher, message))

            await queue.consume(on_event)
        publisher = await Publisher.open(connection)
        # Sealed under SCRIBE_PAYLOAD_KEY_ID when it is set (worker/payload_crypto.py).
        body, seal = cipher.seal(job.to_wire(), purpose=STAGE_PURPOSE, binding=job_id)
        await publisher.publish(
            names.jobs_exchange,
            "transcribe",
            build_message(
                body,
                correlation_id=job_id,
                headers={c.HEADER_TRACEPARENT: new_traceparent(), **seal},
            ),
        )
        if not wait:
            return _print_outcome({"jobId": job_id, "published": True}, EXIT_COMPLETED)
        try:
            event = await asyncio.wait_for(outcome, timeout_s)
        except TimeoutError:
            timed_out = {"jobId": job_id, "outcome": "timeout", "timeoutS": timeout_s}
            return _print_outcome(timed_out, EXIT_USAGE)
        completed = event.get("type") == c.EVENT_COMPLETED
        return _print_outcome(event, EXIT_COMPLETED if completed else EXIT_DEAD_LETTERED)


def _event_body(cipher: PayloadCipher, message: AbstractIncomingMessage) -> dict[str, Any]:
    """An event as JSON, opened first when SCRIBE_ENCRYPT_EVENTS sealed it; one this process
    holds no key for is reported as such."""
    try:
        body = cipher.open(
            message.body,
            message.headers,
            purpose=message.routing_key or "",
            binding=message.correlation_id,
        )
    except PayloadUndecryptable as exc:
        return {"jobId": message.correlation_id, "outcome": "undecryptable", "problem": exc.message}
    decoded: dict[str, Any] = json.loads(body)
    return decoded


async def _declare(channel: AbstractChannel, names: Names, settings: Settings) -> None:
    """The topology, or StartupError when the broker holds another version's (exit 6)."""
    try:
        await declare_topology(channel, names, settings.retry)
    except TopologyMismatch as exc:
        raise StartupError(EXIT_TOPOLOGY, str(exc)) from None
    except AMQPError as exc:
        failure = topology_failure(exc, endpoints(settings.broker_urls()))
        if failure is None:
            raise
        raise failure from None


async def _has_consumers(channel: AbstractChannel, queue_name: str) -> bool:
    """Whether a worker consumes the queue (a passive declare reports its consumer count)."""
    queue = await channel.declare_queue(queue_name, passive=True)
    return bool(queue.declaration_result.consumer_count)


def _print_outcome(outcome: dict[str, Any], exit_code: int) -> int:
    """Prints the one JSON line; a reader that went away (`| head -c0`) is exit 141, quietly,
    as it is for any other command (the job itself was published and goes on)."""
    try:
        print(json.dumps(outcome), flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        job = build_job(args)
    except (SettingsError, UsageError) as exc:
        print(f"scribe-submit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(submit(settings, job, args.wait, args.timeout_s))
    except StartupError as exc:
        print(f"scribe-submit: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
