"""amqps end to end (issue 19, item 5): a CA, a server and a client certificate made here with
the openssl CLI, a TLS listener on a private node (ops/rabbit_node.py) that requires a client
certificate, a job over it; a wrong CA stops scribe-worker at start with one clear line."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ops.rabbit_node import BROKER_USER, PrivateNode, free_port, private_node
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
from tests.tls_certs import make_ca, make_leaf
from worker.startup import EXIT_BROKER_REFUSED

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    """CA, server (localhost, 127.0.0.1), client and an unrelated CA; readable by rabbitmq."""
    directory = Path(tempfile.mkdtemp(prefix="scribe-tls-"))
    try:
        make_ca(directory, "ca")
        make_ca(directory, "other-ca")
        make_leaf(directory, "ca", "server", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        make_leaf(directory, "ca", "client", "extendedKeyUsage=clientAuth")
        owner = pwd.getpwnam(BROKER_USER)
        for path in (directory, *directory.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_node(certs: Path) -> AsyncIterator[tuple[PrivateNode, int]]:
    port = free_port()
    config = (
        f"listeners.ssl.default = {port}\n"
        f"ssl_options.cacertfile = {certs / 'ca.pem'}\n"
        f"ssl_options.certfile = {certs / 'server.pem'}\n"
        f"ssl_options.keyfile = {certs / 'server.key'}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n"
    )
    async with private_node("scribe-tls", config) as node:
        yield node, port


def _tls_env(certs: Path, ca: str, port: int) -> dict[str, str]:
    return {
        "SCRIBE_AMQP_URL": f"amqps://guest:guest@localhost:{port}/",
        "SCRIBE_AMQP_CA_FILE": str(certs / f"{ca}.pem"),
        "SCRIBE_AMQP_CERT_FILE": str(certs / "client.pem"),
        "SCRIBE_AMQP_KEY_FILE": str(certs / "client.key"),
    }


async def _ssl_flags(node: PrivateNode) -> list[str]:
    return (await node.ctl_output("list_connections", "ssl", "-q", "-s") or "").split()


async def _cli(env: dict[str, str], module: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_a_job_completes_over_amqps_with_a_client_certificate(
    tls_node: tuple[PrivateNode, int], certs: Path, tmp_path: Path
) -> None:
    node, tls_port = tls_node
    prefix = unique_prefix()
    audio = write_wav(tmp_path / "consultation.wav", seconds=2.0)
    async with running_sandbox(default_sandbox_config()) as sandbox:
        env = worker_env(prefix, sandbox.base_url, tmp_path, **_tls_env(certs, "ca", tls_port))
        # The watcher uses the node's plain listener: only the worker speaks TLS.
        async with running_worker(env), watching(prefix, node.amqp_url) as watcher:
            job_id = await watcher.submit(make_job(audio))
            outcome = await watcher.outcome(job_id, timeout_s=60)
            flags = await _ssl_flags(node)
            # scribe-submit and scribe-dlq read the same TLS settings.
            submitted = str(uuid.uuid4())
            code, text = await _cli(env, "ops.cli_submit", "--audio-file", str(audio),
                                    "--job-id", submitted)  # fmt: skip
            assert code == 0, text
            assert (await watcher.outcome(submitted, timeout_s=60))["type"] == "job.completed"
            code, text = await _cli(env, "ops.cli_dlq", "stats")
            assert code == 0, text
    assert outcome["type"] == "job.completed", outcome
    assert "true" in flags, flags  # the worker's connection is TLS
    assert "false" in flags, flags  # the watcher's is not


@pytest.mark.parametrize(
    ("ca", "server_name", "reason"),
    [
        pytest.param("other-ca", "", "self-signed certificate in certificate chain", id="wrong-ca"),
        pytest.param("ca", "not-the-broker.example", "Hostname mismatch", id="wrong-name"),
    ],
)
async def test_a_wrong_ca_or_name_stops_the_worker_at_start_with_one_line(
    tls_node: tuple[PrivateNode, int],
    certs: Path,
    tmp_path: Path,
    ca: str,
    server_name: str,
    reason: str,
) -> None:
    _, tls_port = tls_node
    env = {
        **os.environ,
        **worker_env(unique_prefix(), "http://127.0.0.1:9", tmp_path),
        **_tls_env(certs, ca, tls_port),
        "SCRIBE_AMQP_URL": f"amqps://guest:hunter2-secret@localhost:{tls_port}/",
        "SCRIBE_AMQP_SERVER_NAME": server_name,
        "SCRIBE_BROKER_START_TIMEOUT_S": "30",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli_worker", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 25)  # no 30 s of retries
    text = (out + err).decode()
    assert process.returncode == EXIT_BROKER_REFUSED, text
    assert "TLS verification of the broker at localhost:" in text, text
    assert reason in text, text
    assert "Traceback" not in text, text
    assert "hunter2" not in text, text
