"""The Kubernetes manifests (deploy/k8s) render, follow their schemas and agree with the code.

Each overlay is rendered with `kubectl kustomize` (kubectl is required: the test fails, never
skips, without it) and every object is checked against the Kubernetes schemas that the
`kubernetes-validate` package ships (strict: unknown fields are errors), and the KEDA and
Prometheus-operator objects against the openAPIV3Schema of their CRDs, vendored under
tests/schemas/keda and tests/schemas/prometheus-operator (see the README there). Then against
Herald itself: every HERALD_* variable is a setting of the service it is given to and has a
valid value, ports and probes are the ones the services serve, the KEDA triggers are exactly a
channel's work queues (from herald_common.topology), the grace period outlasts the drain, the
security context matches the image's user, and the network policies allow only what must talk.
yamllint checks the YAML under deploy/.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from herald_api.app import create_app
from herald_api.settings import ApiSettings
from herald_channel_email.settings import EmailSettings
from herald_channel_push.settings import PushSettings
from herald_channel_push.vapid import b64url
from herald_channel_sms.settings import SmsSettings
from herald_common.channel_settings import ChannelSettingsBase
from herald_common.channels import queue_keys
from herald_common.migrate import apply_migrations
from herald_common.ops import add_ops_routes
from herald_common.settings import CommonSettings
from herald_common.topology import Topology
from herald_dispatcher.settings import DispatcherSettings
from tests.support.workspace import workspace_members

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SECRET_TEMPLATE = K8S / "base" / "secret.template.yaml"
SCHEMAS = ROOT / "tests" / "schemas"
CRDS = (
    SCHEMAS / "keda" / "keda.sh_scaledobjects.yaml",
    SCHEMAS / "keda" / "keda.sh_triggerauthentications.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_servicemonitors.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_podmonitors.yaml",
)

KUBERNETES_VERSIONS = ("1.30.0", "1.32.0")
"""Schemas the manifests are validated against: 1.30, the oldest release they are meant for
(matchLabelKeys in topology spread constraints needs 1.27, PodDisruptionBudget policy/v1 1.21),
and 1.32, the kubectl that renders them here and on CI."""

INSTALL_KUBECTL = (
    "kubectl is not installed (it renders the kustomize overlays: `kubectl kustomize`). Install "
    "kubectl 1.32 or later, which has kustomize v5 built in: on Debian or Ubuntu, Kubernetes' "
    "apt repository (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/, package "
    "`kubectl`), or the binary: curl -LO https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/"
    "kubectl && install -m 0755 kubectl /usr/local/bin/kubectl"
)

SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "herald-api": ApiSettings,
    "herald-dispatcher": DispatcherSettings,
    "herald-channel-email": EmailSettings,
    "herald-channel-sms": SmsSettings,
    "herald-channel-push": PushSettings,
    "herald-migrate": CommonSettings,
}
"""Every workload (Deployment or Job) and the settings model its process reads."""

HTTP_FIELDS: dict[str, tuple[str, str]] = {
    "herald-api": ("api_host", "api_port"),
    "herald-dispatcher": ("dispatcher_http_host", "dispatcher_http_port"),
    "herald-channel-email": ("email_http_host", "email_http_port"),
    "herald-channel-sms": ("sms_http_host", "sms_http_port"),
    "herald-channel-push": ("push_http_host", "push_http_port"),
}
"""Deployment -> (listen address, port) settings of the HTTP server it serves probes on."""

CHANNEL_OF = {f"herald-channel-{channel}": channel for channel in ("email", "sms", "push")}

IMAGE_OF = {
    "herald-api": "herald-api",
    "herald-dispatcher": "herald-dispatcher",
    "herald-channel-email": "herald-channel-email",
    "herald-channel-sms": "herald-channel-sms",
    "herald-channel-push": "herald-channel-push",
    "herald-migrate": "herald-api",  # herald-migrate comes with herald-common, in every image
}
"""Workload -> the image (deploy/Dockerfile, SERVICE=<name without herald->) it runs."""

MEASURED_RSS_MB = {
    "herald-api": 102,
    "herald-dispatcher": 80,
    "herald-channel-email": 72,
    "herald-channel-sms": 72,
    "herald-channel-push": 72,
}
"""The highest resident memory README "Performance" reports per service; a memory limit below it
would have the kernel kill the service under the load it was measured at."""

CAMPAIGN_STAGING_RATIO = 2.5
"""Bytes the API stages in its temporary file per byte of campaign CSV (the row number, campaign
id and data as JSON are added to each row; measured on a `to,name` CSV of 100,000 rows)."""

FLAP_CYCLES = 10
"""A channel paused by its breakers tries a call every BREAKER_COOLDOWN: the KEDA scale-down
window (and cooldownPeriod) must span this many of those cycles."""

REFERENCE_DUMMIES = {
    "HERALD_DATABASE_URL": "postgresql://herald:secret@postgres.herald-db.svc:5432/herald",
    "HERALD_AMQP_URL": "amqp://herald:secret@rabbitmq.herald-broker.svc:5672/",
    "HERALD_API_BOOTSTRAP_KEY": "hrld_" + "k" * 43,
    "HERALD_EMAIL_SMTP_USERNAME": "herald",
    "HERALD_EMAIL_SMTP_PASSWORD": "smtp-password",
    "HERALD_EMAIL_SENDGRID_API_KEY": "SG.sendgrid-key",
    "HERALD_SMS_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "HERALD_SMS_TWILIO_AUTH_TOKEN": "t" * 32,
    "HERALD_SMS_VONAGE_API_KEY": "vonage-key",
    "HERALD_SMS_VONAGE_API_SECRET": "vonage-secret",
}
"""What a filled-in Secret holds for each key a workload reads (the VAPID key is made per run):
the settings are loaded with these to check every configured value."""


# -- rendering ------------------------------------------------------------------------------------


@cache
def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(INSTALL_KUBECTL)
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


@dataclass(frozen=True)
class EnvRef:
    """An environment variable read from the Secret at run time."""

    secret: str
    key: str
    optional: bool


@dataclass(frozen=True)
class Overlay:
    name: str
    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Deployments and Jobs by name."""
        return {
            o["metadata"]["name"]: o for o in self.objects if o["kind"] in ("Deployment", "Job")
        }

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.of_kind("Deployment")}

    def container(self, workload: str) -> dict[str, Any]:
        containers = pod_spec(self.workloads()[workload])["containers"]
        assert len(containers) == 1, f"{workload}: one container expected"
        result: dict[str, Any] = containers[0]
        return result

    def env(self, workload: str) -> dict[str, str | EnvRef]:
        """The container's environment as the kubelet would build it (ConfigMaps resolved;
        Secret values left as references)."""
        container = self.container(workload)
        env: dict[str, str | EnvRef] = {}
        for source in container.get("envFrom", []):
            assert set(source) == {"configMapRef"}, f"{workload}: envFrom {source}"
            assert "prefix" not in source
            config_map = self.get("ConfigMap", source["configMapRef"]["name"])
            env.update(config_map.get("data", {}))
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            else:
                ref = variable["valueFrom"]["secretKeyRef"]
                env[variable["name"]] = EnvRef(ref["name"], ref["key"], ref.get("optional", False))
        return env

    def namespace(self) -> str:
        """HERALD_NAMESPACE the channel services are given."""
        values = {self.env(name).get("HERALD_NAMESPACE") for name in CHANNEL_OF}
        assert len(values) == 1, f"{self.name}: channel services disagree: {values}"
        value = values.pop()
        assert value is None or isinstance(value, str)
        return value or str(CommonSettings.model_fields["namespace"].default)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    name: str = request.param
    return Overlay(name, kustomize(K8S / "overlays" / name))


