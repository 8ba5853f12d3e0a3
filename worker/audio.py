"""What a recording is, how long it lasts, and the same audio in another format (PyAV).

The API the rest of the worker (the transcribe stage, chunking) builds on:

- `probe_audio(path) -> AudioInfo`: container, codec, duration, sample rate, channels, size.
  Blocking: call it in a thread (`await asyncio.to_thread(probe_audio, path)`). The format is
  decided by the file's content (its first bytes), never by its name or MIME type, and only
  the demuxers of the accepted formats are ever used: WAV, FLAC, MP3, M4A/MP4 and raw ADTS AAC,
  Ogg (Opus, Vorbis, FLAC) and WebM/Matroska (Opus, Vorbis). The duration comes from the
  container where it declares one; every packet is then read to the end anyway (cheap, no
  decoding), which gives the duration where the container does not declare one (a browser's
  WebM) and catches a truncated file (its packets end well before the declared duration). The
  first packets are decoded, which catches a corrupt one. Anything else -> unsupportedAudio.
- `iter_pcm(path, sample_rate=16000, start_s=0, duration_s=None)`: the audio decoded to
  16-bit little-endian mono PCM at that rate, in blocks of bytes, from start_s for duration_s.
  `decode_pcm(...)` is the same, joined, with a size bound. Blocking: run in a thread.
- `convert(path, dest, fmt="wav", sample_rate=16000, start_s=0, duration_s=None)`: writes that
  PCM as a WAV (or FLAC) file at dest and returns its AudioInfo. Blocking: run in a thread.
  What the transcribe stage uploads when a vendor needs another format, and what a chunker can
  cut a recording with (deterministic: the same file and range give the same bytes).
- `TranscriberLimits`, `needs_conversion(info, limits)`, `needs_chunking(info, limits)`: what a
  transcriber takes (duration, bytes, formats). `ChunkingRequired` is what the transcribe stage
  raises (worker.media.MediaFetcher.require_one_upload) for audio within the job maximum but
  over its transcriber's limit when nothing chunked it: an audioTooLong refusal before any
  vendor call. A worker with chunking (worker/chunk_flow.py) splits such audio before that check.
- `wav_info(path)`: a 16-bit PCM WAV's AudioInfo from its headers alone, cheap enough for the
  event loop (worker/media.py tries it before probe_audio in a thread).

Every call is bounded: a time budget (`timeout_s`, checked between packets) and a limit on the
audio it will decode (`max_duration_s`). Errors name the problem, never the path.
"""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

from schemas.errors import ErrorType
from worker.errors import PermanentError

# Our name for each accepted container, and the FFmpeg demuxer that reads it (no other demuxer
# ever sees a job's bytes).
Container = Literal["wav", "flac", "mp3", "m4a", "aac", "ogg", "webm"]
DEMUXERS: Final[dict[Container, str]] = {
    "wav": "wav",
    "flac": "flac",
    "mp3": "mp3",
    "m4a": "mov",
    "aac": "aac",
    "ogg": "ogg",
    "webm": "matroska",
}
ACCEPTED_CODECS: Final = frozenset(
    {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8", "pcm_alaw", "pcm_mulaw"}
    | {"flac", "mp3", "mp3float", "aac", "opus", "vorbis", "alac"}
)
MIME_TYPES: Final[dict[Container, str]] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "webm": "audio/webm",
}
OutputFormat = Literal["wav", "flac"]
ASR_SAMPLE_RATE: Final = 16_000
SNIFF_BYTES: Final = 64
ID3_HEADER_BYTES: Final = 10
MP3_LENGTH_HEADER_WINDOW: Final = 64  # the tag sits 13 to 36 bytes into the first frame
DEFAULT_TIMEOUT_S: Final = 120.0
DEFAULT_MAX_DECODE_S: Final = 4 * 3600.0  # over any job maximum: a bound, not a policy
DECODE_CHECK_PACKETS: Final = 8  # decoded at the start of every probe
MAX_PACKETS: Final = 20_000_000  # ~ 5 days of 20 ms Opus packets
TRUNCATION_SLACK_S: Final = 0.5
TRUNCATION_SLACK_RATIO: Final = 0.02
PCM_BYTES_PER_SAMPLE: Final = 2
SEEK_MARGIN_S: Final = 1.0
WAV_HEADER_BYTES: Final = 44


@dataclass(frozen=True)
class AudioInfo:
    """What probe_audio found. `container` is one of DEMUXERS' keys (by content, not name)."""

    duration_s: float
    container: Container
    codec: str
    sample_rate: int
    channels: int
    size_bytes: int

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.container]

    @property
    def extension(self) -> str:
        return self.container


