"""`python -m ops.bench.instant_worker`: WorkerApp with the instant providers, until SIGTERM.

Settings come from SCRIBE_* variables as for scribe-worker. Prints one JSON line,
{"event": "ready", "pid": ..., "http_port": ...}, once it consumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from ops.bench.instant import instant_registry
from worker.app import WorkerApp
from worker.cli_worker import serve
from worker.logs import configure_logging
from worker.settings import Settings


def _announce(app: WorkerApp) -> None:
    print(json.dumps({"event": "ready", "pid": os.getpid(), "http_port": app.http_port}))
    sys.stdout.flush()


def main() -> int:
    settings = Settings.from_env(dict(os.environ))
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, instant_registry, _announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
