"""Patient data encrypted in the broker (issue 19, item 7): AES-256-GCM over message bodies.

A body sealed here is `nonce (12 random bytes) || ciphertext || tag (16 bytes)`; its headers
say how (x-payload-encryption: aes-256-gcm) and with which key (x-payload-key-id). Everything
the broker and the tools route or count by stays in clear: the routing key, correlation_id,
x-error-type, x-stage, x-job-id, x-chunk, x-death and the counters.

The associated data binds a sealed body to where it belongs: the kind of message (a stage
message, or the event's routing key), the key id and the message's correlation_id (the jobId),
so a body cannot be moved into another job's message, nor an event's body into a stage queue,
without failing its tag.

Keys: SCRIBE_PAYLOAD_KEYS (or SCRIBE_PAYLOAD_KEYS_FILE) holds `id:base64-of-32-bytes` entries
separated by commas or newlines; SCRIBE_PAYLOAD_KEY_ID names the one new messages are sealed
with (unset: nothing is sealed, but sealed messages are still opened: the way to turn it off).
Every other id is kept to open what was sealed before a rotation. SCRIBE_ENCRYPT_EVENTS=on
seals the events to downstream consumers too (off by default: they need the keys to read them).
A body that cannot be opened raises PayloadUndecryptable (errorType payloadUndecryptable),
which the delivery rules dead-letter once, keeping the sealed bytes.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.errors import ErrorType
from worker import constants as c
from worker.errors import PermanentError, SettingsError

KEYS_VARIABLE = "SCRIBE_PAYLOAD_KEYS"
KEY_ID_VARIABLE = "SCRIBE_PAYLOAD_KEY_ID"
ENCRYPT_EVENTS_VARIABLE = "SCRIBE_ENCRYPT_EVENTS"

ALGORITHM = "aes-256-gcm"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# A stage message's kind in the associated data; an event's is its routing key.
STAGE_PURPOSE = "stage"
_AAD_VERSION = b"scribe-payload/1"
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
# A sealed body is refused before decryption past this (the codec's own limit plus the seal).
MAX_SEALED_BYTES = 32 * 1024 * 1024 + NONCE_BYTES + TAG_BYTES


class PayloadUndecryptable(PermanentError):
    """A sealed body that cannot be opened; the message says why without quoting it."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.PAYLOAD_UNDECRYPTABLE, message)


