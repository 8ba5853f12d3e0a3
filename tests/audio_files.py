"""Real encoded recordings made at test time with PyAV (FFmpeg's encoders), a few seconds each.

A tone with a pause, so a decoder has something that is not silence; the duration is the
number of samples written, so a probe's answer can be checked against it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import av

# container name for probe_audio -> (FFmpeg muxer, encoder, file extension, sample rate)
FORMATS: Final[dict[str, tuple[str, str, str, int]]] = {
    "wav": ("wav", "pcm_s16le", "wav", 16_000),
    "flac": ("flac", "flac", "flac", 44_100),
    "mp3": ("mp3", "libmp3lame", "mp3", 44_100),
    "m4a": ("ipod", "aac", "m4a", 44_100),
    "aac": ("adts", "aac", "aac", 22_050),
    "ogg": ("ogg", "libopus", "opus", 48_000),
    "webm": ("webm", "libopus", "webm", 48_000),
}


def tone_samples(seconds: float, rate: int) -> list[int]:
    """A 440 Hz tone, silent for the middle fifth: 16-bit samples."""
    total = round(seconds * rate)
    quiet = range(total * 2 // 5, total * 3 // 5)
    return [
        0 if i in quiet else int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        for i in range(total)
    ]


def encode(path: Path, container: str, seconds: float = 3.0, *, channels: int = 1) -> Path:
    """Writes seconds of tone to path in the container's usual codec; returns path."""
    muxer, codec, _ext, rate = FORMATS[container]
    layout = "mono" if channels == 1 else "stereo"
    samples = tone_samples(seconds, rate)
    with av.open(str(path), mode="w", format=muxer) as sink:
        stream: Any = sink.add_stream(codec, rate=rate, layout=layout)
        frame_samples = 960 if codec == "libopus" else 1024
        for start in range(0, len(samples), frame_samples):
            piece = samples[start : start + frame_samples]
            interleaved = b"".join(v.to_bytes(2, "little", signed=True) * channels for v in piece)
            frame = av.AudioFrame(format="s16", layout=layout, samples=len(piece))
            frame.planes[0].update(interleaved)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return path