def env_name(model: type[BaseSettings], field: str) -> str:
    prefix = model.model_config.get("env_prefix")
    assert prefix == "HERALD_", f"{model.__name__} reads its fields with prefix {prefix!r}"
    return f"{prefix}{field.upper()}"


def setting_names(model: type[BaseSettings]) -> set[str]:
    return {env_name(model, field) for field in model.model_fields}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Values a filled-in Secret gives: the fixed ones, a VAPID key, an FCM key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    vapid = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = tmp_path_factory.mktemp("fcm") / "service-account.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "herald-test",
                "private_key_id": "0" * 40,
                "private_key": pem,
                "client_email": "herald@herald-test.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return {
        **REFERENCE_DUMMIES,
        "HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY": vapid,
        "fcm-service-account.json": str(account),
    }


def mounted_secret_file(overlay: Overlay, workload: str, path: str) -> str:
    """The key of the Secret `herald` that ``path`` is mounted from in ``workload``."""
    spec = pod_spec(overlay.workloads()[workload])
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    file = PurePosixPath(path)
    for mount in overlay.container(workload).get("volumeMounts", []):
        if PurePosixPath(mount["mountPath"]) != file.parent:
            continue
        secret = volumes[mount["name"]].get("secret")
        assert secret is not None, f"{workload}: {path} is not in a Secret volume"
        assert secret["secretName"] == "herald"
        for item in secret.get("items", []):
            if item["path"] == file.name:
                key: str = item["key"]
                return key
    raise AssertionError(f"{workload}: nothing mounts {path}")


