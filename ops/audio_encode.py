"""Recordings encoded with PyAV (FFmpeg's encoders) in every format the worker accepts: what
the tests and ops/audio_speed.py feed worker/audio.py, made on the spot, nothing downloaded."""

from __future__ import annotations

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


def encode_pcm(
    path: Path,
    container: str,
    pcm: bytes,
    rate: int,
    *,
    channels: int = 1,
    options: dict[str, str] | None = None,
) -> Path:
    """Writes 16-bit interleaved PCM at rate to path in the container's usual codec (at that
    rate, or 48 kHz for Opus); returns path."""
    muxer, codec, _ext, _usual_rate = FORMATS[container]
    layout = "mono" if channels == 1 else "stereo"
    out_rate = 48_000 if codec == "libopus" else rate
    resampler = av.AudioResampler(format="s16", layout=layout, rate=out_rate)
    frame_bytes = 1024 * 2 * channels
    with av.open(str(path), mode="w", format=muxer, options=options or {}) as sink:
        stream: Any = sink.add_stream(codec, rate=out_rate, layout=layout)
        for start in range(0, len(pcm), frame_bytes):
            piece = pcm[start : start + frame_bytes]
            frame = av.AudioFrame(format="s16", layout=layout, samples=len(piece) // (2 * channels))
            frame.planes[0].update(piece)
            frame.sample_rate = rate
            frame.pts = start // (2 * channels)
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    sink.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return path
