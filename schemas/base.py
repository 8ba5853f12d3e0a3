"""Shared pydantic configuration: camelCase on the wire, snake_case in Python, frozen values."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel


def _exactly_integer(value: Any) -> Any:
    """1.0 and true equal 1 in Python; a schemaVersion must be the JSON integer itself."""
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_exactly_integer)]


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
    parts = list(error["loc"])
    if error["type"] == "extra_forbidden" and parts:
        parts[-1] = "<unknown field>"  # the key itself came from the sender: could be anything
    shown = [
        str(part) if isinstance(part, int) or _FIELD_NAME.match(str(part)) else "?"
        for part in parts
    ]
    return ".".join(shown)[:80] or "(root)"


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """Where and how a message is wrong, without echoing any of its values (patient data)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        problems.append(f"{_location(error)}: {error['type']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
