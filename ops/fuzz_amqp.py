"""scribe-fuzz: hostile AMQP properties and headers on otherwise valid jobs, against a real worker.

Issue 12 found that one content-header frame the client library could not decode took the whole
worker offline. This program keeps that class of input under test: hypothesis generates basic
properties (content_type, correlation_id, message_id as random bytes; timestamps at the edges;
delivery modes) and header tables (every AMQP field type, sizes, invalid UTF-8, integer
extremes as numbers and as strings, nesting past the decoder's depth, the worker's own header
names with hostile values), tests/rawamqp.py writes them on the wire byte by byte, and a worker
process consumes them from the vendor emulator's side of the loopback. A valid job goes out
between every few fuzzed ones.

Then every message is accounted for: a fuzzed job ends as exactly one outcome (job.completed, or
job.failed and one dead letter with the same errorType), a message without a readable jobId as
exactly one dead letter, every valid job completes, the worker never reconnected and is still
alive and ready. What the broker itself refuses (it closes the publisher's channel or connection
on a NaN float, an unknown field type, a CC header that is not an array) never reaches the
worker; it is counted apart and must produce nothing.

A development tool: it needs hypothesis (the dev extra) and a source checkout (tests/rawamqp.py).
Bounded in messages and time, loopback only, and it deletes its queues. Exit status: 0 when every
invariant held, 1 when one failed, 2 when it could not run (no broker, no ready worker). The
last line is
`fuzzed=N outcomes=O refused=R valid_completed=C/V reconnects=K violations=X`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiohttp
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ops.chaos import write_audio
from ops.procs import delete_prefix, stop, worker_argv
from ops.sandbox import SandboxConfig, running_sandbox
from schemas.errors import ErrorType
from schemas.jobs import JobRequest
from tests.rawamqp import RawProperties, RawPublisher, long_str, short_str, table
from worker import amqp_decoding
from worker import constants as c
from worker.constants import STAGES
from worker.topology import Names, parse_dead_letter_routing_key

DELAY_TIERS_MS = "50,150,400,1000"
INTRON_KEY = "fuzz-intron-key"
INVOX_TOKEN = "fuzz-invox-token"  # noqa: S105 - the emulator's, not a real credential
# A content-header frame must fit in one frame (frame_max 131072 on RabbitMQ): tables larger
# than this lose their last entries before they are published.
MAX_HEADER_BYTES = 100_000
SETTLE_S = 2.0  # after the last expected outcome: late duplicates and dead letters arrive now
READY_TIMEOUT_S = 30.0
# Percent of generated scalars the broker itself refuses (NaN, unknown types, truncation).
BROKER_REFUSED_PERCENT = 1

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
INTEGER_EXTREMES = (
    0,
    1,
    -1,
    127,
    128,
    255,
    256,
    32767,
    32768,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    1_000_000,
    1_000_001,
    -(2**31),
    LONG_MAX,
    2**63,
    LONG_MIN,
    2**64 - 1,
)
# Seconds, around 2^32 (where pamqp switches to milliseconds) and datetime's year 9999.
TIMESTAMP_EXTREMES = (
    0,
    1,
    2**31 - 1,
    2**32 - 1,
    2**32,
    2**32 + 1,
    253_402_300_799,
    253_402_300_800,
    253_402_300_799_999,
    253_402_300_800_000,
    LONG_MAX,
    2**63,
    2**64 - 1,
)
INTEGER_TYPES: dict[bytes, tuple[str, int, int]] = {
    b"b": (">b", -128, 127),
    b"B": (">B", 0, 255),
    b"s": (">h", -(2**15), 2**15 - 1),
    b"u": (">H", 0, 2**16 - 1),
    b"I": (">i", -(2**31), 2**31 - 1),
    b"i": (">I", 0, 2**32 - 1),
    b"l": (">q", LONG_MIN, LONG_MAX),
    b"L": (">Q", 0, 2**64 - 1),
}
ALL_FIELD_TYPES = "tbBsuIilLfdDSATFVx"
SIZES = (0, 1, 255, 256, 4096, 65_535, 65_536)
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"ok\xff",
    b"\x80",
)
NUMBER_STRINGS = (
    b"0",
    b"-1",
    b"1",
    b"2147483648",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e400",
    b"NaN",
    b"inf",
    b" 7 ",
    b"7\x00",
    b"0x10",
    b"+5",
    b"1_000",
    "\uff10".encode(),
    "\u0661".encode(),
    b"9" * 20,
    b"9" * 21,
    b"9" * 4301,
    b"",
)
COUNTER_HEADERS = (
    c.HEADER_ATTEMPTS,
    c.HEADER_POLLS,
    c.HEADER_REPLAYS,
    c.HEADER_DELAY_TIER_MS,
    c.HEADER_HTTP_STATUS,
    "x-delivery-count",
)
ROUTE_HEADERS = ("CC", "BCC")
TEXT_HEADERS = (
    c.HEADER_FIRST_FAILURE_AT,
    c.HEADER_LAST_FAILURE_AT,
    c.HEADER_ERROR_TYPE,
    c.HEADER_ERROR_MESSAGE,
    c.HEADER_STAGE,
    c.HEADER_JOB_ID,
    c.HEADER_REPLAY_OF,
    "x-first-death-queue",
    "x-first-death-reason",
    "x-death",
)
NAMED_HEADERS = (*COUNTER_HEADERS, *ROUTE_HEADERS, *TEXT_HEADERS, c.HEADER_TRACEPARENT)
# The other stages' routing keys: a CC to one of them is a second message the publisher asked
# for (the job in another stage's queue), not a hostile header, so routes never name them.
OTHER_STAGES = frozenset(stage.encode() for stage in STAGES if stage != "transcribe")
# "other-job": the jobId of the valid job published just before (a body without a jobId that
# names another job; a job whose correlation_id disagrees with its body).
CORRELATION_KINDS = ("own", "own-upper", "own-braced", "own-urn", "decoy", "none", "other-job")
T = TypeVar("T")
_STRICT_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


# ---------------------------------------------------------------------------------------------
# What is generated: AMQP field values as a small tree, encoded on the wire by hand.


@dataclass(frozen=True)
class Scalar:
    """One field value: its type byte and its encoded payload (any bytes, even invalid ones)."""

    kind: bytes
    payload: bytes


@dataclass(frozen=True)
class Table:
    entries: tuple[tuple[bytes, Node], ...]


@dataclass(frozen=True)
class Array:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Deep:
    """A table ('F') or array ('A') nested depth times around an empty table, built without
    recursion (depths of thousands are part of the input)."""

    kind: bytes
    depth: int


Node = Scalar | Table | Array | Deep


def encode_value(node: Node) -> bytes:
    if isinstance(node, Scalar):
        return node.kind + node.payload
    if isinstance(node, Table):
        return b"F" + encode_table(node.entries)
    if isinstance(node, Array):
        return b"A" + long_str(b"".join(encode_value(item) for item in node.items))
    return _encode_deep(node)


def _encode_deep(node: Deep) -> bytes:
    inner = b"F" + long_str(b"")
    key = short_str(b"n") if node.kind == b"F" else b""
    prefixes: list[bytes] = []
    size = len(inner)
    for _ in range(node.depth):
        payload_size = len(key) + size
        prefixes.append(node.kind + struct.pack(">I", payload_size) + key)
        size = 1 + 4 + payload_size
    return b"".join(reversed(prefixes)) + inner


def encode_table(entries: Iterable[tuple[bytes, Node]]) -> bytes:
    return table([(key, encode_value(value)) for key, value in entries])


def field_types(node: Node) -> Counter[str]:
    """How often each field-type letter occurs in node (Deep counts its own letter once)."""
    kinds: Counter[str] = Counter()
    if isinstance(node, Scalar):
        kinds[node.kind.decode("latin-1")] += 1
    elif isinstance(node, Table):
        kinds["F"] += 1
        for _key, value in node.entries:
            kinds.update(field_types(value))
    elif isinstance(node, Array):
        kinds["A"] += 1
        for item in node.items:
            kinds.update(field_types(item))
    else:
        kinds[node.kind.decode()] += 1
    return kinds


@dataclass(frozen=True)
class Case:
    """One fuzzed message: a valid job (or, if anonymous, a body without a readable jobId) with
    generated properties. correlation is one of CORRELATION_KINDS or raw bytes."""

    anonymous: bool
    content_type: bytes | None
    correlation: str | bytes
    message_id: bytes | None
    timestamp: int | None
    delivery_mode: int | None
    headers: tuple[tuple[bytes, Node], ...] | None

    def short_strings(self) -> list[bytes]:
        raw = [self.content_type, self.message_id]
        if isinstance(self.correlation, bytes):
            raw.append(self.correlation)
        return [value for value in raw if value is not None]

    def has_non_utf8_property(self) -> bool:
        return any(not _is_utf8(value) for value in self.short_strings())


REFUSED_KINDS = frozenset({b"Z", b"\x00", b"U"})


def _unparsable(node: Node) -> bool:
    """A value RabbitMQ cannot parse: NaN or an infinity, an unknown type, a truncated string."""
    if isinstance(node, Scalar):
        if node.kind in REFUSED_KINDS:
            return True
        if node.kind == b"f":
            number = float(struct.unpack(">f", node.payload)[0])
        elif node.kind == b"d":
            number = float(struct.unpack(">d", node.payload)[0])
        elif node.kind == b"S":
            return int(struct.unpack_from(">I", node.payload)[0]) != len(node.payload) - 4
        else:
            return False
        return not math.isfinite(number)
    if isinstance(node, Table):
        return any(_unparsable(value) for _key, value in node.entries)
    if isinstance(node, Array):
        return any(_unparsable(item) for item in node.items)
    return False


def broker_refusal(case: Case) -> str | None:
    """Why RabbitMQ 3.x refuses to route this message, as far as this program knows, or None.

    Found by this fuzzer: a delivery_mode other than 1 or 2 (PRECONDITION_FAILED, the channel
    closes), a CC or BCC header that is not an array (PRECONDITION_FAILED), and a header value
    the broker cannot parse (INTERNAL_ERROR, the connection closes).
    """
    if case.delivery_mode not in (None, 1, 2):
        return "delivery_mode not 1 or 2"
    headers = case.headers or ()
    if any(_unparsable(value) for _key, value in headers):
        return "a header value the broker cannot parse"
    for key, value in headers:
        is_array = isinstance(value, Array) or (isinstance(value, Deep) and value.kind == b"A")
        if key in (b"CC", b"BCC") and not is_array:
            return "CC or BCC not an array"
    return None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Strategies.


def weighted(*options: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, each chosen in proportion to its weight (st.one_of is uniform)."""
    total = sum(weight for weight, _ in options)

    def pick(number: int) -> st.SearchStrategy[T]:
        for weight, strategy in options:
            if number < weight:
                return strategy
            number -= weight
        raise AssertionError("unreachable: number < total")

    return st.integers(0, total - 1).flatmap(pick)


