"""One broker user per role, limited to the prefix (issue 19, item 6; docs/operations.md,
"TLS and least privilege"), on a private node shared by this module: the submitter publishes
jobs but cannot read a stage queue or the dead letters; the worker runs a job as its own user."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused

from ops.rabbit_node import PrivateNode, private_node
from ops.sandbox import running_sandbox
from tests.harness import (
    default_sandbox_config,
    make_job,
    running_worker,
    unique_prefix,
    watching,
    worker_env,
    write_wav,
)
from worker.broker import Publisher, build_message
from worker.settings import Settings
from worker.topology import Names, declare_topology

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(180),
]


def role_permissions(prefix: str) -> dict[str, tuple[str, str, str, str]]:
    """user -> (configure, write, read, tags), as docs/operations.md gives them."""
    p = re.escape(prefix)
    return {
        "scribe-worker": (f"^{p}\\.", f"^{p}\\.", f"^{p}\\.", ""),
        "scribe-submitter": ("^$", f"^{p}\\.jobs$", "^$", ""),
        "scribe-operator": ("^$", f"^{p}\\.jobs$", f"^{p}\\.", "monitoring"),
    }


@dataclass
class Roles:
    node: PrivateNode
    prefix: str
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"amqp://{user}:{self.passwords[user]}@127.0.0.1:{self.node.port}/"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def roles() -> AsyncIterator[Roles]:
    prefix = unique_prefix()
    async with private_node("scribe-roles") as node:
        passwords = {}
        for user, (configure, write, read, tags) in role_permissions(prefix).items():
            passwords[user] = secrets.token_hex(12)
            await node.ctl("add_user", user, passwords[user])
            await node.ctl("set_permissions", "-p", "/", user, configure, write, read)
            await node.ctl("set_user_tags", user, *([tags] if tags else []))
        # The topology, as an administrator would declare it before any role connects.
        settings = Settings.from_env(worker_env(prefix, "http://127.0.0.1:9", Path("/tmp")))
        connection = await aio_pika.connect(node.amqp_url)
        async with connection:
            await declare_topology(await connection.channel(), Names(prefix), settings.retry)
        yield Roles(node, prefix, passwords)


async def _never_called(message: AbstractIncomingMessage) -> None:
    raise AssertionError("the submitter consumed a message")


async def test_the_submitter_publishes_jobs_but_reads_nothing(roles: Roles) -> None:
    names = Names(roles.prefix)
    connection = await aio_pika.connect(roles.url("scribe-submitter"))
    async with connection:
        channel = await connection.channel()  # publisher confirms: a refused publish raises
        message = build_message(b"{}", correlation_id="least-privilege")
        await Publisher(channel).publish(names.jobs_exchange, "transcribe", message)
        for queue_name in (names.stage_queue("transcribe"), names.dead_letter_queue):
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name, ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await queue.get(fail=False)
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name, ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await queue.consume(_never_called)
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):  # nor publish past the jobs exchange
            await Publisher(channel).publish(names.dead_exchange, "transcribe.x", message)
    # The operator reads dead letters (none here) where the submitter may not.
    operator = await aio_pika.connect(roles.url("scribe-operator"))
    async with operator:
        channel = await operator.channel()
        queue = await channel.get_queue(names.dead_letter_queue, ensure=False)
        assert await queue.get(fail=False) is None


async def test_a_job_completes_with_the_worker_user(roles: Roles, tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "consultation.wav", seconds=2.0)
    async with running_sandbox(default_sandbox_config()) as sandbox:
        env = worker_env(
            roles.prefix,
            sandbox.base_url,
            tmp_path,
            SCRIBE_AMQP_URL=roles.url("scribe-worker"),
        )
        async with running_worker(env), watching(roles.prefix, roles.node.amqp_url) as watcher:
            job = make_job(audio)
            submitter = await aio_pika.connect(roles.url("scribe-submitter"))
            async with submitter:
                message = build_message(job.to_wire(), correlation_id=str(job.job_id))
                channel = await submitter.channel()
                await Publisher(channel).publish(
                    Names(roles.prefix).jobs_exchange, "transcribe", message
                )
            outcome = await watcher.outcome(str(job.job_id), timeout_s=60)
    assert outcome["type"] == "job.completed", outcome