@dataclass(frozen=True)
class TranscriberLimits:
    """What one transcriber takes in one upload: None is no limit. `formats` are the containers
    it accepts as they are; anything else is converted to `convert_to` first."""

    max_duration_s: float | None
    max_bytes: int | None
    formats: frozenset[str]
    convert_to: OutputFormat = "wav"
    sample_rate: int = ASR_SAMPLE_RATE

    def converted_bytes(self, duration_s: float) -> int:
        """The size of duration_s of audio once converted (16-bit mono PCM; FLAC is smaller)."""
        return WAV_HEADER_BYTES + int(duration_s * self.sample_rate) * PCM_BYTES_PER_SAMPLE


def needs_chunking(info: AudioInfo, limits: TranscriberLimits) -> bool:
    """Whether this audio must be split to go to this transcriber: longer than it takes, or too
    large for it even once converted to 16-bit mono PCM (see needs_conversion)."""
    if limits.max_duration_s is not None and info.duration_s > limits.max_duration_s:
        return True
    if limits.max_bytes is None or info.size_bytes <= limits.max_bytes:
        return False
    return limits.converted_bytes(info.duration_s) > limits.max_bytes


def needs_conversion(info: AudioInfo, limits: TranscriberLimits) -> bool:
    """Whether the transcriber needs another format: a container it does not accept, or a file
    over its size limit (a 10-minute 48 kHz stereo WAV is 115 MB; as 16 kHz mono, 19 MB)."""
    if info.container not in limits.formats:
        return True
    return limits.max_bytes is not None and info.size_bytes > limits.max_bytes


class ChunkingRequired(PermanentError):
    """The audio is within the job maximum but over its transcriber's limit (needs_chunking).

    Raised by the transcribe stage before any vendor call; until chunking handles it, the job is
    refused as audioTooLong (a PermanentError). Carries the probe, never the path.
    """

    def __init__(self, info: AudioInfo, limits: TranscriberLimits, transcriber: str) -> None:
        self.info = info
        self.limits = limits
        self.transcriber = transcriber
        super().__init__(
            ErrorType.AUDIO_TOO_LONG,
            f"{info.duration_s:.0f} s ({info.size_bytes} bytes) is over what {transcriber} "
            "takes in one upload, and chunking is not available",
        )


def unsupported(problem: str) -> PermanentError:
    return PermanentError(ErrorType.UNSUPPORTED_AUDIO, problem)


def sniff_container(head: bytes) -> Container | None:
    """The accepted container these first bytes start, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3":
        return "mp3"  # an ID3v2 tag; its audio may also be ADTS AAC (probe_audio checks the codec)
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x03
        return "aac" if layer == 0 else "mp3"
    return None


def _read_head(path: Path) -> tuple[bytes, int]:
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            return stream.read(SNIFF_BYTES), size
    except OSError:
        raise PermanentError(ErrorType.AUDIO_UNAVAILABLE, "the audio could not be read") from None


def _open(path: Path) -> tuple[Any, Container, int]:
    """The file opened with the demuxer of the accepted format its first bytes start, that
    format, and the file's size; unsupportedAudio for any other content."""
    import av

    head, size = _read_head(path)
    container = sniff_container(head)
    if container is None:
        raise unsupported("the audio is not WAV, FLAC, MP3, M4A/AAC, Ogg or WebM")
    try:
        return av.open(str(path), mode="r", format=DEMUXERS[container]), container, size
    except (av.FFmpegError, OSError, ValueError, UnicodeError):
        raise unsupported(f"the {container} audio cannot be opened") from None


def _decoding_errors() -> tuple[type[BaseException], ...]:
    """What FFmpeg (through PyAV) raises for bad input."""
    import av

    return (av.FFmpegError, OSError, ValueError, MemoryError)