def _integer(kind: bytes) -> st.SearchStrategy[Scalar]:
    fmt, low, high = INTEGER_TYPES[kind]
    extremes = [value for value in INTEGER_EXTREMES if low <= value <= high]
    numbers = st.one_of(st.sampled_from(extremes), st.integers(low, high))
    return numbers.map(lambda value: Scalar(kind, struct.pack(fmt, value)))


def _sized(pattern: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from(SIZES).map(lambda size: (pattern * size)[:size])


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def long_strings() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.text(max_size=40).map(_utf8),
        st.binary(max_size=64),
        _sized(b"a"),
        _sized("\u00e9".encode()),
        st.sampled_from(INVALID_UTF8),
        st.sampled_from(NUMBER_STRINGS),
    )


def _timestamps() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(TIMESTAMP_EXTREMES), st.integers(0, 2**64 - 1))


def _accepted_scalars(letter: bytes | None = None) -> st.SearchStrategy[Scalar]:
    """Scalars of every type RabbitMQ routes (all of ALL_FIELD_TYPES but the containers), or of
    one type."""
    floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
    floats64 = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([2.0**63, 1e308, -0.0])
    )
    decimals = st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1))
    by_type: dict[bytes, st.SearchStrategy[Scalar]] = {
        b"t": st.integers(0, 255).map(lambda value: Scalar(b"t", bytes([value]))),
        **{kind: _integer(kind) for kind in INTEGER_TYPES},
        b"f": floats32.map(lambda value: Scalar(b"f", struct.pack(">f", value))),
        b"d": floats64.map(lambda value: Scalar(b"d", struct.pack(">d", value))),
        b"D": decimals.map(lambda pair: Scalar(b"D", struct.pack(">BI", *pair))),
        b"S": long_strings().map(lambda raw: Scalar(b"S", long_str(raw))),
        b"T": _timestamps().map(lambda value: Scalar(b"T", struct.pack(">Q", value))),
        b"V": st.just(Scalar(b"V", b"")),
        b"x": st.one_of(st.binary(max_size=64), _sized(b"\x00")).map(
            lambda raw: Scalar(b"x", long_str(raw))
        ),
    }
    if letter is not None:
        return by_type[letter]
    return st.sampled_from(sorted(by_type)).flatmap(lambda kind: by_type[kind])


