"""`python -m ops.bench.instant_worker`: WorkerApp with the instant providers, until SIGTERM.

Settings come from SCRIBE_* variables as for scribe-worker. Prints one JSON line,
{"event": "ready", "pid": ..., "http_port": ...}, once it consumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from ops.bench.instant import instant_registry
from worker.app import WorkerApp
from worker.logs import configure_logging
from worker.settings import Settings


async def _run(settings: Settings) -> None:
    app = WorkerApp(settings, instant_registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    try:
        print(json.dumps({"event": "ready", "pid": os.getpid(), "http_port": app.http_port}))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await app.stop()


def main() -> int:
    settings = Settings.from_env(dict(os.environ))
    configure_logging(settings.log_level)
    asyncio.run(_run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
