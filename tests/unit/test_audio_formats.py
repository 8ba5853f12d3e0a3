"""The accepted audio formats, made here with FFmpeg's encoders (tests/audio_files.py): each is
measured right, a truncated or corrupt file is refused as unsupportedAudio, the content and not
the name decides, the job maximum refuses, a transcriber's limit asks for chunking, and a vendor
that takes only WAV gets a WAV."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import aiohttp
import av
import pytest

from ops import audio_speed
from schemas.errors import ErrorType
from schemas.jobs import AudioRef
from tests.audio_files import FORMATS, encode
from worker.audio import (
    AudioInfo,
    ChunkingRequired,
    TranscriberLimits,
    convert,
    decode_pcm,
    iter_pcm,
    needs_chunking,
    needs_conversion,
    probe_audio,
    sniff_container,
)
from worker.errors import PermanentError, SettingsError
from worker.media import FetchPolicy, MediaFetcher
from worker.settings import AudioSettings, Settings

SECONDS = 3.0
# Encoders pad: AAC's priming frames, Opus's pre-skip, an MP3 frame of 1152 samples.
TOLERANCE_S = 0.08
INTRON = AudioSettings().limits()["intron"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    return {
        name: encode(folder / f"tone.{ext}", name, SECONDS)
        for name, (_muxer, _codec, ext, _rate) in FORMATS.items()
    }


def _refusal(path: Path) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        probe_audio(path)
    assert str(path) not in caught.value.message
    assert path.name not in caught.value.message
    return caught.value


@pytest.mark.parametrize("container", list(FORMATS))
def test_each_format_is_read_with_its_duration(recordings: dict[str, Path], container: str) -> None:
    info = probe_audio(recordings[container])
    assert info.container == container
    assert info.duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert info.sample_rate == FORMATS[container][3]
    assert info.channels == 1
    assert info.size_bytes == recordings[container].stat().st_size


@pytest.mark.parametrize("container", list(FORMATS))
def test_each_format_decodes_to_its_length_of_pcm(
    recordings: dict[str, Path], container: str
) -> None:
    pcm = decode_pcm(recordings[container], 16_000)
    assert len(pcm) / 32_000 == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert any(pcm[i] for i in range(0, len(pcm), 97))  # not silence


def test_stereo_is_read_as_two_channels_and_decoded_to_mono(tmp_path: Path) -> None:
    path = encode(tmp_path / "stereo.m4a", "m4a", 2.0, channels=2)
    assert probe_audio(path).channels == 2
    assert len(decode_pcm(path)) / 32_000 == pytest.approx(2.0, abs=TOLERANCE_S)


# A truncated Ogg or ADTS stream ending on a page or frame boundary is a shorter, valid
# recording: neither container states a length to fall short of.
@pytest.mark.parametrize("container", ["wav", "flac", "mp3", "m4a", "webm"])
def test_a_truncated_file_is_refused(
    recordings: dict[str, Path], container: str, tmp_path: Path
) -> None:
    whole = recordings[container].read_bytes()
    cut = tmp_path / f"cut-{recordings[container].name}"
    cut.write_bytes(whole[: len(whole) // 2])
    assert _refusal(cut).error_type == ErrorType.UNSUPPORTED_AUDIO


def test_a_browser_webm_without_a_duration_is_measured_from_its_packets(tmp_path: Path) -> None:
    path = encode(tmp_path / "browser.webm", "webm", SECONDS, options={"live": "1"})
    with av.open(str(path)) as media:
        assert media.duration is None  # nothing declared: only the packets can tell
    assert probe_audio(path).duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)


def test_a_truncated_m4a_with_its_index_first_is_refused(tmp_path: Path) -> None:
    """The moov box first (faststart) opens fine; its samples end halfway."""
    path = encode(tmp_path / "fast.m4a", "m4a", SECONDS, options={"movflags": "+faststart"})
    assert probe_audio(path).duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert _refusal(path).error_type == ErrorType.UNSUPPORTED_AUDIO


@pytest.mark.parametrize("container", list(FORMATS))
def test_a_corrupt_file_is_refused(
    recordings: dict[str, Path], container: str, tmp_path: Path
) -> None:
    """The format's first bytes, then noise: the container may open, no frame decodes."""
    head = recordings[container].read_bytes()[:12]
    noise = random.Random(container).randbytes(20_000)
    bad = tmp_path / f"bad-{recordings[container].name}"
    bad.write_bytes(head + noise)
    assert _refusal(bad).error_type == ErrorType.UNSUPPORTED_AUDIO


@pytest.mark.parametrize(
    "content",
    [b"", b"not audio at all", random.Random("noise").randbytes(4096), b"%PDF-1.7\n" + b"x" * 100],
    ids=["empty", "text", "random", "pdf"],
)
def test_what_is_no_accepted_format_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.wav"
    path.write_bytes(content)
    assert _refusal(path).error_type == ErrorType.UNSUPPORTED_AUDIO


