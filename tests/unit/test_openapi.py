"""schemas/openapi.json is what ops/openapi.py generates now, and describes the routes the worker
serves (make schemas regenerates it)."""

from __future__ import annotations

import json

from ops import openapi
from schemas.status import MAX_PAGE_SIZE
from worker.jobs_api import JOB_PATH, JOBS_PATH, LIST_PARAMETERS


def test_openapi_file_is_fresh() -> None:
    committed = openapi.OPENAPI_FILE.read_text(encoding="utf-8")
    assert committed == openapi.render(), "schemas/openapi.json is stale: run `make schemas`"


def test_openapi_documents_every_route_and_parameter() -> None:
    document = json.loads(openapi.OPENAPI_FILE.read_text(encoding="utf-8"))
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {JOB_PATH, JOBS_PATH}
    listed = document["paths"][JOBS_PATH]["get"]["parameters"]
    assert [p["name"] for p in listed] == list(LIST_PARAMETERS)
    limit = next(p for p in listed if p["name"] == "limit")
    assert limit["schema"]["maximum"] == MAX_PAGE_SIZE
    assert document["security"] == [{"bearerToken": []}]
