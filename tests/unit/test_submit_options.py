"""scribe-submit's provider options (issue 13, item 3): `--help` shows every default, one flag
(`--offline`) makes a fully offline job, and a combination no worker can serve is refused before
anything is published (exit 2), as the worker would refuse it at its door."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ops.cli_submit import EXIT_USAGE, UsageError, _parser, build_job, main
from tests.harness import write_wav

# A port nothing listens on: a test that reached the broker would fail, not pass.
UNREACHABLE_ENV = {"SCRIBE_AMQP_URL": "amqp://guest:guest@127.0.0.1:9/"}


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "visit.wav", seconds=1.0)


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "--transcriber {intron,invox,local} transcription provider (default: intron",
        "--summarizer {invox,intron,local,llm} summary provider (default: invox",
        "--note-provider {invox,local,llm} note provider, used with --template (default: invox",
        "(default: SUMMARY)",
        "(default: en)",
        "(default: get_summary)",
        "(default: 300.0)",
        "--offline",
    ):
        assert default in text, default


def test_defaults_are_the_job_schema_defaults(audio: Path) -> None:
    job = build_job(parse("--audio-file", str(audio)))
    assert (job.providers.transcriber, job.providers.summarizer, job.providers.note) == (
        "intron",
        "invox",
        "invox",
    )


def test_offline_is_one_flag(audio: Path) -> None:
    job = build_job(parse("--audio-file", str(audio), "--offline"))
    assert (job.providers.transcriber, job.providers.summarizer, job.providers.note) == (
        "local",
        "local",
        "local",
    )
    both = build_job(parse("--audio-file", str(audio), "--offline", "--summarizer", "local"))
    assert both.providers == job.providers


@pytest.mark.parametrize(
    "flag", [("--transcriber", "intron"), ("--summarizer", "llm"), ("--note-provider", "invox")]
)
def test_offline_with_a_vendor_provider_is_a_usage_error(
    audio: Path, flag: tuple[str, str]
) -> None:
    with pytest.raises(UsageError, match="--offline"):
        build_job(parse("--audio-file", str(audio), "--offline", *flag))


def test_intron_summary_needs_no_post_processing_flag(audio: Path) -> None:
    job = build_job(parse("--audio-file", str(audio), "--summarizer", "intron"))
    assert job.intron_post_processing == ("get_summary",)
    soap = build_job(
        parse(
            "--audio-file",
            str(audio),
            "--summarizer",
            "intron",
            "--intron-summary-source",
            "get_soap_note",
        )
    )
    assert soap.intron.summary_source == "get_soap_note"
    assert soap.intron_post_processing == ("get_soap_note",)


def test_incompatible_providers_are_refused_before_publishing(
    audio: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in UNREACHABLE_ENV.items():
        monkeypatch.setenv(name, value)
    argv = ["--audio-file", str(audio), "--transcriber", "invox", "--summarizer", "intron"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "incompatibleProviders" in err
    assert "providers.transcriber 'intron'" in err


def test_fhir_references_go_into_the_job(audio: Path) -> None:
    job = build_job(
        parse(
            "--audio-file",
            str(audio),
            "--fhir-patient",
            "Patient/123",
            "--fhir-practitioner",
            "Practitioner/dr.7",
            "--fhir-document-type",
            "34117-2",
        )
    )
    assert job.fhir is not None
    assert (job.fhir.patient, job.fhir.encounter, job.fhir.practitioner) == (
        "Patient/123",
        None,
        "Practitioner/dr.7",
    )
    assert job.fhir.document_type == "34117-2"
    assert build_job(parse("--audio-file", str(audio))).fhir is None


def test_a_malformed_fhir_reference_is_a_usage_error(audio: Path) -> None:
    with pytest.raises(UsageError) as raised:
        build_job(parse("--audio-file", str(audio), "--fhir-encounter", "Encounter/a b"))
    assert str(raised.value) == "invalid job: fhir.encounter: string_pattern_mismatch"
