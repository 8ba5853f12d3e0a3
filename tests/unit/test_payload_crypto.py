"""worker/payload_crypto.py: AES-256-GCM sealing of broker bodies, keys from settings, rotation."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from schemas.errors import ErrorType
from worker import constants as c
from worker.errors import SettingsError
from worker.payload_crypto import (
    STAGE_PURPOSE,
    PayloadCipher,
    PayloadKeys,
    PayloadUndecryptable,
    parse_keys,
    seal_headers,
)
from worker.settings import Settings

JOB_ID = "0b6f3a52-3c1e-4c55-9c39-8f3f3d7f0a11"
BODY = b'{"schemaVersion":1,"jobId":"%s","transcript":"chest pain"}' % JOB_ID.encode()


def key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def cipher(current: str | None, **keys: bytes) -> PayloadCipher:
    return PayloadCipher(PayloadKeys(keys, current))


def test_round_trip_hides_the_body_and_names_the_key() -> None:
    one = cipher("k1", k1=os.urandom(32))
    sealed, headers = one.seal(BODY, purpose=STAGE_PURPOSE, binding=JOB_ID)
    assert b"chest pain" not in sealed
    assert JOB_ID.encode() not in sealed
    assert headers == {c.HEADER_PAYLOAD_ENCRYPTION: "aes-256-gcm", c.HEADER_PAYLOAD_KEY_ID: "k1"}
    assert one.open(sealed, headers, purpose=STAGE_PURPOSE, binding=JOB_ID) == BODY
    again, _ = one.seal(BODY, purpose=STAGE_PURPOSE, binding=JOB_ID)
    assert again != sealed  # a fresh nonce every time


def test_a_body_without_seal_headers_passes_as_it_is() -> None:
    assert cipher("k1", k1=os.urandom(32)).open(BODY, {}, purpose="stage", binding=None) == BODY


def test_no_current_key_seals_nothing_but_still_opens() -> None:
    key = os.urandom(32)
    sealed, headers = cipher("k1", k1=key).seal(BODY, purpose="stage", binding=JOB_ID)
    reader = cipher(None, k1=key)
    assert reader.seal(BODY, purpose="stage", binding=JOB_ID) == (BODY, {})
    assert reader.open(sealed, headers, purpose="stage", binding=JOB_ID) == BODY


@pytest.mark.parametrize("where", ["body", "job", "purpose", "key id"])
def test_tampering_fails_the_tag(where: str) -> None:
    key = os.urandom(32)
    one = cipher("k1", k1=key, k2=key)
    sealed, headers = one.seal(BODY, purpose=STAGE_PURPOSE, binding=JOB_ID)
    binding, purpose = JOB_ID, STAGE_PURPOSE
    if where == "body":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif where == "job":
        binding = "1b6f3a52-3c1e-4c55-9c39-8f3f3d7f0a11"
    elif where == "purpose":
        purpose = c.EVENT_COMPLETED
    else:  # the same key under another id still fails: the id is bound too
        headers = {**headers, c.HEADER_PAYLOAD_KEY_ID: "k2"}
    with pytest.raises(PayloadUndecryptable) as caught:
        one.open(sealed, headers, purpose=purpose, binding=binding)
    assert caught.value.error_type == ErrorType.PAYLOAD_UNDECRYPTABLE
    assert "chest" not in caught.value.message


def test_an_unknown_key_id_or_scheme_is_named() -> None:
    sealed, headers = cipher("old", old=os.urandom(32)).seal(BODY, purpose="stage", binding=None)
    other = cipher("new", new=os.urandom(32))
    with pytest.raises(PayloadUndecryptable, match=r"'old'.*SCRIBE_PAYLOAD_KEYS"):
        other.open(sealed, headers, purpose="stage", binding=None)
    with pytest.raises(PayloadUndecryptable, match="unknown scheme"):
        other.open(sealed, {c.HEADER_PAYLOAD_ENCRYPTION: "rot13"}, purpose="stage", binding=None)
    with pytest.raises(PayloadUndecryptable, match="too short"):
        cipher("new", new=os.urandom(32)).open(
            b"x", {**headers, c.HEADER_PAYLOAD_KEY_ID: "new"}, purpose="stage", binding=None
        )


def test_rotation_opens_what_the_old_key_sealed() -> None:
    old, new = os.urandom(32), os.urandom(32)
    before = cipher("2026-01", **{"2026-01": old})
    sealed, headers = before.seal(BODY, purpose="stage", binding=JOB_ID)
    after = cipher("2026-02", **{"2026-01": old, "2026-02": new})
    assert after.open(sealed, headers, purpose="stage", binding=JOB_ID) == BODY
    resealed, new_headers = after.seal(BODY, purpose="stage", binding=JOB_ID)
    assert new_headers[c.HEADER_PAYLOAD_KEY_ID] == "2026-02"
    with pytest.raises(PayloadUndecryptable):
        before.open(resealed, new_headers, purpose="stage", binding=JOB_ID)


def test_seal_headers_keeps_only_the_seal() -> None:
    headers = {c.HEADER_PAYLOAD_KEY_ID: "k1", c.HEADER_PAYLOAD_ENCRYPTION: "aes-256-gcm", "x": 1}
    assert seal_headers(headers) == {
        c.HEADER_PAYLOAD_KEY_ID: "k1",
        c.HEADER_PAYLOAD_ENCRYPTION: "aes-256-gcm",
    }
    assert seal_headers(None) == {}


def test_settings_read_keys_from_the_variable_or_a_file(tmp_path: Path) -> None:
    one, two = key_text(), key_text()
    env = {"SCRIBE_PAYLOAD_KEYS": f"a:{one}, b:{two}", "SCRIBE_PAYLOAD_KEY_ID": "b"}
    keys = Settings.from_env(env).payload_keys
    assert keys is not None
    assert set(keys.keys) == {"a", "b"}
    assert keys.current == "b"
    assert not keys.encrypt_events
    assert one not in repr(keys)
    assert base64.b64decode(one) == keys.keys["a"]
    secret = tmp_path / "keys"
    secret.write_text(f"a:{one}\nb:{two}\n")
    env = {"SCRIBE_PAYLOAD_KEYS_FILE": str(secret), "SCRIBE_PAYLOAD_KEY_ID": "a"}
    env["SCRIBE_ENCRYPT_EVENTS"] = "on"
    from_file = Settings.from_env(env).payload_keys
    assert from_file is not None
    assert from_file.keys == keys.keys
    assert from_file.encrypt_events
    assert Settings.from_env({}).payload_keys is None


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"SCRIBE_PAYLOAD_KEYS": "k1:not base64!"}, "SCRIBE_PAYLOAD_KEYS", "base64"),
        (
            {"SCRIBE_PAYLOAD_KEYS": f"k1:{base64.b64encode(b'short').decode()}"},
            "SCRIBE_PAYLOAD_KEYS",
            "5 bytes",
        ),
        ({"SCRIBE_PAYLOAD_KEYS": "just-a-key"}, "SCRIBE_PAYLOAD_KEYS", "id:base64"),
        ({"SCRIBE_PAYLOAD_KEY_ID": "k9"}, "SCRIBE_PAYLOAD_KEY_ID", "not a key"),
        ({"SCRIBE_ENCRYPT_EVENTS": "on"}, "SCRIBE_ENCRYPT_EVENTS", "SCRIBE_PAYLOAD_KEY_ID"),
    ],
)
def test_bad_key_settings_fail_loudly_naming_the_variable(
    env: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert words in str(caught.value)


def test_a_duplicate_id_and_the_key_never_shown() -> None:
    text = key_text()
    with pytest.raises(SettingsError, match="twice") as caught:
        parse_keys(f"k1:{text},k1:{text}")
    assert text not in str(caught.value)