def _refused_scalars() -> st.SearchStrategy[Scalar]:
    """Values RabbitMQ refuses to route (it closes the publisher's connection)."""
    return st.one_of(
        st.sampled_from([float("nan"), float("inf")]).map(
            lambda value: Scalar(b"d", struct.pack(">d", value))
        ),
        st.just(Scalar(b"f", struct.pack(">f", float("-inf")))),
        st.sampled_from([b"Z", b"\x00", b"U"]).map(lambda kind: Scalar(kind, b"\x00" * 8)),
        st.just(Scalar(b"S", struct.pack(">I", 1_000) + b"short")),
    )


@st.composite
def scalars(draw: st.DrawFn) -> Scalar:
    if draw(st.integers(0, 99)) < BROKER_REFUSED_PERCENT:
        return draw(_refused_scalars())
    return draw(_accepted_scalars())


def random_keys() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.text(max_size=30).map(_utf8),
        st.binary(max_size=32),
        st.sampled_from(INVALID_UTF8),
        st.sampled_from(
            [b"", b"k" * 255, b"x-attempts\x00", b"X-Attempts", b"x-attempts ", b"traceparent\n"]
        ),
    )


def values() -> st.SearchStrategy[Node]:
    def containers(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        return st.one_of(
            st.lists(children, max_size=4).map(lambda items: Array(tuple(items))),
            st.lists(st.tuples(random_keys(), children), max_size=4).map(
                lambda entries: Table(tuple(entries))
            ),
        )

    nested: st.SearchStrategy[Node] = st.recursive(scalars(), containers, max_leaves=8)
    depths = st.sampled_from([1, 2, 15, 16, 17, 64, 1_000, 5_000])
    deep = st.builds(Deep, st.sampled_from([b"F", b"A"]), depths)
    return weighted((6, nested), (1, deep), (1, every_type()))


def every_type() -> st.SearchStrategy[Node]:
    """A table with one value of every field type RabbitMQ accepts, keyed by its letter, and
    the same values as an array: each run covers them all, whatever else it draws."""
    letters = [letter.encode() for letter in ALL_FIELD_TYPES if letter not in "AF"]
    by_type = st.tuples(*(_accepted_scalars(letter) for letter in letters))

    def build(items: tuple[Scalar, ...]) -> Node:
        entries = tuple(zip(letters, items, strict=True))
        return Table((*entries, (b"A", Array(items)), (b"F", Table(entries))))

    return by_type.map(build)


def counter_values() -> st.SearchStrategy[Node]:
    """Hostile values for a header the worker reads as a count: integer extremes in every
    integer type, as strings (digits, signs, exponents, non-ASCII digits, 4,301 digits), as
    floats, decimals, booleans, timestamps, bytes."""
    number_strings = st.one_of(
        st.sampled_from(NUMBER_STRINGS),
        st.sampled_from(INTEGER_EXTREMES).map(lambda value: str(value).encode()),
        st.integers(LONG_MIN, 2**64).map(lambda value: str(value).encode()),
    )
    return st.one_of(
        *(_integer(kind) for kind in INTEGER_TYPES),
        number_strings.map(lambda raw: Scalar(b"S", long_str(raw))),
        number_strings.map(lambda raw: Scalar(b"x", long_str(raw))),
        st.sampled_from([2.0**63, 1e18, -1.0, 0.5, 1e308]).map(
            lambda value: Scalar(b"d", struct.pack(">d", value))
        ),
        st.sampled_from([(0, 2**32 - 1), (255, 1), (3, 2**31)]).map(
            lambda pair: Scalar(b"D", struct.pack(">BI", *pair))
        ),
        st.sampled_from([b"\x00", b"\x01", b"\xff"]).map(lambda raw: Scalar(b"t", raw)),
        _timestamps().map(lambda value: Scalar(b"T", struct.pack(">Q", value))),
    )


def _route_names() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([b"fuzz-leak", b"transcribe", b"", b"#", b"*", b"\xff", b"a" * 255]),
        st.text(max_size=20).map(_utf8).filter(lambda key: key not in OTHER_STAGES),
    )


def route_values() -> st.SearchStrategy[Node]:
    """CC/BCC as RabbitMQ reads them (an array; its long strings are routing keys)."""
    item = st.one_of(_route_names().map(lambda raw: Scalar(b"S", long_str(raw))), scalars())
    return st.lists(item, max_size=4).map(lambda items: Array(tuple(items)))


TRACEPARENT_FORMS = (
    "00-{trace}-{parent}-01",
    "00-{trace}-{parent}-01\n",
    "\n00-{trace}-{parent}-01",
    "00-{trace_upper}-{parent}-01",
    "ff-{trace}-{parent}-01",
    "00-{zero_trace}-{parent}-01",
    "00-{trace}-{zero_parent}-01",
    "00-{trace}-{parent}-01-extra",
    "00-{short_trace}-{parent}-01",
    "\uff10\uff10-{trace}-{parent}-01",
)


def traceparent_values() -> st.SearchStrategy[Node]:
    """W3C traceparents: well-formed, and each way one can be almost well-formed."""

    def fill(form: str, trace: bytes, parent: bytes) -> bytes:
        text = form.format(
            trace=trace.hex(),
            parent=parent.hex(),
            trace_upper=trace.hex().upper(),
            zero_trace="0" * 32,
            zero_parent="0" * 16,
            short_trace=trace.hex()[:31],
        )
        return _utf8(text)

    ids = st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))
    forms = st.tuples(st.sampled_from(TRACEPARENT_FORMS), ids).map(
        lambda drawn: fill(drawn[0], *drawn[1])
    )
    raw = weighted((4, forms), (1, st.sampled_from(INVALID_UTF8)))
    return weighted(
        (3, raw.map(lambda value: Scalar(b"S", long_str(value)))),
        (1, raw.map(lambda value: Scalar(b"x", long_str(value)))),
    )


