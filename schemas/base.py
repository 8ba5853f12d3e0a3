"""Shared pydantic configuration: camelCase on the wire, snake_case in Python, frozen values."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema
from pydantic.alias_generators import to_camel

# Wire types. Each says in its JSON Schema exactly what the worker accepts, so that a body a
# third-party validator accepts is one the worker accepts and the reverse
# (tests/unit/test_schema_agreement.py). Messages are validated in pydantic's strict mode
# (worker/codec.py): no "3" for 3, no "yes" for true.

# A pattern's `$` also matches before a final newline in Python's re (which the `jsonschema`
# package uses): this keeps "en\n" out under every regex dialect. Lookarounds would too, but
# not every dialect has them.
NO_NEWLINE: dict[str, Any] = {"not": {"pattern": "\\n"}}


def _json_integer(value: Any) -> Any:
    """JSON has one kind of number: 3.0 is the integer 3 (JSON Schema says so too, so no schema
    can refuse it). true and "3" are not numbers; 3.5 is not an integer."""
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


# The one schemaVersion these models read and write (worker.constants re-exports it); the
# Literal below must name the same number.
SCHEMA_VERSION: Final = 1
SchemaVersion = Annotated[Literal[1], BeforeValidator(_json_integer)]
WireInt = Annotated[int, BeforeValidator(_json_integer)]

# Additive changes within schemaVersion 1 (docs/wire-changes.md lists each): a revision adds only
# optional fields, so a version-1 reader that ignores fields it does not know reads a newer event,
# and a newer reader reads every older one. Events say which revision wrote them
# (`schemaRevision`); a breaking change would be schemaVersion 2 instead.
SCHEMA_REVISION: Final = 2

# The pipeline's stages in order: the wire's `stage` fields, queue names and dead-letter keys
# (worker.constants re-exports both).
Stage = Literal["transcribe", "poll", "summarize", "note"]
STAGES: Final[tuple[Stage, ...]] = ("transcribe", "poll", "summarize", "note")

# The one spelling of a UUID: 8-4-4-4-12 hex digits, in either case (the worker writes lower
# case). 32 bare digits, urn:uuid: and {braces} are refused: they would be other identities to
# anyone comparing text (worker/codec.py canonical_uuid, the job's identity, is the same rule).
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID_TEXT = re.compile(UUID_PATTERN[1:-1], re.ASCII)


def _uuid_text(value: Any) -> Any:
    if isinstance(value, str) and not UUID_TEXT.fullmatch(value):
        raise ValueError("not a UUID as 8-4-4-4-12 hex digits")
    return value


WireUuid = Annotated[
    UUID,
    BeforeValidator(_uuid_text),
    WithJsonSchema(
        {"type": "string", "format": "uuid", "pattern": UUID_PATTERN, "minLength": 36,
         "maxLength": 36}
    ),
]  # fmt: skip

# RFC 3339 date-time, as JSON Schema's `format: date-time` means it: a T, seconds, and an offset
# (a time without one is a different instant on every machine). Days that do not exist
# (2023-02-29) pass the pattern and are refused by the parse, as by `format: date-time`.
RFC3339_PATTERN = (
    "^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:0[1-9]|1[0-2])"
    "-(?:0[1-9]|[12][0-9]|3[01])[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]+)?"
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
RFC3339_TEXT = re.compile(RFC3339_PATTERN[1:-1], re.ASCII)


def _rfc3339_text(value: Any) -> Any:
    """The datetime an RFC 3339 text names (parsed here: in strict mode pydantic takes text for a
    datetime only straight from JSON, not from a validator before it)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not RFC3339_TEXT.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time with an offset")
    return datetime.fromisoformat(value.upper())  # ValueError for a day that does not exist


WireDatetime = Annotated[
    datetime,
    BeforeValidator(_rfc3339_text),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN, **NO_NEWLINE}
    ),
]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        str_max_length=5_000_000,
        # NaN and Infinity are not JSON: a job carrying one would be written on as null and
        # refused by the next stage instead of at the door.
        allow_inf_nan=False,
    )

    def to_wire(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def _location(error: Any) -> str:
    """Where the error is, by field names: names are not patient data, so an unknown field is
    named too (the README promises it), as long as it is shaped like a field name. Any other
    key came from the sender as free text, which could be anything: it is not shown."""
    parts = list(error["loc"])
    unknown = error["type"] == "extra_forbidden" and bool(parts)
    shown = [
        str(part) if isinstance(part, int) or _FIELD_NAME.fullmatch(str(part)) else "?"
        for part in parts
    ]
    if unknown and shown[-1] == "?":
        shown[-1] = "(unknown field)"
    return ".".join(shown)[:80] or "(root)"


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """Where and how a message is wrong, without echoing any of its values (patient data)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        problems.append(f"{_location(error)}: {error['type']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
