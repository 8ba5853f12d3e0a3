"""The fetch policy for URLs and paths the worker reads itself, and the audio limits."""

from __future__ import annotations

import ipaddress
import os
import wave
from pathlib import Path

import aiohttp
import av
import pytest
from aiohttp import web

from schemas.errors import ErrorType
from schemas.jobs import AudioRef
from worker.audio import probe_audio, wav_duration_s
from worker.errors import PermanentError
from worker.media import (
    FetchPolicy,
    MediaFetcher,
    PolicyResolver,
    check_url,
    fetch_session,
)

OPEN = FetchPolicy(allowlist=frozenset(), storage_root=None, timeout_s=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.wav",  # plain http to a host not allow-listed
        "ftp://example.com/a.wav",
        "file:///etc/passwd",
        "https://127.0.0.1/a.wav",
        "https://localhost/a.wav",
        "https://10.0.0.8/a.wav",
        "https://192.168.1.1/a.wav",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.wav",
    ],
)
async def test_refused_urls(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        await check_url(url, OPEN, ErrorType.AUDIO_UNAVAILABLE)
    assert caught.value.error_type == ErrorType.URL_NOT_ALLOWED
    assert url not in caught.value.message


async def test_allowlisted_loopback_is_accepted() -> None:
    policy = FetchPolicy(allowlist=frozenset({"127.0.0.1"}), storage_root=None, timeout_s=5)
    await check_url("http://127.0.0.1:8080/a.wav", policy, ErrorType.AUDIO_UNAVAILABLE)


def _wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(seconds * 8000))
    return path


async def _prepare(root: Path, ref: AudioRef, **limits: float) -> tuple[str, float] | ErrorType:
    policy = FetchPolicy(allowlist=frozenset(), storage_root=root, timeout_s=5)
    async with aiohttp.ClientSession() as session:
        fetcher = MediaFetcher(
            session,
            policy,
            int(limits.get("max_bytes", 10**8)),
            limits.get("max_s", 600.0),
            10**6,
        )
        try:
            async with fetcher.audio(ref) as audio:
                return audio.mime_type, audio.duration_s
        except PermanentError as exc:
            return ErrorType(exc.error_type)


async def test_local_audio_within_limits(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav", 2.0)
    assert await _prepare(tmp_path, AudioRef(path=str(path))) == ("audio/wav", 2.0)


@pytest.mark.parametrize(
    ("limits", "error_type"),
    [({"max_s": 1.0}, ErrorType.AUDIO_TOO_LONG), ({"max_bytes": 100}, ErrorType.FILE_TOO_LARGE)],
)
async def test_limits_are_checked(
    tmp_path: Path, limits: dict[str, float], error_type: str
) -> None:
    path = _wav(tmp_path / "a.wav", 2.0)
    assert await _prepare(tmp_path, AudioRef(path=str(path)), **limits) == error_type


async def test_paths_outside_the_storage_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = _wav(tmp_path / "outside.wav", 1.0)
    assert await _prepare(root, AudioRef(path=str(outside))) == ErrorType.PATH_NOT_ALLOWED
    assert await _prepare(root, AudioRef(path="../outside.wav")) == ErrorType.PATH_NOT_ALLOWED


async def test_symlinks_are_followed_only_within_the_storage_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "clinic" / "2026").mkdir(parents=True)
    inside = _wav(root / "clinic" / "2026" / "a.wav", 1.0)
    outside = _wav(tmp_path / "outside.wav", 1.0)
    (root / "escape.wav").symlink_to(outside)
    (root / "alias.wav").symlink_to(inside)
    (root / "linked-dir").symlink_to(tmp_path)
    assert await _prepare(root, AudioRef(path="escape.wav")) == ErrorType.PATH_NOT_ALLOWED
    assert await _prepare(root, AudioRef(path="linked-dir/outside.wav")) == (
        ErrorType.PATH_NOT_ALLOWED
    )
    assert await _prepare(root, AudioRef(path="alias.wav")) == ("audio/wav", 1.0)
    for name in ("clinic/2026/a.wav", "./clinic//2026/a.wav", str(inside)):
        assert await _prepare(root, AudioRef(path=name)) == ("audio/wav", 1.0), name
    assert await _prepare(root, AudioRef(path="clinic/2026")) == ErrorType.AUDIO_UNAVAILABLE
    assert await _prepare(root, AudioRef(path="clinic/2026/a.wav/x")) == (
        ErrorType.AUDIO_UNAVAILABLE
    )


