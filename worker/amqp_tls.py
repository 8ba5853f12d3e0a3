"""amqps with certificate verification (issue 19, item 5).

SCRIBE_AMQP_CA_FILE names the CA (PEM) the broker's certificate must chain to (unset: the
system's trust store); SCRIBE_AMQP_CERT_FILE and SCRIBE_AMQP_KEY_FILE an optional client
certificate and its key; SCRIBE_AMQP_SERVER_NAME the name the broker's certificate must carry
(unset: the host of SCRIBE_AMQP_URL). Verification is never turned off: there is no setting for
that. The files are read once at start, so a missing or malformed one fails then, by name.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import SettingsError

CA_FILE = "SCRIBE_AMQP_CA_FILE"
CERT_FILE = "SCRIBE_AMQP_CERT_FILE"
KEY_FILE = "SCRIBE_AMQP_KEY_FILE"
SERVER_NAME = "SCRIBE_AMQP_SERVER_NAME"


class _NamedContext(ssl.SSLContext):
    """A client context that checks the certificate against a fixed name rather than the
    host the socket connects to (aiormq passes the URL's host)."""

    expected_name: str | None = None

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if self.expected_name is not None:
            kwargs["server_hostname"] = self.expected_name
        return super().wrap_bio(*args, **kwargs)


@dataclass(frozen=True)
class AmqpTls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client context (CERT_REQUIRED, host name checked); SettingsError naming
        the variable whose file cannot be used."""
        context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        context.expected_name = self.server_name
        try:
            if self.ca_file is None:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            else:
                context.load_verify_locations(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(CA_FILE, f"cannot load the CA file ({_why(exc)})") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), _opt(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise SettingsError(
                    CERT_FILE, f"cannot load the client certificate or its key ({_why(exc)})"
                ) from None
        return context


def _opt(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(exc.strerror or getattr(exc, "reason", None) or type(exc).__name__)[:80]


def read_amqp_tls(env: Mapping[str, str], scheme: str) -> AmqpTls | None:
    """The TLS settings for an amqps URL (None for amqp); a TLS variable beside an amqp URL is
    a mistake (the operator meant TLS) and fails by name."""

    def raw(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    given = {name: raw(name) for name in (CA_FILE, CERT_FILE, KEY_FILE, SERVER_NAME)}
    if scheme != "amqps":
        for name, value in given.items():
            if value is not None:
                raise SettingsError(name, "set, but SCRIBE_AMQP_URL is not an amqps:// URL")
        return None
    if given[KEY_FILE] is not None and given[CERT_FILE] is None:
        raise SettingsError(KEY_FILE, f"set without {CERT_FILE}")
    tls = AmqpTls(
        ca_file=_path(given[CA_FILE]),
        cert_file=_path(given[CERT_FILE]),
        key_file=_path(given[KEY_FILE]),
        server_name=given[SERVER_NAME],
    )
    tls.context()  # the files are usable, or SettingsError now
    return tls


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind a connection error (aiormq wraps it), or None."""
    seen: BaseException | None = exc
    for _ in range(5):  # bounded: a cause chain is short
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe_tls_error(error: ssl.SSLError) -> str:
    """What failed, in the library's words (a verification reason, never certificate bytes)."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)[:120]
    return str(error.reason or type(error).__name__)[:120]
