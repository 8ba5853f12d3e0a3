"""scribe-dlq: list, inspect, replay and purge <prefix>.dead-letters.

Settings come from SCRIBE_* variables (SCRIBE_AMQP_URL, SCRIBE_PREFIX, SCRIBE_REDIS_URL).
Exit codes: 0 ok, 1 failed (broker unreachable, publish failed, nothing found, purge declined),
2 bad usage or configuration, 130 interrupted (everything not yet replayed stays in the queue).
See ops/dlq.py for the safety rules and docs/operations.md for the runbook.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError
from redis.exceptions import RedisError

from ops import dlq
from worker import amqp_decoding
from worker.broker import Publisher
from worker.codec import canonical_uuid
from worker.constants import STAGES, Stage
from worker.errors import SettingsError
from worker.payload_crypto import PayloadCipher
from worker.settings import Settings
from worker.startup import StartupError, open_broker_connection
from worker.topology import Names

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "scribe-dlq"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # raise instead of sys.exit, so run() stays testable
        raise UsageError(f"{self.prog}: {message}")


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _error_type(text: str) -> str:
    """A catalogue errorType, or "other" (any value outside it): a typo must not match nothing
    and report 0 (purged=0 reads like success)."""
    if text in dlq.FILTER_ERROR_TYPES:
        return text
    close = difflib.get_close_matches(text, sorted(dlq.FILTER_ERROR_TYPES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an errorType of the catalogue; {hint}"
        "use 'other' for a value outside it (a vendor's 403 errorType); "
        "see schemas/json/error-types.json"
    )


_AGE = re.compile(r"(\d{1,6})([smhdw])")
_AGE_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _older_than(text: str) -> datetime:
    """An age like 7d, 12h, 30m, 2w as the moment it reaches back to from now."""
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"not an age like 7d, 12h, 30m or 2w: {text!r}")
    seconds = int(found.group(1)) * _AGE_UNIT_S[found.group(2)]
    return datetime.now(UTC) - timedelta(seconds=seconds)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    filters = _Parser(add_help=False)
    group = filters.add_argument_group("filters (repeat a filter to accept several values)")
    group.add_argument(
        "--error-type",
        action="append",
        default=[],
        metavar="TYPE",
        type=_error_type,
        help="a catalogue errorType, or 'other' for one outside it",
    )
    group.add_argument("--stage", action="append", default=[], choices=STAGES)
    group.add_argument("--job-id", action="append", default=[], metavar="UUID")
    group.add_argument(
        "--since", type=_since, metavar="ISO8601", help="last failure at or after (UTC if naive)"
    )
    group.add_argument(
        "--older-than",
        type=_older_than,
        metavar="AGE",
        help="dead-lettered longer ago than AGE (7d, 12h, 30m, 2w): retention, with purge",
    )
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    listing = commands.add_parser("list", parents=[filters], help="table of dead letters")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    counting = commands.add_parser("stats", parents=[filters], help="counts by errorType, stage")
    counting.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="headers and body of a job's dead letters")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--redact", action="store_true", help="replace patient text and locations")
    show.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    replay = commands.add_parser("replay", parents=[filters], help="publish back to a stage")
    replay.add_argument(
        "--to-stage",
        choices=STAGES,
        help="default: the dead letter's stage (the worker's x-stage, or the queue the broker "
        "dead-lettered it from)",
    )
    replay.add_argument("--limit", type=_positive_int, help="replay at most N messages")
    replay.add_argument("--rate", type=_positive_float, help="at most N messages per second")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    purge = commands.add_parser("purge", parents=[filters], help="delete matching dead letters")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def _job_ids(given: Sequence[str]) -> frozenset[str]:
    """Job ids as dead letters report them: a UUID in its canonical form."""
    return frozenset(canonical_uuid(job_id) or job_id for job_id in given)


def filters_of(args: argparse.Namespace) -> dlq.Filters:
    return dlq.Filters(
        error_types=frozenset(args.error_type),
        stages=frozenset(args.stage),
        job_ids=_job_ids(args.job_id),
        since=args.since,
        before=args.older_than,
    )


# Characters a terminal acts on (C0 but newline, DEL, C1, bidirectional overrides): a dead
# letter's routing key, headers and body are the sender's, and must not drive the terminal.
_TERMINAL_CONTROL = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """text with every terminal control character written as an escape (\\x1b, \\u202e)."""
    return _TERMINAL_CONTROL.sub(
        lambda found: found.group().encode("unicode_escape").decode("ascii"), text
    )


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def render_list(letters: list[dlq.DeadLetter], as_json: bool) -> str:
    if as_json:
        return "".join(json.dumps(letter.summary()) + "\n" for letter in letters)
    header = (
        "JOB_ID",
        "STAGE",
        "ERROR_TYPE",
        "ATTEMPTS",
        "FIRST_FAILURE",
        "LAST_FAILURE",
        "MESSAGE",
    )
    rows = [
        (
            letter.job_id or "-",
            letter.stage or "-",
            letter.error_type or "-",
            str(letter.attempts) if letter.attempts is not None else "-",
            _time(letter.first_failure_at),
            _time(letter.last_failure_at),
            _short(letter.error_message, 60) or "-",
        )
        for letter in letters
    ]
    return format_table(rows, header) + f"\n{len(letters)} dead letter(s)\n"


def render_stats(letters: list[dlq.DeadLetter], as_json: bool) -> str:
    counts = dlq.stats(letters)
    if as_json:
        return json.dumps(counts) + "\n"
    pairs = counts["byStageAndErrorType"]
    rows = [(pair["errorType"], pair["stage"], str(pair["count"])) for pair in pairs]
    by_error = [(error, str(count)) for error, count in counts["byErrorType"].items()]
    by_stage = [(stage, str(count)) for stage, count in counts["byStage"].items()]
    return (
        format_table(by_error, ("ERROR_TYPE", "COUNT"))
        + "\n\n"
        + format_table(by_stage, ("STAGE", "COUNT"))
        + "\n\n"
        + format_table(rows, ("ERROR_TYPE", "STAGE", "COUNT"))
        + f"\n\ntotal={counts['total']}\n"
    )


def show_record(letter: dlq.DeadLetter, redacted: bool) -> dict[str, Any]:
    return {
        **letter.summary(),
        "correlationId": dlq.shown_property(letter.correlation_id, redacted=redacted),
        "messageId": dlq.shown_property(letter.message_id, redacted=redacted),
        "contentType": dlq.shown_property(letter.content_type, redacted=redacted),
        "propertyProblem": letter.property_problem,
        "deliveryCount": letter.delivery_count,
        "headers": dlq.shown_headers(letter, redacted=redacted),
        "body": dlq.shown_body(letter, redacted=redacted),
    }


def render_show(letters: list[dlq.DeadLetter], redacted: bool, as_json: bool) -> str:
    records = [show_record(letter, redacted) for letter in letters]
    if as_json:
        return "".join(json.dumps(record) + "\n" for record in records)
    parts = []
    for number, record in enumerate(records, start=1):
        headers = record.pop("headers")
        body = record.pop("body")
        lines = [f"--- dead letter {number} of {len(records)} ---"]
        lines += [
            f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
            for key, value in record.items()
        ]
        lines.append("headers:")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in headers.items()]
        lines.append("body:")
        lines.append(json.dumps(body, indent=2, ensure_ascii=False))
        parts.append(printable("\n".join(lines)) + "\n")
    return "\n".join(parts)


class Progress:
    """A progress line on stderr at most once a second (carriage-return updates on a terminal)."""

    def __init__(self, stream: IO[str], interval_s: float = 1.0) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._last = time.monotonic()
        self._tty = stream.isatty()
        self._shown = False

    def __call__(self, summary: dlq.ReplaySummary, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._interval_s:
            return
        if final and not self._shown:
            return
        self._last = now
        self._shown = True
        line = (
            f"{PROG} replay: scanned {summary.scanned} (~{summary.total} queued at start) "
            f"replayed={summary.replayed} skipped={summary.skipped}"
        )
        end = "\n" if final or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + line + end)
        self._stream.flush()


class Io:
    def __init__(self, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def out(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def err(self, text: str) -> None:
        self.stderr.write(text.rstrip("\n") + "\n")
        self.stderr.flush()


async def _confirm(io: Io, count: int, queue: str) -> bool:
    io.stderr.write(f"Purge {count} dead letter(s) from {queue}? Type 'yes' to confirm: ")
    io.stderr.flush()
    answer = await asyncio.to_thread(io.stdin.readline)
    return answer.strip().lower() in {"yes", "y"}


async def _command(
    args: argparse.Namespace,
    settings: Settings,
    connection: AbstractConnection,
    io: Io,
    stop: asyncio.Event,
) -> int:
    names = Names(settings.prefix)
    cipher = PayloadCipher(settings.payload_keys)  # opens sealed bodies, seals replays
    reader = await dlq.DeadLetterReader.open(connection, names, cipher)
    try:
        return await _dispatch(args, settings, connection, names, reader, io, stop)
    finally:
        await reader.close()
        if reader.reached_redelivery_warning and dlq.drops_redelivered_dead_letters(
            dlq.broker_version(connection)
        ):
            io.err(
                f"{PROG}: warning: a dead letter has been read {dlq.DELIVERY_COUNT_WARNING} "
                "times; RabbitMQ 4.0-4.2 drop quorum-queue messages after 20 returns unless the "
                "queue has delivery-limit -1 (see docs/operations.md)"
            )


async def _dispatch(
    args: argparse.Namespace,
    settings: Settings,
    connection: AbstractConnection,
    names: Names,
    reader: dlq.DeadLetterReader,
    io: Io,
    stop: asyncio.Event,
) -> int:
    command: str = args.command
    if command in {"list", "stats"}:
        letters = await dlq.read_matching(reader, filters_of(args), stop)
        render = render_list if command == "list" else render_stats
        io.out(render(letters, args.json))
        return EXIT_INTERRUPTED if stop.is_set() else EXIT_OK
    if command == "show":
        letters = await dlq.read_matching(reader, dlq.Filters(job_ids=_job_ids([args.job_id])))
        if not letters:
            io.err(f"{PROG}: no dead letter for job {args.job_id}")
            return EXIT_FAILED
        io.out(render_show(letters, args.redact, args.json))
        return EXIT_OK
    if command == "replay":
        return await _replay(args, settings, connection, names, reader, io, stop)
    return await _purge(args, connection, reader, names, io, stop)


async def _replay(
    args: argparse.Namespace,
    settings: Settings,
    connection: AbstractConnection,
    names: Names,
    reader: dlq.DeadLetterReader,
    io: Io,
    stop: asyncio.Event,
) -> int:
    to_stage: Stage | None = next((s for s in STAGES if s == args.to_stage), None)
    options = dlq.ReplayOptions(
        filters=filters_of(args),
        to_stage=to_stage,
        limit=args.limit,
        rate=args.rate,
        dry_run=args.dry_run,
        cipher=PayloadCipher(settings.payload_keys),
    )
    ledger: dlq.ReplayLedger = dlq.NoReplayLedger()
    if settings.redis_url is not None and not args.dry_run:
        ledger = await dlq.RedisReplayLedger.connect(settings.redis_url.value, settings.prefix)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    publisher = Publisher(channel)
    progress = Progress(io.stderr)
    try:
        summary = await dlq.replay(
            reader, publisher, names, options, ledger, stop=stop, on_progress=progress
        )
    finally:
        await publisher.close()
        await ledger.close()
    progress(summary, final=True)
    for letter, stage in summary.planned:
        io.out(
            f"would replay job={letter.job_id or '-'} from={printable(letter.routing_key)} "
            f"to={stage} identity={letter.identity}\n"
        )
    io.out(summary.line() + "\n")
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


async def _purge(
    args: argparse.Namespace,
    connection: AbstractConnection,
    reader: dlq.DeadLetterReader,
    names: Names,
    io: Io,
    stop: asyncio.Event,
) -> int:
    letters = await dlq.read_matching(reader, filters_of(args), stop)
    if stop.is_set():
        io.out("purged=0 interrupted=true\n")
        return EXIT_INTERRUPTED
    if not letters:
        io.out("purged=0\n")
        return EXIT_OK
    if not args.yes and not await _confirm(io, len(letters), names.dead_letter_queue):
        io.err(f"{PROG}: purge not confirmed; nothing deleted")
        return EXIT_FAILED
    # A fresh pass acks exactly the messages counted above, never one that arrived since.
    again = await dlq.DeadLetterReader.open(connection, names)
    try:
        purged = await dlq.purge(again, {letter.identity for letter in letters})
    finally:
        await again.close()
    io.out(f"purged={purged}\n")
    return EXIT_OK


async def run(
    argv: Sequence[str] | None,
    env: Mapping[str, str],
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    io = Io(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        settings = Settings.from_env(env)
    except (UsageError, SettingsError) as exc:
        io.err(f"{PROG}: {exc}" if isinstance(exc, SettingsError) else str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    stop = stop or asyncio.Event()
    # Before connecting: a dead letter whose properties the client library cannot decode must
    # not take the connection down (worker/amqp_decoding.py).
    amqp_decoding.install()
    try:
        # The first node of SCRIBE_AMQP_URL that answers. A plain connection: if that node dies
        # mid-command, the command stops with the unacked messages still queued, and a rerun
        # connects to a live node (a replay's ledger skips what was already republished).
        connection = await open_broker_connection(
            settings.broker_urls(), wait_s=0.0, ssl_context=settings.amqp_ssl_context(), name=PROG
        )
    except StartupError as exc:
        io.err(f"{PROG}: cannot connect to RabbitMQ: {exc.message}")
        return EXIT_FAILED
    if connection is None:  # only a stop event ends the wait without a connection
        return EXIT_FAILED
    try:
        async with connection:
            return await _command(args, settings, connection, io, stop)
    except dlq.DeadLetterQueueMissing as exc:
        io.err(f"{PROG}: {exc}")
        return EXIT_USAGE
    except (AMQPError, OSError, RedisError, TimeoutError) as exc:
        io.err(f"{PROG}: failed: {type(exc).__name__}: {exc}; unacked messages stay queued")
        return EXIT_FAILED


async def _main(argv: Sequence[str] | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # First signal: finish the message in hand, put the rest back, print the summary.
        loop.add_signal_handler(signum, stop.set)
    return await run(argv, os.environ, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_main(argv))


if __name__ == "__main__":
    sys.exit(main())
