"""How long worker/audio.py takes to read and convert a recording, per format.

    python -m ops.audio_speed --minutes 10

Builds a recording of that length from the sample consultation (ops/samples, repeated), encodes
it in each accepted format with PyAV, then times, on this machine, what the transcribe stage
does with it: probe_audio (the duration and the truncation check) and convert (to the 16 kHz
mono WAV a vendor is sent). Prints one JSON line per format. Nothing is downloaded; the files
live in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ops.audio_encode import FORMATS, encode_pcm
from worker.audio import ASR_SAMPLE_RATE, convert, decode_pcm, probe_audio

SAMPLE = Path(__file__).resolve().parent / "samples" / "consultation.wav"
PCM_BYTES_PER_S = ASR_SAMPLE_RATE * 2


def recording_pcm(minutes: float) -> bytes:
    """minutes of the sample consultation, repeated, as 16 kHz mono PCM."""
    sample = decode_pcm(SAMPLE, ASR_SAMPLE_RATE)
    wanted = int(minutes * 60) * PCM_BYTES_PER_S
    return (sample * (wanted // len(sample) + 1))[:wanted]


def measure(folder: Path, container: str, pcm: bytes) -> dict[str, object]:
    path = folder / f"recording.{FORMATS[container][2]}"
    encode_pcm(path, container, pcm, ASR_SAMPLE_RATE)
    started = time.perf_counter()
    info = probe_audio(path, timeout_s=3600.0)
    probe_s = time.perf_counter() - started
    started = time.perf_counter()
    converted = convert(path, folder / "converted.wav", timeout_s=3600.0)
    convert_s = time.perf_counter() - started
    audio_s = len(pcm) / PCM_BYTES_PER_S
    return {
        "format": container,
        "codec": info.codec,
        "audio_s": round(audio_s, 1),
        "size_mb": round(info.size_bytes / 1e6, 2),
        "probed_duration_s": round(info.duration_s, 2),
        "probe_s": round(probe_s, 3),
        "convert_s": round(convert_s, 2),
        "convert_x_real_time": round(audio_s / convert_s, 1),
        "converted_mb": round(converted.size_bytes / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.audio_speed", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="recording length")
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="comma-separated, of " + ",".join(FORMATS)
    )
    args = parser.parse_args(argv)
    pcm = recording_pcm(args.minutes)
    with tempfile.TemporaryDirectory(prefix="scribe-audio-speed-") as folder:
        for container in args.formats.split(","):
            print(json.dumps(measure(Path(folder), container.strip(), pcm)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