def text_values() -> st.SearchStrategy[Node]:
    words = st.one_of(
        st.sampled_from(
            [
                b"note",
                b"transcribe",
                ErrorType.INTERNAL_ERROR.encode(),
                ErrorType.DELIVERY_LIMIT_EXCEEDED.encode(),
                b"2024-01-01T00:00:00+00:00",
                b"9999-12-31T23:59:59",
                b"../../etc",
                b"a\r\nb",
                b"x" * 64,
                b"x" * 65,
                b"x" * 65_536,
                str(uuid.UUID(int=1)).encode(),
                b"fuzz.transcribe",
                *INVALID_UTF8,
            ]
        ),
        st.text(max_size=80).map(_utf8),
    )
    return words.map(lambda raw: Scalar(b"S", long_str(raw)))


def _named_value(name: str) -> st.SearchStrategy[Node]:
    if name in COUNTER_HEADERS:
        special = counter_values()
    elif name in ROUTE_HEADERS:
        special = route_values()
    elif name == c.HEADER_TRACEPARENT:
        special = traceparent_values()
    else:
        special = text_values()
    return weighted((7, special), (1, values()))


def _named_entries() -> st.SearchStrategy[tuple[bytes, Node]]:
    return st.sampled_from(NAMED_HEADERS).flatmap(
        lambda name: _named_value(name).map(lambda value: (name.encode(), value))
    )


def fit_in_frame(entries: list[tuple[bytes, Node]]) -> tuple[tuple[bytes, Node], ...]:
    """The entries, less the last ones while the encoded table is over MAX_HEADER_BYTES."""
    while entries and len(encode_table(entries)) > MAX_HEADER_BYTES:
        entries = entries[:-1]
    return tuple(entries)


def header_tables() -> st.SearchStrategy[tuple[tuple[bytes, Node], ...] | None]:
    entry = weighted((2, _named_entries()), (1, st.tuples(random_keys(), values())))
    tables = st.lists(entry, min_size=1, max_size=8).map(fit_in_frame)
    return weighted((1, st.none()), (4, tables))


def short_strings() -> st.SearchStrategy[bytes]:
    """AMQP short strings, mostly UTF-8 (so that most messages get past the property check and
    exercise the headers), one in four invalid."""
    specials = st.sampled_from(
        [
            b"",
            b"a" * 255,
            b"\x00",
            b"application/json",
            b"application/json; charset=utf-16",
            b"text/plain",
        ]
    )
    text = st.text(max_size=60).map(_utf8)  # at most 240 bytes
    invalid = st.one_of(
        st.binary(max_size=254).map(lambda raw: raw + b"\xff"), st.sampled_from(INVALID_UTF8)
    )
    return weighted((3, text), (3, specials), (2, invalid))


def cases() -> st.SearchStrategy[Case]:
    return st.builds(
        Case,
        anonymous=weighted((9, st.just(False)), (1, st.just(True))),
        content_type=weighted(
            (2, st.just(b"application/json")), (1, st.none()), (2, short_strings())
        ),
        correlation=weighted((1, st.sampled_from(CORRELATION_KINDS)), (1, short_strings())),
        message_id=weighted((1, st.none()), (2, short_strings())),
        timestamp=weighted((1, st.none()), (2, _timestamps())),
        delivery_mode=weighted(
            (6, st.just(2)), (2, st.none()), (2, st.just(1)), (1, st.integers(0, 255))
        ),
        headers=header_tables(),
    )


_CASES_PER_RUN = 100