class _Budget:
    """A deadline, checked between packets and frames (a thread cannot be interrupted)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self._deadline:
            raise unsupported(f"the audio took over {self._timeout_s:.0f} s to read")


def probe_audio(
    path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_duration_s: float | None = None
) -> AudioInfo:
    """The recording's AudioInfo (see the module docstring); unsupportedAudio when it is not one
    of the accepted formats, is corrupt, or is truncated. Blocking: call it in a thread.

    max_duration_s stops reading once the packets pass it (the caller refuses such audio anyway):
    the duration reported is then at least max_duration_s.
    """
    budget = _Budget(timeout_s)
    media, container, size = _open(path)
    with media:
        try:
            return _probe_open(media, path, container, size, budget, max_duration_s)
        except _decoding_errors():
            raise unsupported(f"the {container} audio is corrupt") from None


def _audio_stream(media: Any, container: Container) -> Any:
    streams = media.streams.audio
    if not streams:
        raise unsupported(f"the {container} file has no audio stream")
    stream = streams[0]
    codec = stream.codec_context.name
    if codec not in ACCEPTED_CODECS:
        raise unsupported(f"the {container} audio codec is not accepted")
    return stream


def _declared_duration_s(media: Any, stream: Any, container: Container, path: Path) -> float | None:
    """The duration the container states, where it is a statement and not FFmpeg's estimate
    from the bit rate: a WAV's data chunk header (FFmpeg sizes it from the file), an MP3 only
    with a Xing/Info/VBRI header, never raw ADTS AAC."""
    if container == "wav":
        header = wav_header(path)
        return None if header is None else header.duration_s
    if container == "aac" or (container == "mp3" and not _has_mp3_length_header(path)):
        return None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if media.duration is not None and media.duration > 0:
        return float(Fraction(media.duration, 1_000_000))
    return None


def _probe_open(
    media: Any,
    path: Path,
    container: Container,
    size: int,
    budget: _Budget,
    max_duration_s: float | None,
) -> AudioInfo:
    stream = _audio_stream(media, container)
    declared = _declared_duration_s(media, stream, container, path)
    end_s, decoded_frames = _read_packets(media, stream, budget, max_duration_s)
    if decoded_frames == 0:
        raise unsupported(f"the {container} audio has no decodable frames")
    stopped_early = max_duration_s is not None and end_s >= max_duration_s
    if declared is not None and not stopped_early:
        slack = max(TRUNCATION_SLACK_S, declared * TRUNCATION_SLACK_RATIO)
        if end_s + slack < declared:
            raise unsupported(f"the {container} audio is truncated")
    duration_s = end_s if stopped_early or declared is None else declared
    if duration_s <= 0:
        raise unsupported(f"the {container} audio has no duration")
    context = stream.codec_context
    return AudioInfo(
        duration_s=duration_s,
        container=container,
        codec=context.name,
        sample_rate=int(context.sample_rate or 0),
        channels=int(context.channels or 0),
        size_bytes=size,
    )


def _has_mp3_length_header(path: Path) -> bool:
    """Whether the first MPEG frame (after any ID3v2 tag) holds a Xing, Info or VBRI header,
    which states the frame count: without one, FFmpeg's duration is a bit-rate estimate."""
    with path.open("rb") as stream:
        head = stream.read(ID3_HEADER_BYTES)
        start = 0
        if head[:3] == b"ID3" and len(head) == ID3_HEADER_BYTES:
            syncsafe = head[6:10]
            start = ID3_HEADER_BYTES + sum(
                (b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(syncsafe)
            )
        stream.seek(start)
        frame = stream.read(MP3_LENGTH_HEADER_WINDOW)
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _read_packets(
    media: Any, stream: Any, budget: _Budget, max_duration_s: float | None
) -> tuple[float, int]:
    """The end time of the last packet (seconds) and the frames decoded from the first ones."""
    time_base = stream.time_base
    end_s, decoded, packets = 0.0, 0, 0
    for packet in media.demux(stream):
        if packet.size == 0:
            continue  # the flush packet at the end
        packets += 1
        if packets % 256 == 0:
            budget.check()
        if packets > MAX_PACKETS:
            raise unsupported("the audio has too many packets")
        if packets <= DECODE_CHECK_PACKETS:
            decoded += sum(1 for frame in packet.decode() if frame.samples > 0)
        if packet.pts is not None and time_base is not None:
            end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * time_base))
        if max_duration_s is not None and end_s >= max_duration_s:
            break
    return end_s, decoded


def iter_pcm(
    path: Path,
    sample_rate: int = ASR_SAMPLE_RATE,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_duration_s: float = DEFAULT_MAX_DECODE_S,
) -> Iterator[bytes]:
    """The audio as 16-bit little-endian mono PCM at sample_rate, in blocks, from start_s for
    duration_s seconds (None: to the end). Samples are counted from the first decoded frame's
    timestamp, so a range always starts at the same sample. Blocking: iterate in a thread.
    Raises unsupportedAudio for undecodable audio, audio past max_duration_s, or a slow read."""
    budget = _Budget(timeout_s)
    media, container, _size = _open(path)
    with media:
        try:
            stream = _audio_stream(media, container)
            yield from _pcm_blocks(
                media, stream, sample_rate, start_s, duration_s, budget, max_duration_s
            )
        except _decoding_errors():
            raise unsupported(f"the {container} audio cannot be decoded") from None


