"""Silent test recordings: the one WAV writer of the tools and the tests (the bench, scribe-chaos
and the test harness all need a small, valid recording a provider will accept)."""

from __future__ import annotations

import wave
from pathlib import Path


def write_wav(path: Path, seconds: float = 1.0, rate: int = 8000, lead: bytes = b"") -> Path:
    """A mono 16-bit WAV of silence, seconds long at rate frames per second. Its first bytes
    may be lead (an even number of bytes, e.g. a jobId) so that every recording is its own."""
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(lead + b"\x00\x00" * (frames - len(lead) // 2))
    return path


def write_long_recording(
    path: Path, seconds: float, rate: int = 8000, talk_s: float = 17.0, pause_s: float = 1.5
) -> tuple[tuple[float, float], ...]:
    """A mono 16-bit WAV of `talk_s` tone bursts (440 Hz, shaped so no two seconds are alike)
    separated by `pause_s` of silence, `seconds` long: a stand-in for a long consultation that a
    silence splitter can cut, cheap to write at a low rate. Returns the pauses as (start, end)
    seconds. Written in blocks: a two-hour recording never sits in memory."""
    import numpy as np

    pauses: list[tuple[float, float]] = []
    period = talk_s + pause_s
    t = talk_s
    while t < seconds:
        pauses.append((t, min(t + pause_s, seconds)))
        t += period
    total = int(seconds * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for block_start in range(0, total, rate * 60):
            n = np.arange(block_start, min(block_start + rate * 60, total), dtype=np.float64)
            time_s = n / rate
            loud = (time_s % period) < talk_s
            amplitude = np.where(loud, 8000 + 4000 * np.sin(time_s), 0.0)
            tone = amplitude * np.sin(2 * np.pi * 440.0 * time_s)
            out.writeframes(tone.astype("<i2").tobytes())
    return tuple(pauses)
