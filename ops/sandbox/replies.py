"""Vendor-shaped error bodies and request parsing shared by every handler.

Each vendor spells errors its own way (Intron's status envelope, Invox's
three-s `messsage`, bare text from the storage behind signed URLs, OpenAI's
{"error": {"message", "type", "code"}} on the chat endpoint); handlers name the
endpoint and this module picks the shape.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from schemas.errors import ErrorType

INVALID_REQUEST = "invalid_request_error"


class Abort(Exception):
    """Raised by a handler or guard to answer with `response` at once."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def style(endpoint: str) -> str:
    """Which error dialect an endpoint speaks: intron, invox, openai or storage."""
    if endpoint.startswith("intron."):
        return "intron"
    if endpoint.startswith("llm."):
        return "openai"
    return "storage" if endpoint.endswith("_put") else "invox"


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def intron_ok(data: dict[str, Any], message: str) -> web.Response:
    return web.json_response({"data": data, "message": message, "status": "Ok"})


def vendor_error(
    endpoint: str,
    status: int,
    message: str | None = None,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error response in the dialect of `endpoint`."""
    text = message or reason(status)
    dialect = style(endpoint)
    if dialect == "storage":
        return web.Response(status=status, text=text, headers=headers)
    body: dict[str, Any]
    if dialect == "openai":
        default = {429: "rate_limit_exceeded"}.get(status, INVALID_REQUEST)
        kind = error_type or ("server_error" if status >= 500 else default)
        body = {"error": {"message": text, "type": kind, "param": None, "code": None}}
    elif dialect == "intron":
        body = {"data": {}, "message": text, "status": "Error"}
    else:
        # The documented 404 spells "message"; every other Invox error "messsage".
        body = {"message" if status == 404 else "messsage": text}
        if error_type is not None:
            body["errorType"] = error_type
    return web.json_response(body, status=status, headers=headers)


def invox_abort(status: int, error_type: str, message: str) -> Abort:
    return Abort(vendor_error("invox.*", status, message, error_type))


def malformed(body: str) -> web.Response:
    """A 200 that no JSON parser accepts: cut-off JSON or a proxy's HTML page."""
    if body == "html":
        page = "<html><head><title>Gateway</title></head><body><h1>Welcome</h1></body></html>"
        return web.Response(text=page, content_type="text/html")
    return web.Response(text='{"status": "Ok", "data": {"file_', content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or 400 invalidRequestBody."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise invox_abort(
            400, ErrorType.INVALID_REQUEST_BODY, "Body must be a JSON object"
        ) from None
    if not isinstance(body, dict):
        raise invox_abort(400, ErrorType.INVALID_REQUEST_BODY, "Body must be a JSON object")
    return body


def bearer(request: web.Request) -> str | None:
    """The bearer token of the Authorization header, if it has one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
