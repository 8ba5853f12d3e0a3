"""scribe-bench asr: the local speech recognition's real-time factor and WER on the sample
consultation (no broker: ops/eval.py's run_asr in a thread)."""

from __future__ import annotations

import asyncio
import io

from ops.bench.context import Options, Result


async def asr(options: Options) -> Result:
    from ops.eval import DEFAULT_AUDIO, DEFAULT_AUDIO_TEXT, run_asr

    out = io.StringIO()
    wer, speed = await asyncio.to_thread(run_asr, DEFAULT_AUDIO, DEFAULT_AUDIO_TEXT, 1, out)
    rtf = 1 / speed if speed else float("inf")
    rows = [("audio", str(DEFAULT_AUDIO)), ("real-time factor", f"{rtf:.3f}"),
            ("speed", f"{speed:.1f}x real time"), ("WER", f"{100 * wer:.2f} %")]  # fmt: skip
    data = {"audio": str(DEFAULT_AUDIO), "rtf": rtf, "speed": speed, "wer": wer,
            "eval_output": out.getvalue().splitlines()}  # fmt: skip
    notes = [
        "ops/eval.py run_asr: the second transcription of the file (the first loads the model)"
    ]
    return Result("asr", ("figure", "value"), rows, data, f"asr_rtf={rtf:.3f} wer={wer:.4f}", notes)