@cache
def environment_clean_of_herald() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("HERALD_")}


def load_settings(
    overlay: Overlay, workload: str, credentials: dict[str, str]
) -> tuple[BaseSettings, dict[str, str]]:
    """The workload's settings as its process would read them, given a filled-in Secret."""
    values: dict[str, str] = {}
    for name, value in overlay.env(workload).items():
        if isinstance(value, EnvRef):
            assert value.key in credentials, f"no test value for the Secret's {value.key}"
            values[name] = credentials[value.key]
        else:
            values[name] = value
    path = values.get("HERALD_PUSH_FCM_CREDENTIALS_FILE")
    if path is not None:
        values["HERALD_PUSH_FCM_CREDENTIALS_FILE"] = credentials[
            mounted_secret_file(overlay, workload, path)
        ]
    with mock.patch.dict(os.environ, {**environment_clean_of_herald(), **values}, clear=True):
        return SERVICE_SETTINGS[workload](), values


# -- schemas --------------------------------------------------------------------------------------


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema, closed like `kubectl --validate=strict`
    (an unknown field is an error, not silently pruned)."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition"
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = closed(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {
        key: (
            {name: closed(sub) for name, sub in value.items()}
            if key == "properties"
            else closed(value)
            if key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not")
            else value
        )
        for key, value in schema.items()
    }
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def custom_resource_errors(document: dict[str, Any]) -> list[str]:
    schema = crd_schemas().get((document["apiVersion"], document["kind"]))
    if schema is None:
        return [f"no vendored CRD for {document['apiVersion']} {document['kind']}"]
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]
    metadata = document["metadata"]
    errors += [
        f"metadata.{key}: not expected"
        for key in set(metadata) - {"name", "namespace", "labels", "annotations"}
    ]
    if not (DNS_1123_SUBDOMAIN.fullmatch(metadata["name"]) and len(metadata["name"]) <= 253):
        errors.append(f"metadata.name {metadata['name']!r}: not a DNS-1123 subdomain")
    for key, value in {**metadata.get("labels", {}), **metadata.get("annotations", {})}.items():
        if not isinstance(value, str):
            errors.append(f"metadata: {key} is not a string")
    return errors


