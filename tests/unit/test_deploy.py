"""deploy/kubernetes: every manifest against the Kubernetes JSON schemas (shipped in the
kubernetes-validate wheel, nothing fetched), KEDA's ScaledObject and TriggerAuthentication
against a small schema written here from KEDA's documented fields, and the worker's own
Settings loading what each stage's Deployment gives it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.unit.test_compose import settings_variables
from worker.constants import STAGES
from worker.settings import Settings
from worker.topology import Names

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest and the newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.30", "1.37")
KEDA_API = "keda.sh/v1alpha1"
NOT_KUBERNETES = {"kustomize.config.k8s.io/v1beta1"}  # kustomization.yaml: checked below

# KEDA 2.x's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1), reduced to the fields
# its documentation lists (spec, scaleTargetRef, triggers; secretTargetRef, env), with the RabbitMQ
# scaler's trigger metadata (a free string map in the CRD, so only this schema checks its keys).
# Every object is closed: a misspelt field fails. A subset, not the CRDs' OpenAPI schemas: fields
# outside it (fallback, advanced, vault, ...) are refused too until added here. The field names
# follow KEDA's CRDs and its RabbitMQ scaler's metadata keys; KEDA's CRD files are not vendored.
_STRING: dict[str, Any] = {"type": "string"}
_NUMBER = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}
_BOOLEAN = {"enum": ["true", "false"]}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
_COUNT = {"type": "integer", "minimum": 0}


def _closed(properties: dict[str, Any], *required: str, **extra: Any) -> dict[str, Any]:
    """A JSON Schema object with exactly these properties (these ones required)."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": list(required), **extra}


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"type": "object", "additionalProperties": _STRING}
    metadata = _closed(
        {"name": _NAME, "namespace": _NAME, "labels": labels, "annotations": labels}, "name"
    )
    return _closed(
        {
            "apiVersion": {"const": KEDA_API},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    )


_RABBITMQ_TRIGGER = _closed(
    {
        "type": {"const": "rabbitmq"},
        "name": _STRING,
        "metadata": _closed(
            {
                "queueName": {"type": "string", "minLength": 1},
                "mode": {"enum": ["QueueLength", "MessageRate"]},
                "value": _NUMBER,
                "activationValue": _NUMBER,
                "host": _STRING,
                "hostFromEnv": _STRING,
                "protocol": {"enum": ["auto", "http", "amqp"]},
                "vhostName": _STRING,
                "useRegex": _BOOLEAN,
                "excludeUnacknowledged": _BOOLEAN,
                "pageSize": {"type": "string", "pattern": "^[0-9]+$"},
                "operation": {"enum": ["sum", "max", "avg"]},
                "timeout": _STRING,
                "unsafeSsl": _BOOLEAN,
            },
            "queueName",
            "mode",
            "value",
        ),
        "authenticationRef": _closed(
            {
                "name": _NAME,
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
            "name",
        ),
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    },
    "type",
    "metadata",
)
SCALED_OBJECT_SCHEMA = _resource(
    "ScaledObject",
    _closed(
        {
            "scaleTargetRef": _closed(
                {
                    "apiVersion": _STRING,
                    "kind": _STRING,
                    "name": _NAME,
                    "envSourceContainerName": _STRING,
                },
                "name",
            ),
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": _COUNT,
            "initialCooldownPeriod": _COUNT,
            "idleReplicaCount": _COUNT,
            "minReplicaCount": _COUNT,
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": _RABBITMQ_TRIGGER},
        },
        "scaleTargetRef",
        "triggers",
    ),
)
TRIGGER_AUTHENTICATION_SCHEMA = _resource(
    "TriggerAuthentication",
    _closed(
        {
            "secretTargetRef": {
                "type": "array",
                "minItems": 1,
                "items": _closed(
                    {"parameter": _STRING, "name": _NAME, "key": _STRING},
                    "parameter",
                    "name",
                    "key",
                ),
            },
            "env": {
                "type": "array",
                "items": _closed(
                    {"parameter": _STRING, "name": _STRING, "containerName": _STRING},
                    "parameter",
                    "name",
                ),
            },
        },
        minProperties=1,
    ),
)
KEDA_SCHEMAS = {
    "ScaledObject": SCALED_OBJECT_SCHEMA,
    "TriggerAuthentication": TRIGGER_AUTHENTICATION_SCHEMA,
}


def manifest_files() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


def documents() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict), path.name
            found.append((path.name, document))
    return found


def resources() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in documents() if doc["apiVersion"] not in NOT_KUBERNETES]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for _, doc in resources():
        if doc["kind"] == kind:
            name = doc["metadata"]["name"]
            assert name not in found, f"two {kind} named {name}"
            found[name] = doc
    return found


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def by_stage(kind: str) -> dict[str, dict[str, Any]]:
    return {component(doc): doc for doc in of_kind(kind).values()}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    found: dict[str, Any] = containers[0]
    return found