def generate_cases(count: int, seed_value: int) -> list[Case]:
    """count cases from hypothesis, collected by a @given function called directly (no pytest,
    no example database, no shrinking: nothing fails inside it). Deterministic per seed."""
    collected: list[Case] = []
    attempt = 0
    while len(collected) < count and attempt < count // _CASES_PER_RUN + 10:
        # At most _CASES_PER_RUN per seeded run: past about a hundred examples hypothesis's
        # generation no longer repeats for the same seed (seen with 6.170: the 113th differed).
        missing = min(count - len(collected), _CASES_PER_RUN)

        @seed(seed_value * 1_000 + attempt)
        @settings(
            max_examples=missing,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(cases())
        def collect(case: Case) -> None:
            collected.append(case)

        collect()
        attempt += 1
    return collected[:count]


# ---------------------------------------------------------------------------------------------
# The publishing plan: fuzzed cases with a valid job every few of them.


@dataclass(frozen=True)
class Planned:
    index: int
    label: str  # "fuzzed", "anonymous" or "valid"
    body: bytes
    properties: RawProperties
    job_id: str | None  # the body's jobId (None: the body has none)
    announced: str | None  # the correlation_id's UUID, for a body without a jobId
    decoy: str | None  # a UUID in correlation_id that is not the body's jobId
    case: Case | None
    # A body without a jobId whose correlation_id is another (valid) job's jobId.
    names_other_job: bool = False


def _job(job_id: uuid.UUID, audio: Path, index: int) -> JobRequest:
    transcriber = "intron" if index % 2 == 0 else "invox"
    data = {
        "jobId": str(job_id),
        "audio": {"path": str(audio), "mimeType": "audio/wav"},
        "providers": {"transcriber": transcriber, "summarizer": "invox", "note": "invox"},
    }
    return JobRequest.model_validate(data)


def _correlation_bytes(
    case: Case, own: uuid.UUID, decoy: uuid.UUID, other: uuid.UUID | None
) -> bytes | None:
    if isinstance(case.correlation, bytes):
        return case.correlation
    text = {
        "other-job": str(other or own),
        "own": str(own),
        "own-upper": str(own).upper(),
        "own-braced": "{" + str(own) + "}",
        "own-urn": own.urn,
        "decoy": str(decoy),
    }.get(case.correlation)
    return None if text is None else text.encode()


def plan_case(
    index: int, case: Case, audio: Path, rng: random.Random, other: uuid.UUID | None = None
) -> Planned:
    """The message for case; other is the jobId an "other-job" correlation_id names (None: the
    case's own)."""
    own = uuid.UUID(int=rng.getrandbits(128), version=4)
    decoy = uuid.UUID(int=rng.getrandbits(128), version=4)
    if case.anonymous:
        body = (b'{"notAJob": "%s"}' if index % 2 else b"not json %s") % str(own).encode()
        job_id = None
    else:
        body = _job(own, audio, index).to_wire()
        job_id = str(own)
    properties = RawProperties(
        content_type=case.content_type,
        headers=None if case.headers is None else encode_table(case.headers),
        delivery_mode=case.delivery_mode,
        correlation_id=_correlation_bytes(case, own, decoy, other),
        message_id=case.message_id,
        timestamp=case.timestamp,
    )
    names = {"decoy": decoy, "other-job": other or own}
    announced = None
    if case.anonymous and isinstance(case.correlation, str) and case.correlation != "none":
        # Without a jobId in the body, the correlation_id's UUID is the job's name (if any).
        announced = str(names.get(case.correlation, own))
    return Planned(
        index=index,
        label="anonymous" if case.anonymous else "fuzzed",
        body=body,
        properties=properties,
        job_id=job_id,
        announced=announced,
        decoy=str(decoy) if case.correlation == "decoy" and not case.anonymous else None,
        case=case,
        names_other_job=case.anonymous and case.correlation == "other-job" and other is not None,
    )


def make_plan(
    generated: list[Case],
    valid_every: int,
    audio: Path,
    seed_value: int,
    other_job_ids: bool = True,
) -> list[Planned]:
    """The cases in order, a valid job after every valid_every of them. Without other_job_ids,
    an "other-job" correlation_id is the case's own jobId instead."""
    rng = random.Random(seed_value)
    planned: list[Planned] = []
    last_valid: uuid.UUID | None = None
    for number, case in enumerate(generated):
        other = last_valid if other_job_ids else None
        planned.append(plan_case(len(planned), case, audio, rng, other))
        if (number + 1) % valid_every == 0 or number == len(generated) - 1:
            job_id = last_valid = uuid.UUID(int=rng.getrandbits(128), version=4)
            body = _job(job_id, audio, len(planned)).to_wire()
            properties = RawProperties(correlation_id=str(job_id).encode())
            planned.append(
                Planned(len(planned), "valid", body, properties, str(job_id), None, None, None)
            )
    return planned


# ---------------------------------------------------------------------------------------------
# What was observed, and the accounting.


@dataclass
class Observed:
    # jobId -> (event type, eventId, message_id of the publish, errorType)
    events: dict[str, list[tuple[str, str, str, str | None]]] = field(default_factory=dict)
    # body -> the errorType of each dead letter with that body
    dead: dict[bytes, list[str]] = field(default_factory=dict)
    # events or dead letters whose headers break the worker's rules (CC carried, bad traceparent)
    header_faults: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add_event(self, body: dict[str, Any], message_id: str, headers: dict[str, Any]) -> None:
        record = (
            str(body.get("type")),
            str(body.get("eventId")),
            message_id,
            body.get("errorType"),
        )
        kept = self.events.setdefault(str(body.get("jobId")), [])
        if record not in kept:  # a broker redelivery of the same publish is not a second outcome
            kept.append(record)
        self.changed.set()
        traceparent = headers.get(c.HEADER_TRACEPARENT)
        if not isinstance(traceparent, str) or not _STRICT_TRACEPARENT.fullmatch(traceparent):
            self.header_faults.append(f"{record[0]} for {body.get('jobId')}: bad traceparent")
        self._check_routing_headers(headers, f"{record[0]} for {body.get('jobId')}")

    def add_dead_letter(self, body: bytes, routing_key: str, headers: dict[str, Any]) -> None:
        _stage, error_type = parse_dead_letter_routing_key(routing_key)
        self.dead.setdefault(body, []).append(error_type)
        self.changed.set()
        self._check_routing_headers(headers, f"dead letter {routing_key}")

    def _check_routing_headers(self, headers: dict[str, Any], what: str) -> None:
        carried = {"CC", "BCC"} & set(headers)
        if carried:
            self.header_faults.append(f"{what}: carries {sorted(carried)}")


@dataclass
class RunFigures:
    refused: dict[int, str]  # planned index -> why the broker refused it
    reconnects: int | None
    worker_alive: bool
    worker_ready: bool
    duration_s: float
    unpublished: int = 0
    worker_tracebacks: int = 0
    retries: int = 0  # messages the worker sent back through a delay queue after a 503


@dataclass
class Report:
    fuzzed: int = 0
    anonymous: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)
    valid: int = 0
    valid_completed: int = 0
    reconnects: int | None = None
    duration_s: float = 0.0
    worker_tracebacks: int = 0
    retries: int = 0
    # Messages broker_refusal() expected RabbitMQ to refuse that it routed all the same.
    accepted_though_predicted: int = 0
    generated: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def settled_outcomes(self) -> int:
        return sum(self.outcomes.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "messagesFuzzed": self.fuzzed,
            "withoutJobId": self.anonymous,
            "refusedByBroker": dict(self.refused),
            "acceptedThoughPredictedRefused": self.accepted_though_predicted,
            "outcomes": dict(self.outcomes),
            "errorTypes": dict(self.error_types),
            "validJobs": self.valid,
            "validJobsCompleted": self.valid_completed,
            "reconnects": self.reconnects,
            "workerTracebacks": self.worker_tracebacks,
            "workerRetries": self.retries,
            "durationS": round(self.duration_s, 1),
            "generated": self.generated,
            "violations": self.violations,
        }

    def text(self) -> str:
        lines = [
            f"scribe-fuzz: {self.fuzzed} fuzzed messages ({self.anonymous} without a jobId) "
            f"and {self.valid} valid jobs in {self.duration_s:.1f} s",
            f"  refused by the broker, never delivered: {sum(self.refused.values())} "
            f"{dict(self.refused)}; expected refused but routed: "
            f"{self.accepted_though_predicted}",
            f"  outcomes of fuzzed messages: {dict(self.outcomes)}",
            f"  by errorType: {dict(self.error_types)}",
            f"  valid jobs completed: {self.valid_completed}/{self.valid}",
            f"  worker reconnects: {self.reconnects}; retries after injected 503s: "
            f"{self.retries}; tracebacks in its log: {self.worker_tracebacks}",
            f"  generated: {json.dumps(self.generated, sort_keys=True)}",
        ]
        lines += [f"  VIOLATION: {violation}" for violation in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more violations")
        lines.append(
            f"fuzzed={self.fuzzed} outcomes={self.settled_outcomes()} "
            f"refused={sum(self.refused.values())} "
            f"valid_completed={self.valid_completed}/{self.valid} "
            f"reconnects={self.reconnects} violations={len(self.violations)}"
        )
        return "\n".join(lines)


def describe(item: Planned) -> str:
    """A violation's input, short enough to read: the properties and the header keys/types."""
    props = item.properties
    parts = [f"#{item.index} {item.label}"]
    for name in ("content_type", "correlation_id", "message_id"):
        value = getattr(props, name)
        if value is not None:
            parts.append(f"{name}={value[:40]!r}")
    if props.timestamp is not None:
        parts.append(f"timestamp={props.timestamp}")
    if props.delivery_mode is not None:
        parts.append(f"delivery_mode={props.delivery_mode}")
    if item.case is not None and item.case.headers:
        shown = [
            f"{key[:40]!r}:{''.join(sorted(field_types(value)))}"
            for key, value in item.case.headers
        ]
        parts.append("headers{" + ", ".join(shown) + "}")
    return " ".join(parts)


def _check_job(item: Planned, observed: Observed, report: Report, forgiven: int = 0) -> None:
    """A message whose body has a jobId: one outcome event; a failure has one dead letter.

    forgiven: how many bodies without a jobId named this job in their correlation_id; the
    worker may announce job.failed (invalidMessage) under this jobId for each of them.
    """
    assert item.job_id is not None
    events = list(observed.events.get(item.job_id, []))
    announced = [event for event in events if event[0] == c.EVENT_FAILED]
    for event in [event for event in announced if event[3] == ErrorType.INVALID_MESSAGE][:forgiven]:
        events.remove(event)
    dead = observed.dead.get(item.body, [])
    where = describe(item)
    if not events:
        report.violations.append(f"no outcome: {where}")
        return
    if len(events) > 1:
        kinds = [kind for kind, *_ in events]
        report.violations.append(f"{len(events)} outcomes {kinds}: {where}")
    kind, _event_id, _message_id, error_type = events[0]
    if item.label == "valid":
        if kind == c.EVENT_COMPLETED:
            report.valid_completed += 1
        else:
            report.violations.append(f"valid job ended {kind} {error_type}: {where}")
        return
    if kind == c.EVENT_COMPLETED:
        report.outcomes["job.completed"] += 1
        if dead:
            report.violations.append(f"completed but dead-lettered {dead}: {where}")
    else:
        report.outcomes["job.failed + dead letter"] += 1
        report.error_types[str(error_type)] += 1
        if dead != [error_type]:
            report.violations.append(f"job.failed {error_type} with dead letters {dead}: {where}")
    _check_expected(item, kind, error_type, report)


def _check_expected(item: Planned, kind: str, error_type: str | None, report: Report) -> None:
    case = item.case
    non_utf8 = case is not None and case.has_non_utf8_property()
    if non_utf8 and (kind, error_type) != (c.EVENT_FAILED, ErrorType.INVALID_MESSAGE):
        report.violations.append(f"non-UTF-8 property ended {kind} {error_type}: {describe(item)}")
    if error_type == ErrorType.INTERNAL_ERROR:
        report.violations.append(f"internalError (a bug in the consume path): {describe(item)}")


def _check_anonymous(item: Planned, observed: Observed, report: Report) -> None:
    """A body without a jobId: exactly one dead letter; job.failed at most once, and only for
    the UUID its correlation_id carried."""
    dead = observed.dead.get(item.body, [])
    checked = item.announced is not None and not item.names_other_job  # else: _check_job's
    events = observed.events.get(item.announced, []) if checked and item.announced else []
    where = describe(item)
    if len(dead) != 1:
        report.violations.append(f"{len(dead)} dead letters for a body without jobId: {where}")
    if dead:
        report.outcomes["dead letter (no jobId)"] += 1
        report.error_types[dead[0]] += 1
        # Naming a job that is done, the worker dead-letters it as conflictingJob (the ledger
        # is asked under the correlation_id's jobId); see tests/integration/test_fuzz_amqp.py.
        allowed = (
            {ErrorType.INVALID_MESSAGE, ErrorType.CONFLICTING_JOB}
            if item.names_other_job
            else {ErrorType.INVALID_MESSAGE}
        )
        if dead[0] not in allowed:
            report.violations.append(f"a body without jobId ended {dead[0]}: {where}")
    if len(events) > 1 or any(kind != c.EVENT_FAILED for kind, *_ in events):
        report.violations.append(f"events {[kind for kind, *_ in events]} for {where}")


def _check_strays(plan: list[Planned], observed: Observed, report: Report) -> None:
    known_ids = {item.job_id for item in plan} | {item.announced for item in plan}
    for job_id in observed.events:
        if job_id not in known_ids:
            decoy = next((item for item in plan if item.decoy == job_id), None)
            what = f"under the decoy correlation_id of {describe(decoy)}" if decoy else ""
            report.violations.append(f"an outcome for an unknown jobId {job_id} {what}".strip())
    bodies = {item.body for item in plan}
    strays = [errors for body, errors in observed.dead.items() if body not in bodies]
    if strays:
        report.violations.append(f"{len(strays)} dead letters with bodies never published")


def summarize_input(generated: list[Case]) -> dict[str, Any]:
    """What kinds of input were generated, for the report."""
    types: Counter[str] = Counter()
    named: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    deep: Counter[str] = Counter()
    props: Counter[str] = Counter()
    largest = 0
    for case in generated:
        props.update(_property_kinds(case))
        for key, value in case.headers or ():
            types.update(field_types(value))
            if key.decode("latin-1") in NAMED_HEADERS:
                named[key.decode()] += 1
            elif not _is_utf8(key):
                keys["non-UTF-8"] += 1
            elif len(key) in (0, 255):
                keys[f"{len(key)} bytes"] += 1
            if isinstance(value, Deep):
                deep[str(value.depth)] += 1
        if case.headers:
            largest = max(largest, len(encode_table(case.headers)))
    missing = sorted(set(ALL_FIELD_TYPES) - set(types))
    return {
        "fieldTypes": dict(sorted(types.items())),
        "fieldTypesMissing": "".join(missing),
        "workerHeaders": dict(sorted(named.items())),
        "oddKeys": dict(keys),
        "nestingDepths": dict(deep),
        "properties": dict(sorted(props.items())),
        "largestHeaderTableBytes": largest,
    }


def _property_kinds(case: Case) -> Iterable[str]:
    if case.anonymous:
        yield "bodyWithoutJobId"
    if isinstance(case.correlation, bytes):
        yield "correlationIdRaw" + ("" if _is_utf8(case.correlation) else "NonUtf8")
    else:
        yield f"correlationId:{case.correlation}"
    for name, value in (("contentType", case.content_type), ("messageId", case.message_id)):
        if value is not None and not _is_utf8(value):
            yield f"{name}NonUtf8"
    if case.timestamp is not None:
        yield "timestamp>=2^32" if case.timestamp >= 2**32 else "timestamp<2^32"
        if case.timestamp >= LONG_MAX:
            yield "timestamp>=2^63-1"
    if case.delivery_mode not in (None, 1, 2):
        yield "deliveryModeOther"


def account(plan: list[Planned], observed: Observed, figures: RunFigures) -> Report:
    report = Report(
        reconnects=figures.reconnects,
        duration_s=figures.duration_s,
        worker_tracebacks=figures.worker_tracebacks,
        retries=figures.retries,
    )
    report.generated = summarize_input([item.case for item in plan if item.case is not None])
    named = Counter(
        str(item.announced)
        for item in plan
        if item.names_other_job and item.index not in figures.refused
    )
    for item in plan:
        if item.label == "valid":
            report.valid += 1
        else:
            report.fuzzed += 1
            report.anonymous += item.label == "anonymous"
        reason = figures.refused.get(item.index)
        predicted = broker_refusal(item.case) if item.case is not None else None
        if reason is not None:
            _check_refused(item, f"{predicted or 'unexplained'} ({reason})", observed, report)
            continue
        if predicted is not None:
            report.accepted_though_predicted += 1
        if item.job_id is not None:
            _check_job(item, observed, report, named.get(item.job_id, 0))
        else:
            _check_anonymous(item, observed, report)
    _check_strays(plan, observed, report)
    report.violations += observed.header_faults
    _check_worker(figures, report)
    return report


def _check_refused(item: Planned, reason: str, observed: Observed, report: Report) -> None:
    report.refused[reason] += 1
    if item.label == "valid":
        report.violations.append(f"the broker refused a valid job ({reason}): {describe(item)}")
    ids = [item.job_id, item.announced]
    if observed.dead.get(item.body) or any(observed.events.get(str(i)) for i in ids if i):
        report.violations.append(
            f"refused by the broker ({reason}) yet delivered: {describe(item)}"
        )


def _check_worker(figures: RunFigures, report: Report) -> None:
    if figures.unpublished:
        report.violations.append(
            f"{figures.unpublished} messages not published before the deadline"
        )
    if figures.reconnects != 0:
        report.violations.append(f"the worker reconnected {figures.reconnects} times")
    if not figures.worker_alive:
        report.violations.append("the worker process exited")
    elif not figures.worker_ready:
        report.violations.append("the worker was not ready at the end (/readyz)")


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass(frozen=True)
class Options:
    messages: int = 300
    valid_every: int = 4
    timeout_s: float = 120.0
    seed: int = 0
    amqp_url: str = c.DEFAULT_AMQP_URL
    # Share of vendor calls answered 503, so that jobs also take the retry path through the
    # delay exchange with the headers the worker carried from the hostile message.
    fault_rate: float = 0.05
    # Bodies without a jobId may name the valid job before them in their correlation_id.
    other_job_ids: bool = True


def worker_env(
    options: Options, prefix: str, base_url: str, root: Path, port: int
) -> dict[str, str]:
    return {
        "SCRIBE_AMQP_URL": options.amqp_url,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_INTRON_BASE_URL": base_url,
        "SCRIBE_INTRON_API_KEY": INTRON_KEY,
        "SCRIBE_INVOX_BASE_URL": base_url,
        "SCRIBE_INVOX_ACCESS_TOKEN": INVOX_TOKEN,
        "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
        "SCRIBE_STORAGE_ROOT": str(root),
        "SCRIBE_DELAY_TIERS_MS": DELAY_TIERS_MS,
        "SCRIBE_POLL_INTERVAL_MS": "50",
        "SCRIBE_RETRY_BASE_MS": "20",
        "SCRIBE_MAX_ATTEMPTS": "6",  # a valid job fails only after six 503s in a row
        "SCRIBE_HTTP_TIMEOUT_S": "5",
        "SCRIBE_RATE_LIMITS": "none",
        "SCRIBE_HTTP_HOST": "127.0.0.1",
        "SCRIBE_HTTP_PORT": str(port),
        "SCRIBE_LOG_LEVEL": "warning",
        "SCRIBE_SHUTDOWN_GRACE_S": "5",
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Publishing:
    """A RawPublisher that survives the broker refusing a message: it reconnects and says why."""

    def __init__(self) -> None:
        self._publisher: RawPublisher | None = None

    async def publish(self, exchange: str, item: Planned) -> str | None:
        """None once the broker confirmed the message; else why it refused it."""
        if self._publisher is None:
            self._publisher = await RawPublisher.connect()
        try:
            await self._publisher.publish(exchange, "transcribe", item.body, item.properties)
        except (RuntimeError, ConnectionError, TimeoutError, OSError) as exc:
            self._abort()
            found = re.search(r"<(\S+) object", str(exc))
            return found.group(1) if found else type(exc).__name__
        return None

    def _abort(self) -> None:
        if self._publisher is not None:
            self._publisher.writer.close()
            self._publisher = None

    async def close(self) -> None:
        if self._publisher is not None:
            try:
                await self._publisher.close()
            except (RuntimeError, ConnectionError, TimeoutError, OSError):
                self._abort()
            self._publisher = None


async def observe(connection: AbstractConnection, names: Names, observed: Observed) -> None:
    """Collect job.completed / job.failed events and every dead letter of the prefix."""
    channel = await connection.channel()
    events = await channel.declare_queue(exclusive=True, auto_delete=True)
    exchange = await channel.get_exchange(names.events_exchange)
    for key in (c.EVENT_COMPLETED, c.EVENT_FAILED):
        await events.bind(exchange, routing_key=key)

    async def on_event(message: AbstractIncomingMessage) -> None:
        observed.add_event(
            json.loads(message.body), str(message.message_id), dict(message.headers or {})
        )

    async def on_dead_letter(message: AbstractIncomingMessage) -> None:
        observed.add_dead_letter(
            message.body, str(message.routing_key), dict(message.headers or {})
        )

    await events.consume(on_event, no_ack=True)
    dead_letters = await channel.get_queue(names.dead_letter_queue)
    await dead_letters.consume(on_dead_letter, no_ack=True)


def _settled(plan: list[Planned], observed: Observed, refused: dict[int, str]) -> bool:
    for item in plan:
        if item.index in refused:
            continue
        if item.job_id is not None:
            if item.job_id not in observed.events:
                return False
        elif item.body not in observed.dead:
            return False
    return True


async def wait_settled(
    plan: list[Planned], observed: Observed, refused: dict[int, str], deadline: float
) -> None:
    while not _settled(plan, observed, refused):
        observed.changed.clear()
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            return
        try:
            await asyncio.wait_for(observed.changed.wait(), remaining_s)
        except TimeoutError:
            return
    await asyncio.sleep(max(0.0, min(SETTLE_S, deadline - time.monotonic())))


async def publish_plan(
    plan: list[Planned], names: Names, deadline: float
) -> tuple[dict[int, str], int]:
    """Publish in order; returns (refused index -> reason, messages left unpublished)."""
    refused: dict[int, str] = {}
    publishing = Publishing()
    try:
        for position, item in enumerate(plan):
            if time.monotonic() >= deadline:
                return refused, len(plan) - position
            reason = await publishing.publish(names.jobs_exchange, item)
            if reason is not None:
                refused[item.index] = reason
    finally:
        await publishing.close()
    return refused, 0


async def _worker_http(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def wait_ready(
    session: aiohttp.ClientSession, port: int, process: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.returncode is None:
        try:
            if (await _worker_http(session, port, "/readyz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the worker did not become ready")


async def worker_counters(session: aiohttp.ClientSession, port: int) -> dict[str, int]:
    """Reconnects and retries, as the worker's /metrics reports them."""
    _status, text = await _worker_http(session, port, "/metrics")
    sums: dict[str, int] = {}
    for name in ("scribe_broker_reconnects_total", "scribe_stage_retried_total"):
        found = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
        sums[name] = int(sum(float(value) for value in found))
    return sums


FAULTY_ENDPOINTS = ("intron.upload", "intron.status", "invox.presign", "invox.transcription",
                    "invox.summary")  # fmt: skip


async def inject_faults(session: aiohttp.ClientSession, base_url: str, rate: float) -> None:
    if rate <= 0:
        return
    rules = [{"endpoint": endpoint, "kind": "http_error", "status": 503, "probability": rate}
             for endpoint in FAULTY_ENDPOINTS]  # fmt: skip
    async with session.post(f"{base_url}/_sandbox/faults", json=rules) as response:
        response.raise_for_status()


async def fuzz(
    options: Options, plan: list[Planned], root: Path, prefix: str, started: float
) -> tuple[Observed, RunFigures]:
    """Start the emulator and a worker process, publish the plan, collect what happens."""
    names = Names(prefix)
    deadline = started + options.timeout_s
    observed = Observed()
    config = SandboxConfig(
        intron_api_key=INTRON_KEY,
        invox_static_token=INVOX_TOKEN,
        polls_before_ready=1,
        intron_upload_rate_per_min=0,
        intron_status_rate_per_min=0,
    )
    port = free_port()
    log_path = root / "worker.log"
    async with running_sandbox(config) as sandbox, aiohttp.ClientSession() as session:
        await inject_faults(session, sandbox.base_url, options.fault_rate)
        env = worker_env(options, prefix, sandbox.base_url, root, port)
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *worker_argv(),
                env={**os.environ, **env},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            await wait_ready(session, port, process)
            connection = await aio_pika.connect(options.amqp_url)
            async with connection:
                await observe(connection, names, observed)
                refused, unpublished = await publish_plan(plan, names, deadline)
                await wait_settled(plan, observed, refused, deadline)
                alive = process.returncode is None
                counters = await worker_counters(session, port) if alive else {}
                reconnects = counters.get("scribe_broker_reconnects_total")
                ready = alive and (await _worker_http(session, port, "/readyz"))[0] == 200
        finally:
            await stop(process, grace_s=10.0)
    tracebacks = log_path.read_text(errors="replace").count("Traceback")
    figures = RunFigures(
        refused, reconnects, alive, ready, time.monotonic() - started, unpublished, tracebacks
    )
    figures.retries = counters.get("scribe_stage_retried_total", 0)
    return observed, figures


async def run(options: Options, cases: list[Case] | None = None) -> Report:
    """Generate options.messages cases (or take the given ones: a reproduction), fuzz, account."""
    started = time.monotonic()
    amqp_decoding.install()  # dead letters the broker makes keep the hostile properties
    generated = cases if cases is not None else generate_cases(options.messages, options.seed)
    root = Path(tempfile.mkdtemp(prefix="scribe-fuzz-"))
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    try:
        audio = write_audio(root, uuid.uuid4())  # one recording for every fuzzed job
        plan = make_plan(generated, options.valid_every, audio, options.seed, options.other_job_ids)
        observed, figures = await asyncio.wait_for(
            fuzz(options, plan, root, prefix, started), options.timeout_s + 30
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        tiers = tuple(int(tier) for tier in DELAY_TIERS_MS.split(","))
        await delete_prefix(options.amqp_url, prefix, tiers)
    return account(plan, observed, figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scribe-fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=300, help="fuzzed messages (1..5000)")
    parser.add_argument("--valid-every", type=int, default=4, help="a valid job after every N")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="hard bound of the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amqp-url", default=c.DEFAULT_AMQP_URL)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="vendor calls answered 503")
    parser.add_argument(
        "--no-other-job-ids",
        action="store_true",
        help="never put another job's jobId in the correlation_id of a body without a jobId",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 5_000 or not 1 <= args.valid_every <= 100:
        parser.error("--messages must be 1..5000 and --valid-every 1..100")
    if not 10 <= args.timeout_s <= 1_800:
        parser.error("--timeout-s must be within 10..1800")
    if not 0 <= args.fault_rate <= 0.3:
        parser.error("--fault-rate must be within 0..0.3")
    options = Options(
        args.messages,
        args.valid_every,
        args.timeout_s,
        args.seed,
        args.amqp_url,
        args.fault_rate,
        not args.no_other_job_ids,
    )
    try:
        report = asyncio.run(run(options))
    except (OSError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
        # The broker went away (another program restarted it) or the worker never became ready:
        # no verdict on the worker either way.
        print(f"scribe-fuzz: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_json(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
