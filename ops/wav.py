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