@pytest.mark.parametrize(
    "name",
    [
        "clinic/2026/a\x00.wav",  # a NUL: os.stat would raise ValueError
        "\x00",
        "clinic/..",  # ends in '..' (realpath would give the root itself)
        "clinic/2026/..",
        "..",
        "/..",
        "clinic/../clinic/2026/a.wav",  # '..' that stays under the root is refused too
        "clinic/2026/../../../outside.wav",
        pytest.param(f"clinic/{'a' * 256}.wav", id="component-over-NAME_MAX"),
        pytest.param("clinic/" + "\u20ac" * 86, id="component-of-258-bytes-86-chars"),
        pytest.param("a/" * 2047 + "a", id="over-PATH_MAX-once-joined-to-the-root"),
    ],
)
async def test_malformed_paths_are_refused_as_path_not_allowed(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    (root / "clinic" / "2026").mkdir(parents=True)
    _wav(root / "clinic" / "2026" / "a.wav", 1.0)
    _wav(tmp_path / "outside.wav", 1.0)
    assert await _prepare(root, AudioRef(path=name)) == ErrorType.PATH_NOT_ALLOWED


def test_a_path_that_cannot_be_encoded_is_refused(tmp_path: Path) -> None:
    """A lone surrogate (pydantic refuses it on the wire; a model built in code need not)."""
    import worker.media as media

    policy = FetchPolicy(allowlist=frozenset(), storage_root=tmp_path, timeout_s=5)
    with pytest.raises(PermanentError) as caught:
        media.local_path(
            AudioRef.model_construct(path="a\ud800.wav", url=None),
            policy,
            ErrorType.AUDIO_UNAVAILABLE,
        )
    assert caught.value.error_type == ErrorType.PATH_NOT_ALLOWED


def test_a_name_too_long_for_the_file_system_is_path_not_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENAMETOOLONG from the file system itself (e.g. through a symlink), not a missing file."""
    import errno

    import worker.media as media

    def too_long(_path: object, *_args: object, **_kwargs: object) -> os.stat_result:
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(os, "stat", too_long)
    policy = FetchPolicy(allowlist=frozenset(), storage_root=tmp_path, timeout_s=5)
    with pytest.raises(PermanentError) as caught:
        media.local_path(AudioRef(path="./a.wav"), policy, ErrorType.AUDIO_UNAVAILABLE)
    assert caught.value.error_type == ErrorType.PATH_NOT_ALLOWED


@pytest.mark.parametrize("name", ["a.wav", "./a.wav", "sub/./../a.wav", "sub//b.wav", "sub/b.wav"])
def test_plain_and_other_names_resolve_to_the_file_they_name(tmp_path: Path, name: str) -> None:
    """A plain name (the fast path) and one that needs resolving name the same file with the
    same size; a '..' component is refused even when it stays under the root."""
    import worker.media as media

    (tmp_path / "sub").mkdir()
    _wav(tmp_path / "a.wav", 1.0)
    _wav(tmp_path / "sub" / "b.wav", 0.5)
    policy = FetchPolicy(allowlist=frozenset(), storage_root=tmp_path, timeout_s=5)
    if ".." in name.split("/"):
        with pytest.raises(PermanentError) as caught:
            media.local_path(AudioRef(path=name), policy, ErrorType.AUDIO_UNAVAILABLE)
        assert caught.value.error_type == ErrorType.PATH_NOT_ALLOWED
        return
    expected = (tmp_path / name).resolve()
    assert media.local_path(AudioRef(path=name), policy, ErrorType.AUDIO_UNAVAILABLE) == (
        expected,
        expected.stat().st_size,
    )


async def test_unparseable_audio_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    assert await _prepare(tmp_path, AudioRef(path=str(path))) == ErrorType.UNSUPPORTED_AUDIO


async def test_missing_file_is_unavailable(tmp_path: Path) -> None:
    assert await _prepare(tmp_path, AudioRef(path="nope.wav")) == ErrorType.AUDIO_UNAVAILABLE


async def test_resolver_refuses_private_answers_unless_allowlisted() -> None:
    """The check at connect time: a rebinding DNS answer cannot reach loopback."""
    with pytest.raises(OSError, match="private"):
        await PolicyResolver(frozenset()).resolve("localhost", 80)
    answers = await PolicyResolver(frozenset({"localhost"})).resolve("localhost", 80)
    assert answers
    assert all(ipaddress.ip_address(a["host"]).is_loopback for a in answers)


async def test_fetch_session_connects_to_loopback_only_when_allowlisted() -> None:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://localhost:{runner.addresses[0][1]}/"
    try:
        for allowlist, reachable in ((frozenset(), False), (frozenset({"localhost"}), True)):
            policy = FetchPolicy(allowlist=allowlist, storage_root=None, timeout_s=5)
            async with fetch_session(policy) as session:
                try:
                    async with session.get(url) as response:
                        reached = response.status == 200
                except aiohttp.ClientConnectorError:
                    reached = False
            assert reached is reachable
    finally:
        await runner.cleanup()


def _riff(chunks: list[tuple[bytes, bytes]], data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file from (id, payload) chunks, padding odd payloads as RIFF requires."""
    body = b"WAVE"
    for chunk_id, payload in chunks:
        size = data_size if chunk_id == b"data" and data_size is not None else len(payload)
        body += chunk_id + size.to_bytes(4, "little") + payload + b"\x00" * (len(payload) % 2)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _fmt(channels: int, rate: int, width: int) -> bytes:
    block = channels * width
    return (
        (1).to_bytes(2, "little")
        + channels.to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * block).to_bytes(4, "little")
        + block.to_bytes(2, "little")
        + (8 * width).to_bytes(2, "little")
    )