@dataclass(frozen=True, repr=False)
class PayloadKeys:
    """Key id -> 32-byte key; current: the id new bodies are sealed with (None: none are)."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    current: str | None = None
    encrypt_events: bool = False

    def __repr__(self) -> str:
        return f"PayloadKeys(ids={sorted(self.keys)!r}, current={self.current!r}, ...)"


def parse_keys(text: str) -> dict[str, bytes]:
    """`id:base64,id:base64` (commas or newlines) as a mapping; SettingsError naming
    SCRIBE_PAYLOAD_KEYS and the entry's id (never the key) for anything malformed."""
    keys: dict[str, bytes] = {}
    for number, entry in enumerate(re.split(r"[,\n]", text), start=1):
        entry = entry.strip()
        if not entry:
            continue
        key_id, colon, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not colon or not KEY_ID.fullmatch(key_id):
            raise SettingsError(
                KEYS_VARIABLE,
                f"entry {number} is not id:base64 with an id of letters, digits, '.', '_', '-'",
            )
        try:
            key = binascii.a2b_base64(encoded.strip(), strict_mode=True)
        except binascii.Error as exc:
            raise SettingsError(KEYS_VARIABLE, f"key {key_id!r} is not valid base64") from exc
        if len(key) != KEY_BYTES:
            raise SettingsError(
                KEYS_VARIABLE, f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if key_id in keys:
            raise SettingsError(KEYS_VARIABLE, f"key {key_id!r} is given twice")
        keys[key_id] = key
    return keys


def read_payload_keys(
    keys_text: str | None, current: str | None, encrypt_events: bool
) -> PayloadKeys | None:
    """The settings' payload keys (worker/settings.py reads the variables, the _FILE too);
    None when none of the variables is set."""
    if keys_text is None and current is None and not encrypt_events:
        return None
    keys = parse_keys(keys_text) if keys_text is not None else {}
    if current is not None and current not in keys:
        raise SettingsError(KEY_ID_VARIABLE, f"{current[:40]!r} is not a key of {KEYS_VARIABLE}")
    if encrypt_events and current is None:
        raise SettingsError(ENCRYPT_EVENTS_VARIABLE, f"needs {KEY_ID_VARIABLE} (the key to use)")
    return PayloadKeys(keys, current, encrypt_events)


def is_sealed(headers: Mapping[str, Any] | None) -> bool:
    return bool(headers) and headers is not None and c.HEADER_PAYLOAD_ENCRYPTION in headers


def seal_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The seal headers of a consumed message, to go with its sealed bytes when they are
    passed on unopened (a dead letter whose key is unknown here)."""
    if not headers:
        return {}
    return {
        name: headers[name]
        for name in (c.HEADER_PAYLOAD_ENCRYPTION, c.HEADER_PAYLOAD_KEY_ID)
        if name in headers
    }


def _associated_data(purpose: str, key_id: str, binding: str | None) -> bytes:
    return b"\n".join((_AAD_VERSION, purpose.encode(), key_id.encode(), (binding or "").encode()))


class PayloadCipher:
    """Seals with the current key and opens with any configured one."""

    def __init__(self, keys: PayloadKeys | None) -> None:
        keys = keys or PayloadKeys()
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}
        self.current = keys.current
        self.encrypt_events = keys.encrypt_events

    @property
    def seals(self) -> bool:
        return self.current is not None

    def seal(
        self, body: bytes, *, purpose: str, binding: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """body sealed with the current key, and the headers that say so; unchanged and no
        headers when no key is current."""
        if self.current is None:
            return body, {}
        nonce = os.urandom(NONCE_BYTES)
        aad = _associated_data(purpose, self.current, binding)
        sealed = nonce + self._ciphers[self.current].encrypt(nonce, body, aad)
        headers = {
            c.HEADER_PAYLOAD_ENCRYPTION: ALGORITHM,
            c.HEADER_PAYLOAD_KEY_ID: self.current,
        }
        return sealed, headers

    def open(
        self,
        body: bytes,
        headers: Mapping[str, Any] | None,
        *,
        purpose: str,
        binding: str | None,
    ) -> bytes:
        """The plaintext of a sealed body (a body without seal headers as it is), or
        PayloadUndecryptable saying why: unknown scheme, unknown key id, or a failed tag."""
        if not is_sealed(headers):
            return body
        assert headers is not None
        algorithm = headers.get(c.HEADER_PAYLOAD_ENCRYPTION)
        if algorithm != ALGORITHM:
            raise PayloadUndecryptable(f"the body is sealed by an unknown scheme (not {ALGORITHM})")
        key_id = headers.get(c.HEADER_PAYLOAD_KEY_ID)
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise PayloadUndecryptable(f"the sealed body has no readable {c.HEADER_PAYLOAD_KEY_ID}")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadUndecryptable(
                f"the body is sealed with key {key_id!r}, which {KEYS_VARIABLE} does not hold"
            )
        if not NONCE_BYTES + TAG_BYTES <= len(body) <= MAX_SEALED_BYTES:
            raise PayloadUndecryptable("the sealed body is too short or too long")
        aad = _associated_data(purpose, key_id, binding)
        try:
            return cipher.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], aad)
        except InvalidTag:
            raise PayloadUndecryptable(
                f"the sealed body fails its tag under key {key_id!r} (another key with that id, "
                "or the body, its jobId or its kind altered)"
            ) from None