class _Window:
    """Which resampled samples to keep: [first, last) counted from the recording's start, and
    where the next sample falls (set by the first decoded frame's timestamp)."""

    def __init__(self, sample_rate: int, start_s: float, duration_s: float | None) -> None:
        self.sample_rate = sample_rate
        self.first = round(start_s * sample_rate)
        self.last = None if duration_s is None else self.first + round(duration_s * sample_rate)
        self.position: int | None = None

    def take(self, frame: Any) -> bytes:
        """The part of a resampled frame inside the window; moves the position past it."""
        position = self.position or 0
        samples = int(frame.samples)
        end = position + samples
        self.position = end
        lo = max(self.first, position) - position
        hi = (end if self.last is None else min(end, self.last)) - position
        if hi <= lo:
            return b""
        data = bytes(frame.planes[0])[: samples * PCM_BYTES_PER_SAMPLE]
        return data[lo * PCM_BYTES_PER_SAMPLE : hi * PCM_BYTES_PER_SAMPLE]

    def done(self) -> bool:
        return self.last is not None and (self.position or 0) >= self.last


def _pcm_blocks(
    media: Any,
    stream: Any,
    sample_rate: int,
    start_s: float,
    duration_s: float | None,
    budget: _Budget,
    max_duration_s: float,
) -> Iterator[bytes]:
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    if start_s > SEEK_MARGIN_S and stream.time_base is not None:
        # To the keyframe before (start_s - margin): the same one every time for the same file.
        media.seek(int((start_s - SEEK_MARGIN_S) / stream.time_base), stream=stream)
    window = _Window(sample_rate, start_s, duration_s)
    limit = round(max_duration_s * sample_rate)
    for frame in media.decode(stream):
        budget.check()
        if window.position is None:
            window.position = round(float(frame.time or 0.0) * sample_rate)
        yield from filter(None, map(window.take, resampler.resample(frame)))
        if (window.position or 0) > limit:
            raise unsupported("the audio decodes to more than the longest accepted recording")
        if window.done():
            return
    yield from filter(None, map(window.take, resampler.resample(None)))