def config_map() -> dict[str, str]:
    maps = of_kind("ConfigMap")
    assert set(maps) == {"scribe-config"}
    return {str(key): str(value) for key, value in maps["scribe-config"]["data"].items()}


def test_there_are_manifests() -> None:
    names = {path.name for path in manifest_files()}
    assert {f"{stage}.yaml" for stage in STAGES} <= names
    assert {"configmap.yaml", "keda-auth.yaml", "kustomization.yaml"} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_manifest_is_valid_kubernetes(version: str) -> None:
    """Strict: an unknown field (a misspelt key) is an error, not silently dropped."""
    checked = 0
    for name, doc in resources():
        if doc["apiVersion"] == KEDA_API:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")
        checked += 1
    assert checked >= 1 + 2 * len(STAGES)  # the ConfigMap, a Deployment and a PDB per stage


def test_the_validator_refuses_a_wrong_manifest() -> None:
    """The check above can fail: a misspelt field and a wrong type are both refused."""
    deployment = by_stage("Deployment")["transcribe"]
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_keda_resources_match_the_written_schema() -> None:
    checked = 0
    for name, doc in resources():
        if doc["apiVersion"] != KEDA_API:
            continue
        assert doc["kind"] in KEDA_SCHEMAS, f"{name}: no schema for {doc['kind']}"
        jsonschema.Draft202012Validator(KEDA_SCHEMAS[doc["kind"]]).validate(doc)
        checked += 1
    assert checked == len(STAGES) + 1
    broken = by_stage("ScaledObject")["poll"]
    trigger = {**broken["spec"]["triggers"][0], "metadata": {"queueLength": "5"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(
            {**broken, "spec": {**broken["spec"], "triggers": [trigger]}}
        )


def test_kustomization_lists_every_manifest() -> None:
    kustomizations = [doc for name, doc in documents() if name == "kustomization.yaml"]
    assert len(kustomizations) == 1
    listed = kustomizations[0]["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path in manifest_files()} - {"kustomization.yaml"}


def test_every_stage_has_a_deployment_a_pdb_and_a_scaled_object() -> None:
    for kind in ("Deployment", "PodDisruptionBudget", "ScaledObject"):
        assert set(by_stage(kind)) == set(STAGES), kind
    deployments = by_stage("Deployment")
    for stage, pdb in by_stage("PodDisruptionBudget").items():
        template = deployments[stage]["spec"]["template"]["metadata"]["labels"]
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template.items(), stage
        assert deployments[stage]["spec"]["selector"]["matchLabels"] == selector, stage
        # One pod at a time may be evicted: a drain never blocks on a single replica.
        assert pdb["spec"].get("maxUnavailable") == 1, stage


def test_probes_are_on_the_workers_http_port() -> None:
    port = int(config_map()["SCRIBE_HTTP_PORT"])
    for stage, deployment in by_stage("Deployment").items():
        worker = container(deployment)
        ports = {entry["name"]: entry["containerPort"] for entry in worker["ports"]}
        assert ports == {"http": port}, stage
        probes = {
            kind: worker[kind]["httpGet"]
            for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        }
        assert probes["livenessProbe"]["path"] == "/healthz", stage
        assert probes["startupProbe"]["path"] == "/healthz", stage
        assert probes["readinessProbe"]["path"] == "/readyz", stage
        assert {probe["port"] for probe in probes.values()} == {"http"}, stage


def test_pods_run_locked_down() -> None:
    for stage, deployment in by_stage("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, stage
        assert pod["securityContext"]["runAsUser"] >= 10000, stage  # the image's USER 10001
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", stage
        assert pod["automountServiceAccountToken"] is False, stage
        worker = container(deployment)
        security = worker["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, stage
        assert security["allowPrivilegeEscalation"] is False, stage
        assert security["capabilities"] == {"drop": ["ALL"]}, stage
        resources = worker["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), stage
        assert {"cpu", "memory"} <= set(resources["limits"]), stage
        # The root file system is read-only: /tmp (chunk files, the work dir) is an emptyDir.
        mounts = {mount["mountPath"]: mount["name"] for mount in worker["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], stage


def secret_files(deployment: dict[str, Any]) -> dict[str, str]:
    """mount path -> Secret name, for every Secret volume the worker container mounts."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    found: dict[str, str] = {}
    for mount in container(deployment)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            assert mount.get("readOnly") is True, mount
            found[mount["mountPath"]] = secret["secretName"]
    return found


def stage_environment(deployment: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """What the pod's worker sees: the ConfigMap, then the container's env, with each Secret
    reference given a stand-in value and each *_FILE pointed at a stand-in file."""
    env = dict(config_map())
    mounted = secret_files(deployment)
    for entry in container(deployment)["env"]:
        name = entry["name"]
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[name] = {
                "SCRIBE_AMQP_URL": "amqp://scribe:stand-in@rabbitmq.scribe.svc:5672/",
                "SCRIBE_REDIS_URL": "redis://:stand-in@redis.scribe.svc:6379/0",
            }[name]
            assert ref["name"].startswith("scribe-"), name
            continue
        value = str(entry["value"])
        if name.endswith("_FILE"):
            directory = str(Path(value).parent)
            assert directory in mounted, f"{name} names a file no Secret volume provides"
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("stand-in-secret-" + "x" * 32, encoding="utf-8")
            value = str(stand_in)
        env[name] = value
    return env


def test_each_deployment_gives_the_worker_settings_it_accepts(tmp_path: Path) -> None:
    known = settings_variables()
    config = config_map()
    assert set(config) <= known, set(config) - known
    for stage, deployment in by_stage("Deployment").items():
        env = stage_environment(deployment, tmp_path)
        assert set(env) <= known, (stage, set(env) - known)
        settings = Settings.from_env(env)
        assert settings.stages == (stage,)
        assert settings.http_host == "0.0.0.0"
        assert settings.http_port == container(deployment)["ports"][0]["containerPort"]
        assert settings.intron.api_key is not None
        assert settings.invox.access_token is not None
        # SIGTERM drains within SCRIBE_SHUTDOWN_GRACE_S before the kubelet's SIGKILL.
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.shutdown_grace_s, stage
        assert settings.chunking.work_dir.is_relative_to("/tmp"), stage  # on the emptyDir


def test_scaled_objects_follow_each_stage_queue() -> None:
    names = Names(prefix=config_map()["SCRIBE_PREFIX"])
    deployments = by_stage("Deployment")
    authentications = of_kind("TriggerAuthentication")
    scaled_objects = by_stage("ScaledObject")
    for stage in STAGES:
        spec = scaled_objects[stage]["spec"]
        assert spec["scaleTargetRef"]["name"] == deployments[stage]["metadata"]["name"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], stage
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        assert metadata["queueName"] == names.stage_queue(stage)
        assert metadata["mode"] == "QueueLength"
        assert not {"host", "hostFromEnv"} & set(metadata), stage  # from the Secret only
        assert trigger["authenticationRef"]["name"] in authentications, stage
    for authentication in authentications.values():
        (target,) = authentication["spec"]["secretTargetRef"]
        assert target["parameter"] == "host"
        assert (target["name"], target["key"]) == ("scribe-broker", "amqp-url")


def test_no_secret_value_is_inlined() -> None:
    """No Secret object, no credential in a variable or the ConfigMap: every secret the worker
    reads arrives as a file (<NAME>_FILE) or from a Secret reference."""
    assert not of_kind("Secret")
    secrets = {
        name.removesuffix("_FILE") for name in settings_variables() if name.endswith("_FILE")
    }
    by_reference = {"SCRIBE_AMQP_URL", "SCRIBE_REDIS_URL", "SCRIBE_DATABASE_URL"}
    assert not (secrets | by_reference) & set(config_map())
    for stage, deployment in by_stage("Deployment").items():
        for entry in container(deployment)["env"]:
            name = entry["name"]
            if name in secrets | by_reference:
                assert "value" not in entry, (stage, name)
                assert set(entry["valueFrom"]) == {"secretKeyRef"}, (stage, name)
    credential = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@|BEGIN [A-Z ]*PRIVATE KEY")
    for path in manifest_files():
        assert not credential.search(path.read_text(encoding="utf-8")), path.name
