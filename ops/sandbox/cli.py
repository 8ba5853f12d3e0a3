"""`scribe-sandbox`: run the vendor emulator until SIGTERM/SIGINT.

Prints one JSON line, {"event": "ready", "base_url": ...}, once it listens, so
a parent process can start it on port 0 and learn where it is.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from collections.abc import Sequence

from ops.sandbox.app import running_sandbox
from ops.sandbox.config import STATUS_KEYS, SandboxConfig


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = argparse.ArgumentParser(prog="scribe-sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--allow-non-loopback", action="store_true", help="permit a non-loopback --host")
    p.add_argument("--polls-before-ready", type=int, default=defaults.polls_before_ready)
    p.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
    p.add_argument(
        "--ready-after-ms",
        type=int,
        default=defaults.ready_after_ms,
        help="Invox transcriptions ready this long after the PUT, then a callback (0: by polls)",
    )
    p.add_argument("--intron-api-key", default=defaults.intron_api_key)
    p.add_argument("--invox-static-token", default=defaults.invox_static_token)
    p.add_argument("--invox-app-id", default=defaults.invox_app_id)
    p.add_argument("--invox-app-key", default=defaults.invox_app_key)
    p.add_argument(
        "--llm-api-key",
        default=defaults.llm_api_key,
        help="bearer key /v1/chat/completions requires (default: none required)",
    )
    p.add_argument("--token-ttl-s", type=float, default=defaults.token_ttl_s)
    p.add_argument(
        "--intron-upload-rate",
        type=int,
        default=defaults.intron_upload_rate_per_min,
        help="uploads per minute per key (0 disables)",
    )
    p.add_argument(
        "--intron-status-rate",
        type=int,
        default=defaults.intron_status_rate_per_min,
        help="status calls per minute per key (0 disables)",
    )
    p.add_argument("--invox-status-key", choices=STATUS_KEYS, default=defaults.invox_status_key)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--public-base-url", default=None, help="base of signed URLs handed out")
    return p


def _config(args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(
        intron_api_key=args.intron_api_key,
        invox_static_token=args.invox_static_token,
        invox_app_id=args.invox_app_id,
        invox_app_key=args.invox_app_key,
        llm_api_key=args.llm_api_key,
        token_ttl_s=args.token_ttl_s,
        polls_before_ready=args.polls_before_ready,
        latency_ms=args.latency_ms,
        ready_after_ms=args.ready_after_ms,
        intron_upload_rate_per_min=args.intron_upload_rate,
        intron_status_rate_per_min=args.intron_status_rate,
        invox_status_key=args.invox_status_key,
        seed=args.seed,
        public_base_url=args.public_base_url,
    )


async def _serve(config: SandboxConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_sandbox(config, host, port) as sandbox:
        print(json.dumps({"event": "ready", "base_url": sandbox.base_url}), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.allow_non_loopback and not _is_loopback(args.host):
        parser.error(f"refusing to bind to non-loopback host {args.host!r}")
    try:
        config = _config(args)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