def test_a_renamed_file_is_read_by_its_content(recordings: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "visit.mp3"
    renamed.write_bytes(recordings["wav"].read_bytes())
    info = probe_audio(renamed)
    assert (info.container, info.codec, info.mime_type) == ("wav", "pcm_s16le", "audio/wav")
    opus_as_wav = tmp_path / "visit.wav"
    opus_as_wav.write_bytes(recordings["webm"].read_bytes())
    assert probe_audio(opus_as_wav).container == "webm"


def test_sniffing_tells_mp3_from_adts_aac(recordings: dict[str, Path]) -> None:
    for container in ("mp3", "aac"):
        assert sniff_container(recordings[container].read_bytes()[:64]) == container


def test_reading_is_bounded_in_time_and_size(recordings: dict[str, Path]) -> None:
    with pytest.raises(PermanentError) as slow:
        decode_pcm(recordings["webm"], timeout_s=-1.0)
    assert slow.value.error_type == ErrorType.UNSUPPORTED_AUDIO
    with pytest.raises(PermanentError) as large:
        decode_pcm(recordings["webm"], max_bytes=32_000)
    assert large.value.error_type == ErrorType.UNSUPPORTED_AUDIO
    with pytest.raises(PermanentError) as long:
        list(iter_pcm(recordings["flac"], max_duration_s=1.0))
    assert long.value.error_type == ErrorType.UNSUPPORTED_AUDIO


@pytest.mark.parametrize("container", ["webm", "m4a", "mp3"])
def test_a_range_converts_to_the_same_bytes_every_time(
    recordings: dict[str, Path], container: str, tmp_path: Path
) -> None:
    """What a chunker relies on: the same file and range give the same chunk."""
    digests = set()
    for attempt in range(2):
        out = tmp_path / f"range-{attempt}.wav"
        info = convert(recordings[container], out, start_s=1.5, duration_s=1.0)
        assert info.duration_s == pytest.approx(1.0, abs=0.001)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_conversion_writes_16_khz_mono_in_the_target_format(
    recordings: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"converted.{fmt}"
    written = convert(recordings["webm"], out, fmt)  # type: ignore[arg-type]
    info = probe_audio(out)
    assert info.container == fmt == written.container
    assert (info.sample_rate, info.channels) == (16_000, 1)
    assert info.duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert needs_conversion(info, INTRON) == (fmt != "wav")  # Intron takes WAV unless told


def _info(duration_s: float, size_bytes: int, container: str = "wav") -> AudioInfo:
    return AudioInfo(duration_s, container, "pcm_s16le", 16_000, 1, size_bytes)  # type: ignore[arg-type]


def test_intron_limits_decide_chunking_and_conversion() -> None:
    assert INTRON.max_duration_s == 600.0
    assert INTRON.max_bytes == 100 * 1024 * 1024
    assert not needs_chunking(_info(600.0, 19_200_044), INTRON)
    assert needs_chunking(_info(601.0, 19_232_044), INTRON)
    assert needs_chunking(_info(2400.0, 5_000_000, "webm"), INTRON)
    # Ten minutes of 48 kHz stereo WAV is over 100 MB, but fits once converted.
    big = _info(600.0, 115_200_044)
    assert not needs_chunking(big, INTRON)
    assert needs_conversion(big, INTRON)
    assert needs_conversion(_info(60.0, 500_000, "webm"), INTRON)
    assert not needs_conversion(_info(60.0, 1_920_044), INTRON)
    local = AudioSettings().limits()["local"]
    assert not needs_chunking(_info(7200.0, 10**9, "webm"), local)
    assert not needs_conversion(_info(60.0, 500_000, "webm"), local)


async def _prepared(
    root: Path,
    path: Path,
    transcriber: str | None,
    *,
    max_job_s: float = 7200.0,
    limits: dict[str, TranscriberLimits] | None = None,
) -> tuple[AudioInfo, Path, str, str | None, bool] | PermanentError:
    """What MediaFetcher.audio hands the provider: its probe, path, MIME type, URL and whether
    the file existed for the provider; or the refusal."""
    policy = FetchPolicy(allowlist=frozenset(), storage_root=root, timeout_s=5)
    async with aiohttp.ClientSession() as session:
        fetcher = MediaFetcher(
            session, policy, 10**8, max_job_s, 10**6, limits=limits or AudioSettings().limits()
        )
        try:
            async with fetcher.audio(AudioRef(path=str(path)), transcriber) as audio:
                assert audio.info is not None
                if transcriber is not None:
                    fetcher.require_one_upload(audio, transcriber)
                found = (audio.info, audio.path, audio.mime_type, audio.source_url)
                return (*found, audio.path.is_file())
        except PermanentError as exc:
            return exc


async def test_a_webm_is_converted_to_wav_for_intron(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "visit.webm"
    source.write_bytes(recordings["webm"].read_bytes())
    prepared = await _prepared(tmp_path, source, "intron")
    assert not isinstance(prepared, PermanentError)
    info, path, mime, url, existed = prepared
    assert existed
    assert (path.name, url) == ("visit.wav", None)
    assert (info.container, info.sample_rate, info.channels, mime) == (
        "wav",
        16_000,
        1,
        "audio/wav",
    )
    assert probe_audio(source).container == "webm"  # the job's file is left as it was
    assert not path.exists()  # the converted copy is gone with the stage


@pytest.mark.parametrize("transcriber", ["local", None])
async def test_a_webm_goes_as_it_is_where_it_is_taken(
    recordings: dict[str, Path], tmp_path: Path, transcriber: str | None
) -> None:
    source = tmp_path / "visit.webm"
    source.write_bytes(recordings["webm"].read_bytes())
    prepared = await _prepared(tmp_path, source, transcriber)
    assert not isinstance(prepared, PermanentError)
    info, path, mime, _url, _existed = prepared
    assert (path, info.container, mime) == (source, "webm", "audio/webm")


async def test_audio_over_the_job_maximum_is_refused(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "visit.ogg"
    source.write_bytes(recordings["ogg"].read_bytes())
    refused = await _prepared(tmp_path, source, "local", max_job_s=2.0)
    assert isinstance(refused, PermanentError)
    assert refused.error_type == ErrorType.AUDIO_TOO_LONG
    assert not isinstance(refused, ChunkingRequired)


async def test_audio_over_the_transcribers_limit_asks_for_chunking(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    """Within the job maximum, over what the transcriber takes: not converted, and the stage's
    check raises ChunkingRequired (an audioTooLong until chunking takes it)."""
    source = tmp_path / "visit.m4a"
    source.write_bytes(recordings["m4a"].read_bytes())
    short = {"intron": TranscriberLimits(2.0, 100 * 1024 * 1024, frozenset({"wav"}))}
    refused = await _prepared(tmp_path, source, "intron", limits=short)
    assert isinstance(refused, ChunkingRequired)
    assert refused.error_type == ErrorType.AUDIO_TOO_LONG
    assert refused.info.container == "m4a"  # handed over unconverted, for the chunker
    assert refused.transcriber == "intron"
    assert str(source) not in refused.message


async def test_a_truncated_upload_is_refused_before_any_vendor(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    whole = recordings["mp3"].read_bytes()
    cut = tmp_path / "visit.mp3"
    cut.write_bytes(whole[: len(whole) // 3])
    refused = await _prepared(tmp_path, cut, "intron")
    assert isinstance(refused, PermanentError)
    assert refused.error_type == ErrorType.UNSUPPORTED_AUDIO


def test_the_audio_settings_and_their_defaults() -> None:
    defaults = Settings.from_env({})
    assert defaults.audio.max_job_s == 7200.0
    assert defaults.max_audio_bytes == 512 * 1024 * 1024
    limits = defaults.audio.limits()
    assert (limits["invox"].max_duration_s, limits["invox"].formats) == (3600.0, frozenset({"wav"}))
    assert (limits["local"].max_duration_s, limits["local"].max_bytes) == (None, None)
    chosen = Settings.from_env(
        {
            "SCRIBE_MAX_JOB_AUDIO_S": "3600",
            "SCRIBE_INVOX_MAX_AUDIO_S": "900",
            "SCRIBE_INTRON_AUDIO_FORMATS": "MP3, flac",
        }
    ).audio
    assert chosen.max_job_s == 3600.0
    assert chosen.limits()["invox"].max_duration_s == 900.0
    assert chosen.limits()["intron"].formats == frozenset({"mp3", "flac", "wav"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCRIBE_MAX_AUDIO_DURATION_S", "600"),  # replaced: silently ignoring it would surprise
        ("SCRIBE_INTRON_AUDIO_FORMATS", "wav,aiff"),
        ("SCRIBE_INVOX_AUDIO_FORMATS", ","),
        ("SCRIBE_MAX_JOB_AUDIO_S", "0"),
        ("SCRIBE_INVOX_MAX_AUDIO_S", "soon"),
    ],
)
def test_a_wrong_audio_setting_stops_the_worker_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)


def test_the_speed_program_prints_a_line_per_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert audio_speed.main(["--minutes", "0.05", "--formats", "webm,flac"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["format"] for line in lines] == ["webm", "flac"]
    assert all(line["probed_duration_s"] == pytest.approx(3.0, abs=0.05) for line in lines)


def test_probing_stops_reading_past_a_maximum(recordings: dict[str, Path]) -> None:
    """What the fetcher asks for just past the job maximum: such audio is refused anyway."""
    stopped = probe_audio(recordings["webm"], max_duration_s=1.0)
    assert 1.0 <= stopped.duration_s < SECONDS - 1.0