def kubernetes_errors(document: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(map(str, error.path)) or "(top)"
        return [f"{path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def is_custom(document: dict[str, Any]) -> bool:
    return document["apiVersion"].split("/")[0] in ("keda.sh", "monitoring.coreos.com")


def test_vendored_crds_are_the_ones_the_manifests_use(overlay: Overlay) -> None:
    used = {(o["apiVersion"], o["kind"]) for o in overlay.objects if is_custom(o)}
    assert used, "no KEDA or Prometheus-operator objects"
    assert used <= set(crd_schemas()), used - set(crd_schemas())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_follow_the_kubernetes_schemas(overlay: Overlay, version: str) -> None:
    errors = [
        f"{o['kind']}/{o['metadata']['name']}: {error}"
        for o in overlay.objects
        if not is_custom(o)
        for error in kubernetes_errors(o, version)
    ]
    assert errors == []


def test_custom_resources_follow_their_crds(overlay: Overlay) -> None:
    errors = [
        f"{o['kind']}/{o['metadata']['name']}: {error}"
        for o in overlay.objects
        if is_custom(o)
        for error in custom_resource_errors(o)
    ]
    assert errors == []


def test_the_schemas_reject_what_the_api_server_rejects() -> None:
    objects = kustomize(K8S / "overlays" / "prod")
    scaled = copy.deepcopy(next(o for o in objects if o["kind"] == "ScaledObject"))
    scaled["spec"]["minReplicas"] = 1  # HPA's spelling, not KEDA's
    del scaled["spec"]["triggers"][0]["metadata"]
    errors = custom_resource_errors(scaled)
    assert any("minReplicas" in e for e in errors), errors
    assert any("'metadata' is a required property" in e for e in errors), errors
    monitor = copy.deepcopy(next(o for o in objects if o["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen seconds"
    assert custom_resource_errors(monitor)
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    pod_spec(deployment)["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    assert kubernetes_errors(deployment, KUBERNETES_VERSIONS[0])


def test_yamllint_passes_on_deploy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", ".yamllint", "deploy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The configuration keeps accepting the Compose file, the other YAML of the repository.
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", ".yamllint", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- workloads against the code -------------------------------------------------------------------


def test_every_service_and_the_migration_are_deployed(overlay: Overlay) -> None:
    assert set(overlay.workloads()) == set(SERVICE_SETTINGS)
    assert overlay.get("Job", "herald-migrate")
    assert set(overlay.deployments()) == set(HTTP_FIELDS)
    assert not overlay.of_kind("Secret"), "the Secret is applied by hand (secret.template.yaml)"
    namespaces = {
        o["metadata"].get("namespace") for o in overlay.objects if o["kind"] != "Namespace"
    }
    expected = "herald-dev" if overlay.name == "dev" else "herald"
    assert namespaces == {expected}
    assert [o["metadata"]["name"] for o in overlay.of_kind("Namespace")] == [expected]


def console_scripts(distribution: str) -> set[str]:
    """Console scripts ``distribution`` and the workspace members it depends on install."""
    tables = {
        table["name"]: table
        for table in (
            tomllib.loads((m / "pyproject.toml").read_text())["project"]
            for m in workspace_members()
        )
    }
    table = tables[distribution]
    scripts = set(table.get("scripts", {}))
    for requirement in table.get("dependencies", []):
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        if name in tables:
            scripts |= console_scripts(name)
    return scripts


def test_containers_run_a_console_script_of_their_image(overlay: Overlay) -> None:
    for workload, image in IMAGE_OF.items():
        container = overlay.container(workload)
        reference = container["image"].split("@")[0]
        repository = reference.rsplit(":", 1)[0] if ":" in reference.split("/")[-1] else reference
        assert repository.split("/")[-1] == image, f"{workload}: runs {container['image']}"
        command = container["command"]
        assert command == [workload], f"{workload}: runs {command}"
        assert command[0] in console_scripts(image), f"{workload}: {command[0]} not in {image}"


def test_herald_variables_are_settings_of_the_service(overlay: Overlay) -> None:
    for workload, model in SERVICE_SETTINGS.items():
        names = {n for n in overlay.env(workload) if n.startswith("HERALD_")}
        assert names, workload
        unknown = names - setting_names(model)
        assert not unknown, f"{overlay.name}: {workload} ({model.__name__}) does not read {unknown}"
        others = set(overlay.env(workload)) - names
        assert not others, f"{workload}: variables not Herald's: {others}"


def test_settings_load_with_the_configured_values(
    overlay: Overlay, credentials: dict[str, str]
) -> None:
    for workload in SERVICE_SETTINGS:
        try:
            load_settings(overlay, workload, credentials)
        except ValidationError as error:
            pytest.fail(f"{overlay.name}: {workload} refuses its configuration: {error}")


def test_services_listen_on_every_address_on_their_port(
    overlay: Overlay, credentials: dict[str, str]
) -> None:
    for workload, (host_field, port_field) in HTTP_FIELDS.items():
        settings, values = load_settings(overlay, workload, credentials)
        model = SERVICE_SETTINGS[workload]
        assert values.get(env_name(model, host_field)) == "0.0.0.0", f"{workload}: unreachable"
        port = getattr(settings, port_field)
        container = overlay.container(workload)
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        service = overlay.get("Service", workload)
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": workload}
        assert pod_labels(overlay.workloads()[workload])["app.kubernetes.io/name"] == workload
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "http")]


@cache
def served_paths() -> dict[str, set[str]]:
    """GET paths of the API's application and of the ops server of every other service."""
    with mock.patch.dict(os.environ, environment_clean_of_herald(), clear=True):
        api = create_app(ApiSettings())
    ops = web.Application()
    add_ops_routes(ops, CollectorRegistry(), {})

    def paths(app: web.Application) -> set[str]:
        return {r.resource.canonical for r in app.router.routes() if r.resource is not None}

    return {workload: paths(api if workload == "herald-api" else ops) for workload in HTTP_FIELDS}


def test_probes_are_the_ops_routes_on_the_service_port(overlay: Overlay) -> None:
    for workload in HTTP_FIELDS:
        container = overlay.container(workload)
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        assert probes["readinessProbe"]["path"] == "/readyz"
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["startupProbe"]["path"] == "/healthz"
        for kind, probe in probes.items():
            assert probe["port"] in ("http", container["ports"][0]["containerPort"]), kind
            assert probe["path"] in served_paths()[workload], f"{workload} serves no {probe}"
        assert "/metrics" in served_paths()[workload]


def pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


def test_grace_period_outlasts_the_drain(overlay: Overlay, credentials: dict[str, str]) -> None:
    for workload in HTTP_FIELDS:
        settings, _ = load_settings(overlay, workload, credentials)
        assert isinstance(settings, CommonSettings)
        grace = pod_spec(overlay.workloads()[workload])["terminationGracePeriodSeconds"]
        needed = (
            pre_stop_seconds(overlay.container(workload))
            + settings.shutdown_timeout  # in-flight work drains
            + settings.publish_timeout  # then the last outcomes are published and confirmed
        )
        assert grace > needed, f"{workload}: {grace} s to stop, needs more than {needed} s"


def test_api_leaves_its_service_before_it_stops_accepting(overlay: Overlay) -> None:
    assert pre_stop_seconds(overlay.container("herald-api")) >= 3


def test_pods_run_as_the_image_user_with_nothing_to_spare(overlay: Overlay) -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    user = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile)
    group = re.search(r"groupadd [^\n]*--gid (\d+)", dockerfile)
    assert user, "the Dockerfile makes its user with a fixed uid"
    assert group, "the Dockerfile makes its group with a fixed gid"
    uid, gid = int(user[1]), int(group[1])
    assert re.search(r"^USER herald(:herald)?$", dockerfile, re.M), "the image runs as herald"
    for workload, definition in overlay.workloads().items():
        spec = pod_spec(definition)
        assert spec.get("enableServiceLinks") is False, (
            f"{workload}: Kubernetes would set HERALD_API_PORT=tcp://... for the herald-api "
            "Service, which the API reads as its port"
        )
        assert spec.get("automountServiceAccountToken") is False, workload
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload
        assert pod["runAsUser"] == uid, workload
        assert pod["runAsGroup"] == gid, workload
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, workload
            assert context["readOnlyRootFilesystem"] is True, workload
            assert context["runAsNonRoot"] is True, workload
            assert context["capabilities"] == {"drop": ["ALL"]}, workload
            assert "runAsUser" not in context or context["runAsUser"] == uid
        assert not spec.get("hostNetwork"), workload
        assert not spec.get("hostPID"), workload


def parse_quantity(value: str | int) -> float:
    """A Kubernetes quantity (``500m``, ``128Mi``, ``3Gi``, ``1``) as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_the_only_writable_path_is_the_apis_tmp(
    overlay: Overlay, credentials: dict[str, str]
) -> None:
    for workload, definition in overlay.workloads().items():
        spec = pod_spec(definition)
        writable = {
            mount["mountPath"]
            for mount in overlay.container(workload).get("volumeMounts", [])
            if not mount.get("readOnly")
        }
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if workload != "herald-api":
            assert writable == set(), f"{workload}: nothing of it writes files"
            continue
        assert writable == {"/tmp"}
        (mount,) = overlay.container(workload)["volumeMounts"]
        tmp = volumes[mount["name"]]["emptyDir"]
        assert tmp.get("medium") != "Memory", "staged uploads would count as the pod's memory"
        settings, _ = load_settings(overlay, workload, credentials)
        assert isinstance(settings, ApiSettings)
        staged = (
            CAMPAIGN_STAGING_RATIO
            * settings.api_max_campaign_bytes
            * settings.api_max_campaign_uploads
        )
        assert parse_quantity(tmp["sizeLimit"]) >= staged, "uploads would have the pod evicted"
    # The staging file is tempfile's, which is /tmp when TMPDIR is unset.
    campaigns = (ROOT / "services/api/src/herald_api/campaigns.py").read_text()
    assert "tempfile.TemporaryFile()" in campaigns
    assert all("TMPDIR" not in str(overlay.env(w)) for w in SERVICE_SETTINGS)


def test_resources_are_requested_and_limited(overlay: Overlay) -> None:
    for workload in SERVICE_SETTINGS:
        resources = overlay.container(workload)["resources"]
        for kind in ("cpu", "memory"):
            request = parse_quantity(resources["requests"][kind])
            limit = parse_quantity(resources["limits"][kind])
            assert 0 < request <= limit, f"{workload} {kind}"
        if workload in MEASURED_RSS_MB:
            limit = parse_quantity(resources["limits"]["memory"])
            assert limit >= 2 * MEASURED_RSS_MB[workload] * 1e6, f"{workload}: little headroom"


# -- scaling --------------------------------------------------------------------------------------


def scaler_of(overlay: Overlay, workload: str) -> dict[str, Any] | None:
    targets = [
        o
        for o in overlay.of_kind("HorizontalPodAutoscaler") + overlay.of_kind("ScaledObject")
        if o["spec"]["scaleTargetRef"]["name"] == workload
    ]
    assert len(targets) <= 1, f"{workload}: more than one autoscaler"
    return targets[0] if targets else None


def replica_range(overlay: Overlay, workload: str) -> tuple[int, int]:
    scaler = scaler_of(overlay, workload)
    if scaler is None:
        replicas: int = overlay.deployments()[workload]["spec"]["replicas"]
        return replicas, replicas
    if scaler["kind"] == "ScaledObject":
        return scaler["spec"]["minReplicaCount"], scaler["spec"]["maxReplicaCount"]
    return scaler["spec"]["minReplicas"], scaler["spec"]["maxReplicas"]


def test_each_deployment_scales_one_way(overlay: Overlay) -> None:
    for workload, deployment in overlay.deployments().items():
        scaler = scaler_of(overlay, workload)
        kind = None if scaler is None else scaler["kind"]
        expected = (
            "HorizontalPodAutoscaler"
            if workload == "herald-api"
            else "ScaledObject"
            if workload in CHANNEL_OF
            else None
        )
        assert kind == expected, workload
        if scaler is not None:
            assert scaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            # An applied `replicas` would reset the autoscaler's count on every apply.
            assert "replicas" not in deployment["spec"], workload
    metrics = overlay.get("HorizontalPodAutoscaler", "herald-api")["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]


def test_replicas_per_overlay() -> None:
    dev = Overlay("dev", kustomize(K8S / "overlays" / "dev"))
    prod = Overlay("prod", kustomize(K8S / "overlays" / "prod"))
    for workload in HTTP_FIELDS:
        dev_min, dev_max = replica_range(dev, workload)
        prod_min, prod_max = replica_range(prod, workload)
        assert dev_min == 1, f"dev: {workload}"
        assert prod_min >= 2, f"prod: {workload} has no spare replica"
        assert prod_max >= prod_min
        assert dev_max >= dev_min
        if scaler_of(prod, workload) is not None:
            assert prod_max > dev_max, f"prod: {workload} scales no further than dev"
        requests = dev.container(workload)["resources"]["requests"]
        prod_requests = prod.container(workload)["resources"]["requests"]
        for kind in ("cpu", "memory"):
            assert parse_quantity(requests[kind]) < parse_quantity(prod_requests[kind])


def breaker_cooldowns(settings: BaseSettings) -> list[float]:
    assert isinstance(settings, ChannelSettingsBase)
    return [
        settings.provider_limits(provider).breaker_cooldown
        for provider in settings.channel_options().providers
    ]


def test_keda_scales_each_channel_on_exactly_its_work_queues(
    overlay: Overlay, credentials: dict[str, str]
) -> None:
    topology = Topology(overlay.namespace())
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in overlay.of_kind("ScaledObject")}
    assert set(scaled) == set(CHANNEL_OF)
    for workload, channel in CHANNEL_OF.items():
        settings, values = load_settings(overlay, workload, credentials)
        assert values["HERALD_NAMESPACE"] == topology.namespace
        assert isinstance(settings, ChannelSettingsBase)
        spec = scaled[workload]["spec"]
        triggers = spec["triggers"]
        queues = [t["metadata"]["queueName"] for t in triggers]
        expected = [q for key in queue_keys(channel) for q in topology.lane_queues(key)]
        assert sorted(queues) == sorted(expected), f"{workload}: one trigger per work queue"
        not_work = set(topology.queues({channel: settings.retry_policy()})) - set(expected)
        assert topology.dead_letter_queue(channel) in not_work
        assert any(".delay." in q for q in not_work)
        assert not set(queues) & not_work, f"{workload}: scales on retry or dead-letter queues"
        for trigger in triggers:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert trigger["metadata"]["protocol"] == "amqp"
            assert int(trigger["metadata"]["value"]) > 0
            assert "host" not in trigger["metadata"], "the broker URL is a secret"
            auth = overlay.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
            refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
            assert (refs["host"]["name"], refs["host"]["key"]) == ("herald", "HERALD_AMQP_URL")
        assert spec["minReplicaCount"] >= 1, "nothing would consume a high-priority message"
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        cycle = max(breaker_cooldowns(settings))
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        window = behavior["scaleDown"]["stabilizationWindowSeconds"]
        assert window >= FLAP_CYCLES * cycle, f"{workload}: a paused channel would flap"
        assert spec["cooldownPeriod"] >= FLAP_CYCLES * cycle
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 2 * cycle


def test_disruption_budgets_cover_every_deployment(overlay: Overlay) -> None:
    budgets = overlay.of_kind("PodDisruptionBudget")
    for workload, deployment in overlay.deployments().items():
        labels = pod_labels(deployment)
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, workload
        # With one replica (dev) a minAvailable of 1 would block every node drain.
        assert matching[0]["spec"].get("maxUnavailable") == 1, workload


# -- monitoring, migration, Secret ----------------------------------------------------------------


def test_prometheus_scrapes_every_service_under_its_alert_job(overlay: Overlay) -> None:
    (monitor,) = overlay.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    services = [
        s for s in overlay.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in services} == set(HTTP_FIELDS)
    jobs = set()
    for service in services:
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
        jobs.add(service["metadata"]["labels"][monitor["spec"]["jobLabel"]])
    rules = "\n".join(p.read_text() for p in (ROOT / "deploy/prometheus/rules").glob("*.yml"))
    alerted = set(re.findall(r'job="([^"]+)"', rules))
    assert alerted, "no job in the alert rules"
    assert alerted <= jobs, f"alert rules select jobs nothing scrapes: {alerted - jobs}"


def test_migration_job_runs_herald_migrate_under_its_lock(overlay: Overlay) -> None:
    job = overlay.get("Job", "herald-migrate")
    assert overlay.container("herald-migrate")["command"] == ["herald-migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    # Applying `-l app.kubernetes.io/component=migrate` brings the Job and its network policy.
    selected = [
        o
        for o in overlay.objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "migrate"
    ]
    assert {o["kind"] for o in selected} == {"Job", "NetworkPolicy"}
    assert egress_ports(overlay, "herald-migrate", selected) == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 5432),
    }
    # Safe beside another migrator or a service running it at start (deploy/k8s/README.md
    # says so): every migrator takes one advisory lock first.
    assert "pg_try_advisory_lock" in inspect.getsource(apply_migrations)


def secret_template() -> tuple[dict[str, Any], str]:
    text = SECRET_TEMPLATE.read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document, text


def test_secret_template_holds_what_the_workloads_read(overlay: Overlay) -> None:
    secret, text = secret_template()
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "herald")
    for version in KUBERNETES_VERSIONS:
        assert kubernetes_errors(secret, version) == []
    keys = set(secret["stringData"])
    referenced: set[str] = set()
    for workload in SERVICE_SETTINGS:
        for name, value in overlay.env(workload).items():
            if not isinstance(value, EnvRef):
                continue
            assert value.secret == "herald", f"{workload}: {name} from {value.secret}"
            assert value.key == name, f"{workload}: {name} from key {value.key}"
            referenced.add(value.key)
            if value.optional:
                assert re.search(rf"^\s*#\s*{re.escape(value.key)}:", text, re.M) or (
                    value.key in keys
                ), f"the template does not show {value.key}"
            else:
                assert value.key in keys, f"{workload} needs {value.key} in the Secret"
    for workload in ("herald-channel-push",):
        for volume in pod_spec(overlay.workloads()[workload]).get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    assert re.search(rf"^\s*#\s*{re.escape(item['key'])}:", text, re.M)
                    referenced.add(item["key"])
    for auth in overlay.of_kind("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == "herald"
            assert ref["key"] in keys
            referenced.add(ref["key"])
    assert keys <= referenced, f"the template has keys nothing reads: {keys - referenced}"
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())


def test_an_unfilled_bootstrap_key_stops_the_api() -> None:
    """The placeholder is no usable secret: an unfilled template cannot make an admin key whose
    secret is in this repository."""
    secret, _ = secret_template()
    placeholder = secret["stringData"]["HERALD_API_BOOTSTRAP_KEY"]
    with (
        mock.patch.dict(
            os.environ,
            {**environment_clean_of_herald(), "HERALD_API_BOOTSTRAP_KEY": placeholder},
            clear=True,
        ),
        pytest.raises(ValidationError),
    ):
        ApiSettings()


# -- network policies -----------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        operator, key = expression["operator"], expression["key"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and labels.get(key) in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def policies_of(
    overlay: Overlay, workload: str, policies: list[dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    labels = pod_labels(overlay.workloads()[workload])
    for policy in overlay.of_kind("NetworkPolicy") if policies is None else policies:
        if policy["kind"] == "NetworkPolicy" and selects(policy["spec"]["podSelector"], labels):
            yield policy


def resolve(overlay: Overlay, workload: str, port: int | str) -> int | None:
    """A policy's port on the workload's pods; a name the pod does not have matches nothing."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in overlay.container(workload).get("ports", [])}
    return named.get(port)


def egress_ports(
    overlay: Overlay, workload: str, policies: list[dict[str, Any]] | None = None
) -> set[tuple[str, int]]:
    allowed: set[tuple[str, int]] = set()
    for policy in policies_of(overlay, workload, policies):
        for rule in policy["spec"].get("egress", []):
            assert "ports" in rule, f"{policy['metadata']['name']}: egress to every port"
            allowed |= {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}
    return allowed


def ingress_rules(overlay: Overlay, workload: str) -> set[tuple[str, int]]:
    """(source, port) pairs allowed in: source `any` or `ns:<name>`."""
    allowed: set[tuple[str, int]] = set()
    for policy in policies_of(overlay, workload):
        for rule in policy["spec"].get("ingress", []):
            assert "ports" in rule, f"{policy['metadata']['name']}: ingress to every port"
            sources = []
            for peer in rule.get("from", []):
                assert set(peer) == {"namespaceSelector"}, peer
                sources.append(
                    f"ns:{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"
                )
            for port in rule["ports"]:
                assert port.get("protocol", "TCP") == "TCP"
                number = resolve(overlay, workload, port["port"])
                for source in sources or ["any"]:
                    if number is not None:
                        allowed.add((source, number))
    return allowed


def test_every_herald_pod_is_denied_by_default(overlay: Overlay) -> None:
    for workload in SERVICE_SETTINGS:
        types = set()
        for policy in policies_of(overlay, workload):
            types |= set(policy["spec"]["policyTypes"])
        assert types == {"Ingress", "Egress"}, workload


def test_ingress_is_the_api_port_and_metrics_from_monitoring(overlay: Overlay) -> None:
    for workload in overlay.workloads():
        allowed = ingress_rules(overlay, workload)
        if workload == "herald-migrate":
            assert allowed == set(), "nothing calls the migration"
            continue
        port = overlay.container(workload)["ports"][0]["containerPort"]
        expected = {("ns:monitoring", port)}  # Prometheus, on the port serving /metrics
        if workload == "herald-api":
            expected.add(("any", port))
        assert allowed == expected, f"{workload}: {allowed}"


def test_egress_is_what_each_service_talks_to(overlay: Overlay) -> None:
    dns = {("UDP", 53), ("TCP", 53)}
    stores = {("TCP", 5432), ("TCP", 5672)}
    expected = {
        "herald-api": dns | stores,
        "herald-dispatcher": dns | stores,
        "herald-channel-email": dns | stores | {("TCP", 587), ("TCP", 443)},
        "herald-channel-sms": dns | stores | {("TCP", 443)},
        "herald-channel-push": dns | stores | {("TCP", 443)},
        "herald-migrate": dns | {("TCP", 5432)},
    }
    for workload, ports in expected.items():
        assert egress_ports(overlay, workload) == ports, workload


# -- documentation --------------------------------------------------------------------------------


def test_readme_covers_deploying() -> None:
    readme = (K8S / "README.md").read_text()
    for needed in (
        "secret.template.yaml",
        "app.kubernetes.io/component=migrate",
        "herald-migrate",
        "kubectl apply -k deploy/k8s/overlays/prod",
        "KEDA",
        "ServiceMonitor",
        "advisory lock",
        "cooldownPeriod",
    ):
        assert needed in readme, f"deploy/k8s/README.md does not mention {needed}"