def decode_pcm(
    path: Path,
    sample_rate: int = ASR_SAMPLE_RATE,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_bytes: int = 512 * 1024 * 1024,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bytes:
    """iter_pcm joined; unsupportedAudio past max_bytes of PCM. Blocking: call it in a thread."""
    blocks: list[bytes] = []
    total = 0
    for block in iter_pcm(
        path, sample_rate, start_s=start_s, duration_s=duration_s, timeout_s=timeout_s
    ):
        total += len(block)
        if total > max_bytes:
            raise unsupported(f"the audio decodes to more than {max_bytes} bytes")
        blocks.append(block)
    return b"".join(blocks)


def convert(
    path: Path,
    dest: Path,
    fmt: OutputFormat = "wav",
    sample_rate: int = ASR_SAMPLE_RATE,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_duration_s: float = DEFAULT_MAX_DECODE_S,
) -> AudioInfo:
    """The audio (or [start_s, start_s + duration_s) of it) written to dest as 16-bit mono WAV
    or FLAC at sample_rate; returns the written file's AudioInfo. Blocking: call in a thread."""
    blocks = iter_pcm(
        path,
        sample_rate,
        start_s=start_s,
        duration_s=duration_s,
        timeout_s=timeout_s,
        max_duration_s=max_duration_s,
    )
    if fmt == "wav":
        samples = _write_wav(dest, blocks, sample_rate)
    else:
        samples = _write_flac(dest, blocks, sample_rate)
    if samples == 0:
        raise unsupported("the audio range holds no samples")
    return AudioInfo(
        duration_s=samples / sample_rate,
        container=fmt,
        codec="pcm_s16le" if fmt == "wav" else "flac",
        sample_rate=sample_rate,
        channels=1,
        size_bytes=dest.stat().st_size,
    )


def _write_wav(dest: Path, blocks: Iterator[bytes], sample_rate: int) -> int:
    samples = 0
    with wave.open(str(dest), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(PCM_BYTES_PER_SAMPLE)
        sink.setframerate(sample_rate)
        for block in blocks:
            sink.writeframesraw(block)
            samples += len(block) // PCM_BYTES_PER_SAMPLE
    return samples


def _write_flac(dest: Path, blocks: Iterator[bytes], sample_rate: int) -> int:
    import av

    samples = 0
    with av.open(str(dest), mode="w", format="flac") as sink:
        stream: Any = sink.add_stream("flac", rate=sample_rate, layout="mono")
        stream.format = "s16"
        for block in blocks:
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(block) // 2)
            frame.planes[0].update(block)
            frame.sample_rate = sample_rate
            frame.pts = samples
            samples += frame.samples
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return samples


MAX_WAV_CHUNKS: Final = 64
WAV_HEAD_BYTES: Final = 4096  # holds the RIFF, fmt and data headers of every common WAV
WAV_STREAMING_SIZES: Final = frozenset({0, 0xFFFFFFFF})  # a data size a streaming recorder left
WAV_PCM_TAGS: Final = frozenset({0x0001, 0xFFFE})  # PCM, WAVE_FORMAT_EXTENSIBLE


@dataclass(frozen=True)
class WavHeader:
    """A RIFF/WAVE file's fmt chunk and where its data chunk says the samples are."""

    format_tag: int
    channels: int
    sample_rate: int
    byte_rate: int
    bits: int
    data_offset: int
    data_bytes: int  # as declared; the rest of the file when the recorder left it unset
    file_bytes: int

    @property
    def duration_s(self) -> float:
        return self.data_bytes / self.byte_rate

    @property
    def truncated(self) -> bool:
        return self.data_offset + self.data_bytes > self.file_bytes + 1  # +1: the pad byte


def wav_header(path: Path) -> WavHeader | None:
    """The fmt and data chunk headers of a RIFF/WAVE file, or None when the file is not one this
    reader understands (then PyAV decides).

    One open and usually one read (positioned, unbuffered), cheap enough for the event loop: the
    common case then needs neither a thread (whose GIL hand-offs cost the loop far more than the
    read) nor a demuxer.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _wav_header_of(_PositionedReader(fd))
    finally:
        os.close(fd)


def wav_duration_s(path: Path) -> float | None:
    """The duration the WAV headers declare, or None (see wav_header)."""
    header = wav_header(path)
    return None if header is None else header.duration_s


def wav_info(path: Path) -> AudioInfo | None:
    """The AudioInfo of a 16-bit PCM WAV from its headers alone (cheap enough for the event
    loop); unsupportedAudio when its data chunk runs past the end of the file; None for any other
    file (then probe_audio, in a thread, decides)."""
    header = wav_header(path)
    if header is None or header.format_tag not in WAV_PCM_TAGS or header.bits != 16:
        return None
    if header.channels <= 0 or header.sample_rate <= 0 or header.data_bytes <= 0:
        return None
    if header.truncated:
        raise unsupported("the wav audio is truncated")
    return AudioInfo(
        duration_s=header.duration_s,
        container="wav",
        codec="pcm_s16le",
        sample_rate=header.sample_rate,
        channels=header.channels,
        size_bytes=header.file_bytes,
    )


class _PositionedReader:
    """Reads at offsets: from the first WAV_HEAD_BYTES, read once, or from the file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._head = os.pread(fd, WAV_HEAD_BYTES, 0)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self._head):
            return self._head[offset : offset + size]
        return os.pread(self._fd, size, offset)

    def size(self) -> int:
        return os.fstat(self._fd).st_size


def _wav_header_of(reader: _PositionedReader) -> WavHeader | None:
    riff = reader.read(0, 12)
    if len(riff) != 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        return None
    offset, fmt = 12, b""
    for _ in range(MAX_WAV_CHUNKS):
        header = reader.read(offset, 8)
        if len(header) != 8:
            return None
        chunk_id, size = header[:4], int.from_bytes(header[4:], "little")
        offset += 8
        if chunk_id == b"data":
            return _wav_header_from(fmt, offset, size, reader.size())
        if chunk_id == b"fmt ":
            fmt = reader.read(offset, min(size, 16))  # a lying size must not size the read
            if len(fmt) < 16:
                return None
        offset += size + size % 2
    return None


def _wav_header_from(fmt: bytes, offset: int, size: int, file_bytes: int) -> WavHeader | None:
    byte_rate = int.from_bytes(fmt[8:12], "little") if fmt else 0
    if byte_rate <= 0:
        return None
    if size in WAV_STREAMING_SIZES:
        size = file_bytes - offset
    return WavHeader(
        format_tag=int.from_bytes(fmt[0:2], "little"),
        channels=int.from_bytes(fmt[2:4], "little"),
        sample_rate=int.from_bytes(fmt[4:8], "little"),
        byte_rate=byte_rate,
        bits=int.from_bytes(fmt[14:16], "little"),
        data_offset=offset,
        data_bytes=size,
        file_bytes=file_bytes,
    )
