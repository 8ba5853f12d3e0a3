"""SCRIBE_AMQP_* TLS settings fail at start, naming the variable (worker/amqp_tls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import SettingsError
from worker.settings import Settings

AMQPS = "amqps://guest:guest@localhost:5671/"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param(
            {"SCRIBE_AMQP_CA_FILE": "/etc/hostname"}, "SCRIBE_AMQP_CA_FILE", id="tls-beside-amqp"
        ),
        pytest.param(
            {"SCRIBE_AMQP_URL": AMQPS, "SCRIBE_AMQP_CA_FILE": "/nonexistent/ca.pem"},
            "SCRIBE_AMQP_CA_FILE",
            id="missing-ca",
        ),
        pytest.param(
            {"SCRIBE_AMQP_URL": AMQPS, "SCRIBE_AMQP_KEY_FILE": "/nonexistent/k.pem"},
            "SCRIBE_AMQP_KEY_FILE",
            id="key-without-cert",
        ),
        pytest.param(
            {"SCRIBE_AMQP_URL": AMQPS, "SCRIBE_AMQP_CERT_FILE": "/nonexistent/c.pem"},
            "SCRIBE_AMQP_CERT_FILE",
            id="missing-cert",
        ),
    ],
)
def test_a_bad_tls_setting_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SCRIBE_AMQP_URL": AMQPS, "SCRIBE_AMQP_CA_FILE": str(bogus)})
    assert caught.value.variable == "SCRIBE_AMQP_CA_FILE"


def test_amqps_without_a_ca_file_verifies_against_the_system_store() -> None:
    settings = Settings.from_env({"SCRIBE_AMQP_URL": AMQPS})
    context = settings.amqp_ssl_context()
    assert context is not None
    assert context.check_hostname
    assert Settings.from_env({}).amqp_ssl_context() is None
