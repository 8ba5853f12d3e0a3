"""The committed contract files are what the code generates (run `make schemas` to refresh)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ops import asyncapi
from schemas import export
from schemas.errors import ERROR_CATALOGUE, ErrorType
from worker.constants import STAGES
from worker.topology import Names
from worker.tracing import new_traceparent, valid_traceparent

STALE = "stale: run `make schemas` and commit the result"


def test_json_schema_files_are_fresh() -> None:
    rendered = export.render()
    committed = {path.name for path in export.JSON_DIR.iterdir() if path.is_file()}
    assert committed == set(rendered), STALE
    for name, content in rendered.items():
        assert (export.JSON_DIR / name).read_text(encoding="utf-8") == content, f"{name} {STALE}"


def test_asyncapi_file_is_fresh() -> None:
    committed = asyncapi.ASYNCAPI_FILE.read_text(encoding="utf-8")
    assert committed == asyncapi.render(), f"schemas/asyncapi.yaml {STALE}"


def _document() -> dict[str, Any]:
    loaded = yaml.safe_load(asyncapi.ASYNCAPI_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves() -> None:
    document = _document()
    for ref in _refs(document):
        _resolve(document, ref)


def test_asyncapi_describes_the_topology() -> None:
    document = _document()
    assert document["asyncapi"] == "3.1.0"
    names = Names("{prefix}")
    channels = document["channels"]
    addresses = {channel["address"] for channel in channels.values()}
    for stage in STAGES:
        assert stage in addresses  # routing key on <prefix>.jobs
        assert names.stage_queue(stage) in addresses
    assert names.dead_letter_queue in addresses
    assert "{stage}.{errorType}" in addresses
    assert {"job.completed", "job.failed", "job.stage.{stage}"} <= addresses
    exchanges = {
        channel["bindings"]["amqp"]["exchange"]["name"]: channel["bindings"]["amqp"]["exchange"]
        for channel in channels.values()
        if channel["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert {name: spec["type"] for name, spec in exchanges.items()} == {
        names.jobs_exchange: "direct",
        names.delay_exchange: "headers",
        names.dead_exchange: "topic",
        names.events_exchange: "topic",
    }
    queue_args = channels["queueTranscribe"]["x-rabbitmq-arguments"]
    assert queue_args["x-queue-type"] == "quorum"
    assert queue_args["x-dead-letter-routing-key"] == "transcribe.deliveryLimitExceeded"
    actions = {operation["action"] for operation in document["operations"].values()}
    assert actions == {"send", "receive"}


def test_asyncapi_payloads_come_from_the_models() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    for model in export.MODELS.values():
        assert model.__name__ in schemas
    for name, model in export.MODELS.items():
        own = model.model_json_schema(
            by_alias=True, mode="validation", ref_template=asyncapi.SCHEMA_REF
        )
        own.pop("$defs", None)
        assert schemas[model.__name__] == own, name
    assert "jobId" in schemas["JobRequest"]["properties"]
    headers = schemas["DeadLetterHeaders"]["properties"]
    assert {
        "x-error-type",
        "x-stage",
        "x-error-message",
        "x-http-status",
        "x-attempts",
        "x-first-failure-at",
        "x-last-failure-at",
        "x-job-id",
    } <= set(headers)


def test_error_type_enum_is_the_catalogue_with_descriptions() -> None:
    schema = _document()["components"]["schemas"]["ErrorType"]
    assert schema["enum"] == [error_type.value for error_type in ErrorType]
    described = {option["const"]: option["description"] for option in schema["oneOf"]}
    assert described == {error_type.value: text for error_type, text in ERROR_CATALOGUE.items()}


def _enums_without_title(node: Any, path: str) -> list[str]:
    if isinstance(node, dict):
        own = [path] if ("enum" in node or "const" in node) and "title" not in node else []
        return own + [
            found
            for key, value in node.items()
            for found in _enums_without_title(value, f"{path}/{key}")
        ]
    if isinstance(node, list):
        return [
            found
            for i, value in enumerate(node)
            for found in _enums_without_title(value, f"{path}/{i}")
        ]
    return []


def test_every_enum_has_a_title() -> None:
    """Model generators name an untitled schema AnonymousSchema54; every enum and const in the
    document's schemas has a name of its own instead."""
    schemas = _document()["components"]["schemas"]
    assert _enums_without_title(schemas, "#/components/schemas") == []


def test_event_messages_declare_the_traceparent_header() -> None:
    document = _document()
    messages = document["components"]["messages"]
    for name in ("jobCompleted", "jobFailed", "stageProgress"):
        headers = _resolve(document, messages[name]["headers"]["$ref"])
        traceparent = headers["properties"]["traceparent"]
        pattern = re.compile(traceparent["pattern"])
        genuine = new_traceparent()
        assert pattern.search(genuine)
        assert valid_traceparent(genuine) == genuine
        assert traceparent["minLength"] == traceparent["maxLength"] == len(genuine)


def test_the_dead_letter_payload_is_a_named_schema() -> None:
    document = _document()
    payload = document["components"]["messages"]["deadLetter"]["payload"]
    assert payload == {"$ref": "#/components/schemas/DeadLetterBody"}
    body = _resolve(document, payload["$ref"])
    assert body["title"] == "DeadLetterBody"
    stage_models = (
        *asyncapi.STAGE_MODELS.values(),
        *asyncapi.MORE_STAGE_MODELS["transcribe"].values(),
    )
    assert {ref["$ref"] for ref in body["anyOf"]} == {
        asyncapi.SCHEMA_REF.format(model=model) for model in stage_models
    }
