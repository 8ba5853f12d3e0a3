"""A RabbitMQ node of our own, for runs that restart or kill the broker (scribe-chaos).

The machine's node on 5672 is shared: nothing here stops, restarts or reconfigures it. A private
node gets its own node name, AMQP and distribution ports, data and log directories (owned by the
`rabbitmq` user, as Debian's rabbitmq-server requires) and config file, started with Debian's
`rabbitmq-server -detached`; stop() shuts it down and removes every file it made. It shares the
machine's Erlang cookie, so rabbitmqctl reaches it with `-n <name>`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 90.0
CTL_TIMEOUT_S = 120.0
MAX_CTL_OUTPUT_BYTES = 1_000_000
BROKER_USER = "rabbitmq"


class NodeError(RuntimeError):
    """The private node could not be started, restarted or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateNode:
    name: str
    port: int
    dist_port: int
    base: Path
    # More rabbitmq.conf lines (a TLS listener, say), after the loopback TCP listener.
    extra_config: str = ""

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
        }

    async def start(self) -> None:
        self._write_files()
        await _run(["rabbitmq-server", "-detached"], self.environment(), "start")
        await self.await_startup()

    async def await_startup(self) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if await self.ctl_ok("await_startup", "--timeout", "10"):
                return
            await asyncio.sleep(1.0)
        raise NodeError(f"node {self.name} did not start within {START_TIMEOUT_S:.0f} s")

    async def restart_app(self, down_s: float = 2.0) -> None:
        """stop_app, a pause, start_app: the broker restart scribe-chaos exercises."""
        try:
            await self.ctl("stop_app")
            await asyncio.sleep(down_s)
        finally:
            await self.ctl("start_app")
            await self.await_startup()

    async def stop(self) -> None:
        """Stop the node (if it runs) and remove its files."""
        try:
            await self.ctl_ok("stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    async def ctl(self, *args: str) -> None:
        if not await self.ctl_ok(*args):
            raise NodeError(f"rabbitmqctl -n {self.name} {args[0]} failed")

    async def ctl_ok(self, *args: str) -> bool:
        return await self.ctl_output(*args) is not None

    async def ctl_output(self, *args: str) -> str | None:
        """rabbitmqctl -n <node> args: its stdout (bounded), or None if it failed or timed out."""
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-n",
            self.name,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), CTL_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None
        if process.returncode != 0:
            return None
        return out[:MAX_CTL_OUTPUT_BYTES].decode("utf-8", "replace")

    def _write_files(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n{self.extra_config}"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        owner = pwd.getpwnam(BROKER_USER)
        for path in (self.base, *self.base.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)


async def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise NodeError(f"rabbitmq-server could not {what} the private node")


@asynccontextmanager
async def private_node(label: str = "scribe", extra_config: str = "") -> AsyncIterator[PrivateNode]:
    """A fresh node for the block, gone afterwards (files included)."""
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix=f"{label}-rabbit-"))
    node = PrivateNode(f"{label}-{port}@localhost", port, free_port(), base, extra_config)
    try:
        await node.start()
        yield node
    finally:
        await node.stop()
