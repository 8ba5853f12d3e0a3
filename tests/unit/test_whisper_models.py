"""The shipped Whisper models (SHA-256 of the installed files), SCRIBE_LOCAL_ASR_* parsing, and how
a job's language and the vocabulary prompt are chosen (worker/providers/whisper_models.py)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ErrorType
from schemas.jobs import JobRequest
from worker import constants as c
from worker.errors import PermanentError, SettingsError
from worker.providers import whisper_models
from worker.providers.factory import local_asr_installed
from worker.settings import Settings

# Every file each model is made of, as the installed wheels hold them (pip checks the wheel's
# RECORD; this pins the content we measured, whatever index served it).
PINNED: dict[str, dict[str, str]] = {
    "tiny.en": {
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    },
    "base": {
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    },
}
# The two parts joined: the model.bin CTranslate2 is given.
BASE_MODEL_BIN = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("model", c.LOCAL_ASR_MODELS)
def test_the_installed_model_files_are_the_pinned_ones(model: c.LocalAsrModel) -> None:
    if not local_asr_installed(model):
        pytest.skip("needs the 'local' extra")
    found = {p.name: sha256(p) for p in whisper_models.model_paths(model)}
    assert found == PINNED[model]


def test_the_base_parts_join_into_the_pinned_model() -> None:
    if not local_asr_installed("base"):
        pytest.skip("needs the 'local' extra")
    digest = hashlib.sha256()
    parts = [p for p in whisper_models.model_paths("base") if p.name.startswith("model.bin.")]
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    for part in parts:
        digest.update(part.read_bytes())
    assert digest.hexdigest() == BASE_MODEL_BIN


def test_every_offered_model_has_a_spec_and_the_default_is_offered() -> None:
    assert set(whisper_models.MODELS) == set(c.LOCAL_ASR_MODELS)
    assert c.DEFAULT_LOCAL_ASR_MODEL in c.LOCAL_ASR_MODELS
    assert not whisper_models.MODELS["tiny.en"].multilingual
    assert whisper_models.MODELS["base"].multilingual


def test_a_missing_model_package_is_provider_not_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = whisper_models.ModelSpec(
        packages=("no_such_model_package",), folder="x", multilingual=True
    )
    monkeypatch.setitem(whisper_models.MODELS, "base", spec)
    with pytest.raises(PermanentError) as caught:
        whisper_models.package_dirs("base")
    assert caught.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    assert "no-such-model-package" in str(caught.value)
    assert not local_asr_installed("base")


# --- settings --------------------------------------------------------------------------------


def test_asr_defaults() -> None:
    local = Settings.from_env({}).local
    assert local.asr_model == c.DEFAULT_LOCAL_ASR_MODEL
    assert local.asr_vad is True
    assert local.asr_prompt is None
    assert local.asr_beam_size == c.DEFAULT_LOCAL_ASR_BEAM_SIZE


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"SCRIBE_LOCAL_ASR_MODEL": "tiny.en"}, "asr_model", "tiny.en"),
        ({"SCRIBE_LOCAL_ASR_MODEL": " BASE "}, "asr_model", "base"),
        ({"SCRIBE_LOCAL_ASR_BEAM_SIZE": "1"}, "asr_beam_size", 1),
        ({"SCRIBE_LOCAL_ASR_VAD": "off"}, "asr_vad", False),
        ({"SCRIBE_LOCAL_ASR_VAD": "ON"}, "asr_vad", True),
        ({"SCRIBE_LOCAL_ASR_VAD": "0"}, "asr_vad", False),
        ({"SCRIBE_LOCAL_ASR_PROMPT": "none"}, "asr_prompt", None),
        ({"SCRIBE_LOCAL_ASR_PROMPT": "Clinical"}, "asr_prompt", "clinical"),
        ({"SCRIBE_LOCAL_ASR_PROMPT": "Dermatology clinic."}, "asr_prompt", "Dermatology clinic."),
    ],
)
def test_asr_settings_parse(env: dict[str, str], field: str, expected: Any) -> None:
    assert getattr(Settings.from_env(env).local, field) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCRIBE_LOCAL_ASR_MODEL", "large-v3"),
        ("SCRIBE_LOCAL_ASR_MODEL", "small"),
        ("SCRIBE_LOCAL_ASR_VAD", "maybe"),
        ("SCRIBE_LOCAL_ASR_BEAM_SIZE", "0"),
        ("SCRIBE_LOCAL_ASR_BEAM_SIZE", "wide"),
        ("SCRIBE_LOCAL_ASR_PROMPT", "x" * (c.LOCAL_ASR_PROMPT_MAX_CHARS + 1)),
        ("SCRIBE_LOCAL_ASR_PROMPT", "two\nlines"),
    ],
)
def test_bad_asr_settings_fail_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert variable in str(caught.value)


# --- language and prompt ---------------------------------------------------------------------


def job(note_language: str | None = None, output_language: str | None = None) -> JobRequest:
    body: dict[str, Any] = {"jobId": str(uuid.uuid4()), "audio": {"path": "/x.wav"}}
    if note_language is not None:
        body["noteLanguage"] = note_language
    if output_language is not None:
        body["summary"] = {"outputLanguage": output_language}
    return JobRequest.model_validate(body)


@pytest.mark.parametrize(
    ("note_language", "output_language", "expected"),
    [
        (None, None, "en"),
        ("es", None, "es"),
        ("ca", "en", "ca"),
        ("pt-BR", None, "pt"),
        ("pt-PT", "es", "pt"),
        (None, "es", "es"),
        (None, "pt-BR", "pt"),
        (None, "fr", None),  # not a job language: the multilingual model detects it
        ("en", "fr", "en"),
    ],
)
def test_the_multilingual_model_takes_the_jobs_language(
    note_language: str | None, output_language: str | None, expected: str | None
) -> None:
    assert whisper_models.spoken_language(job(note_language, output_language), "base") == expected


@pytest.mark.parametrize(("note_language", "output_language"), [("es", None), (None, "ca")])
def test_the_english_model_refuses_another_language(
    note_language: str | None, output_language: str | None
) -> None:
    with pytest.raises(PermanentError) as caught:
        whisper_models.spoken_language(job(note_language, output_language), "tiny.en")
    assert caught.value.error_type == ErrorType.INVALID_LANGUAGE
    assert "SCRIBE_LOCAL_ASR_MODEL" in str(caught.value)


def test_the_english_model_serves_english_and_unknown_languages() -> None:
    assert whisper_models.spoken_language(job(), "tiny.en") == "en"
    assert whisper_models.spoken_language(job(None, "fr"), "tiny.en") == "en"


def test_the_clinical_prompt_is_for_english_only() -> None:
    clinical = c.LOCAL_ASR_PROMPT_CLINICAL
    assert whisper_models.initial_prompt(clinical, "en") == whisper_models.CLINICAL_PROMPT
    assert "ibuprofen" in whisper_models.CLINICAL_PROMPT.lower()
    assert whisper_models.initial_prompt(clinical, "es") is None
    assert whisper_models.initial_prompt(clinical, None) is None
    assert whisper_models.initial_prompt(None, "en") is None
    assert whisper_models.initial_prompt("Cardiology.", "es") == "Cardiology."