def _decoded_s(path: Path) -> float:
    """The samples FFmpeg decodes, over the rate: a measure that does not read our header."""
    with av.open(str(path)) as media:
        stream = media.streams.audio[0]
        return sum(frame.samples for frame in media.decode(stream)) / stream.sample_rate


@pytest.mark.parametrize(
    ("channels", "rate", "width", "seconds"),
    [(1, 8000, 2, 2.0), (2, 44100, 2, 0.5), (1, 16000, 1, 3.25), (2, 48000, 3, 1.0)],
)
def test_wav_header_reader_agrees_with_ffmpeg(
    tmp_path: Path, channels: int, rate: int, width: int, seconds: float
) -> None:
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\x01" * int(seconds * rate) * channels * width)
    assert wav_duration_s(path) == pytest.approx(seconds)
    assert wav_duration_s(path) == pytest.approx(_decoded_s(path))


def test_wav_header_reader_skips_other_chunks(tmp_path: Path) -> None:
    """A LIST chunk of odd size before fmt, and one between fmt and data."""
    path = tmp_path / "tagged.wav"
    samples = b"\x00\x00" * 8000 * 2
    path.write_bytes(
        _riff(
            [
                (b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00"),
                (b"fmt ", _fmt(1, 8000, 2)),
                (b"junk", b"xyz"),
                (b"data", samples),
            ]
        )
    )
    assert wav_duration_s(path) == pytest.approx(2.0)
    assert probe_audio(path).duration_s == pytest.approx(2.0)


def test_wav_header_reader_reads_past_its_first_block(tmp_path: Path) -> None:
    """A LIST chunk larger than the first read, then fmt and data beyond it."""
    path = tmp_path / "long-tags.wav"
    path.write_bytes(
        _riff(
            [
                (b"LIST", b"x" * 9001),
                (b"fmt ", _fmt(2, 16000, 2)),
                (b"data", b"\x00" * 64000),
            ]
        )
    )
    assert wav_duration_s(path) == pytest.approx(1.0)
    assert probe_audio(path).duration_s == pytest.approx(1.0)


def test_a_lying_fmt_size_does_not_size_the_read(tmp_path: Path) -> None:
    path = tmp_path / "lying.wav"
    fmt = _fmt(1, 8000, 2)
    body = b"WAVE" + b"fmt " + (2**32 - 2).to_bytes(4, "little") + fmt
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    assert wav_duration_s(path) is None


def test_wav_with_a_streamed_data_size_is_measured_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "streamed.wav"
    path.write_bytes(
        _riff([(b"fmt ", _fmt(1, 8000, 2)), (b"data", b"\x00\x00" * 4000)], 0xFFFFFFFF)
    )
    assert wav_duration_s(path) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "content",
    [
        b"not a wav at all",
        b"RIFF\x00\x00\x00\x00WAVE",  # no chunks
        _riff([(b"data", b"\x00" * 100)]),  # data before any fmt: rate unknown
        _riff([(b"fmt ", b"\x01\x00")]),  # fmt too short
    ],
)
def test_wav_header_reader_leaves_what_it_cannot_read_to_pyav(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(content)
    assert wav_duration_s(path) is None


async def test_audio_the_header_reader_declines_is_still_refused_specifically(
    tmp_path: Path,
) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(_riff([(b"data", b"\x00" * 100)]))
    assert await _prepare(tmp_path, AudioRef(path=str(path))) == ErrorType.UNSUPPORTED_AUDIO
