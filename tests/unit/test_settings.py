from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import SettingsError
from worker.settings import Secret, Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.prefix == "scribe"
    assert settings.invox.api_version == "2026-03-01"
    assert settings.intron.base_url == "https://infer.intron.health"
    assert settings.stages == ("transcribe", "poll", "summarize", "note")
    assert settings.retry.delay_tiers_ms == (1_000, 5_000, 30_000, 120_000, 600_000)
    assert not settings.invox.configured


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCRIBE_AMQP_URL", "http://127.0.0.1"),
        ("SCRIBE_PREFIX", "bad prefix!"),
        ("SCRIBE_INTRON_BASE_URL", "not a url"),
        ("SCRIBE_INVOX_BASE_URL", "ftp://example"),
        ("SCRIBE_INVOX_API_VERSION", "v2"),
        ("SCRIBE_INVOX_TOKEN_URL", "https://auth.example/token"),
        ("SCRIBE_MAX_ATTEMPTS", "0"),
        ("SCRIBE_MAX_ATTEMPTS", "three"),
        ("SCRIBE_DELAY_TIERS_MS", "100,-5"),
        ("SCRIBE_DELAY_TIERS_MS", "soon"),
        ("SCRIBE_POLL_DEADLINE_S", "-1"),
        ("SCRIBE_HTTP_TIMEOUT_S", "0"),
        ("SCRIBE_MAX_VENDOR_RESPONSE_BYTES", "100"),
        ("SCRIBE_MAX_VENDOR_RESPONSE_BYTES", "32MiB"),
        ("SCRIBE_STAGES", "transcribe,cook"),
        ("SCRIBE_STAGES", "none"),
        ("SCRIBE_STAGE_EVENTS", "poll,everything"),
        ("SCRIBE_PREFETCH_POLL", "0"),
        ("SCRIBE_LOG_LEVEL", "loud"),
        ("SCRIBE_STORAGE_ROOT", "/definitely/not/here"),
        ("SCRIBE_REDIS_URL", "http://127.0.0.1:6379"),
        ("SCRIBE_INTRON_STATUS_PATH", "/file/v1/status"),
        ("SCRIBE_INTRON_API_KEY_FILE", "/definitely/not/here"),
    ],
)
def test_bad_value_fails_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(variable.removesuffix("_FILE"))


def test_token_url_without_app_credentials_names_the_token_url() -> None:
    with pytest.raises(SettingsError, match="SCRIBE_INVOX_TOKEN_URL"):
        Settings.from_env({"SCRIBE_INVOX_TOKEN_URL": "https://auth.example/token"})


def test_secrets_come_from_files_and_never_print(tmp_path: Path) -> None:
    key_file = tmp_path / "intron.key"
    key_file.write_text("file-secret-value\n")
    settings = Settings.from_env(
        {
            "SCRIBE_INTRON_API_KEY_FILE": str(key_file),
            "SCRIBE_INVOX_BASE_URL": "https://api.invox.example",
            "SCRIBE_INVOX_ACCESS_TOKEN": "env-secret-value",
        }
    )
    assert settings.intron.api_key == Secret("file-secret-value")
    assert settings.invox.configured
    printed = repr(settings) + str(settings)
    assert "file-secret-value" not in printed
    assert "env-secret-value" not in printed
    assert "guest:guest" not in printed


def test_stages_and_per_stage_prefetch() -> None:
    settings = Settings.from_env(
        {"SCRIBE_STAGES": "poll, summarize", "SCRIBE_PREFETCH": "4", "SCRIBE_PREFETCH_POLL": "64"}
    )
    assert settings.stages == ("poll", "summarize")
    assert settings.prefetch == {"poll": 64, "summarize": 4}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, {"transcribe", "poll", "summarize", "note"}), ("none", set()), ("note", {"note"})],
)
def test_stage_events(value: str | None, expected: set[str]) -> None:
    env = {} if value is None else {"SCRIBE_STAGE_EVENTS": value}
    assert Settings.from_env(env).stage_events == expected


def test_delay_tiers_are_sorted_and_deduplicated() -> None:
    settings = Settings.from_env({"SCRIBE_DELAY_TIERS_MS": "500,100,500,2000"})
    assert settings.retry.delay_tiers_ms == (100, 500, 2000)


def test_allowlist_is_lower_cased() -> None:
    settings = Settings.from_env({"SCRIBE_URL_ALLOWLIST": "LocalHost, 127.0.0.1 ,"})
    assert settings.url_allowlist == frozenset({"localhost", "127.0.0.1"})


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("SCRIBE_HTTP_PORT", "99999", "<= 65535"),
        ("SCRIBE_HTTP_PORT", "-1", ">= 0"),
        ("SCRIBE_RATE_LIMITS", "intron.uplaod=30", "unknown endpoint 'intron.uplaod'"),
        ("SCRIBE_RATE_LIMITS", "openai.summary=5,intron.status=100", "unknown endpoint"),
        ("SCRIBE_URL_ALLOWLIST", "sandbox;127.0.0.1", "'sandbox;127.0.0.1' is not a host"),
        ("SCRIBE_URL_ALLOWLIST", "sandbox 127.0.0.1", "separate hosts with commas"),
        ("SCRIBE_URL_ALLOWLIST", "https://sandbox:8000", "is not a host"),
    ],
)
def test_values_once_accepted_silently_are_refused(variable: str, value: str, problem: str) -> None:
    """A port bind() cannot take, a misspelt rate-limit endpoint (its limit would never apply)
    and an allow-list split on something other than commas (no host would match) stop the
    worker at start, naming the variable and the problem."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(variable)
    assert problem in str(caught.value)


def test_every_rate_limited_endpoint_is_accepted() -> None:
    """The endpoint names SCRIBE_RATE_LIMITS accepts are exactly those the vendor clients use."""
    import worker.providers.intron
    import worker.providers.invox
    import worker.providers.invox_auth
    import worker.providers.llm
    from worker.constants import RATE_LIMIT_ENDPOINTS

    used = {
        value
        for module in (
            worker.providers.intron,
            worker.providers.invox,
            worker.providers.invox_auth,
            worker.providers.llm,
        )
        for name, value in vars(module).items()
        if name.endswith("_ENDPOINT") and isinstance(value, str)
    }
    assert set(RATE_LIMIT_ENDPOINTS) == used
    text = ",".join(f"{endpoint}=7" for endpoint in sorted(used))
    assert Settings.from_env({"SCRIBE_RATE_LIMITS": text}).rate_limits_per_min == dict.fromkeys(
        used, 7
    )


def test_allowlist_takes_names_and_addresses() -> None:
    settings = Settings.from_env(
        {"SCRIBE_URL_ALLOWLIST": "sandbox, my_service.internal ,::1,127.0.0.1,host-1.example."}
    )
    assert settings.url_allowlist == frozenset(
        {"sandbox", "my_service.internal", "::1", "127.0.0.1", "host-1.example."}
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "reupload"), ("dead-letter", "dead-letter"), ("REUPLOAD", "reupload")],
)
def test_intron_redelivery_policy(value: str | None, expected: str) -> None:
    env = {} if value is None else {"SCRIBE_INTRON_REDELIVERY": value}
    assert Settings.from_env(env).intron.redelivery == expected


def test_an_unknown_intron_redelivery_policy_is_refused_by_name() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SCRIBE_INTRON_REDELIVERY": "ask"})
    assert "SCRIBE_INTRON_REDELIVERY" in str(info.value)
    assert "dead-letter" in str(info.value)
