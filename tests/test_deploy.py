"""The deployment files agree with the Compose specification, the settings models and the code.

Nothing here needs Docker: docker-compose.yml is checked against the Compose specification's JSON
schema (vendored under tests/schemas/, see its README) and against the settings models, so a
renamed setting, a changed default port or a missing console script fails here first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from herald_api.settings import ApiSettings
from herald_channel_email.settings import EmailSettings
from herald_channel_push.settings import PushSettings
from herald_channel_sms.settings import SmsSettings
from herald_common.settings import CommonSettings
from herald_dispatcher.settings import DispatcherSettings
from scripts.config_docs import MODELS, env_name
from tests.support.workspace import workspace_members

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
DOCKERFILE = "deploy/Dockerfile"

SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "migrate": CommonSettings,
    "api": ApiSettings,
    "dispatcher": DispatcherSettings,
    "channel-email": EmailSettings,
    "channel-push": PushSettings,
    "channel-sms": SmsSettings,
}
"""The settings model each Herald service of docker-compose.yml reads."""

HTTP_SETTINGS: dict[str, tuple[type[BaseSettings], str, str]] = {
    "api": (ApiSettings, "api_host", "api_port"),
    "dispatcher": (DispatcherSettings, "dispatcher_http_host", "dispatcher_http_port"),
    "channel-email": (EmailSettings, "email_http_host", "email_http_port"),
    "channel-push": (PushSettings, "push_http_host", "push_http_port"),
    "channel-sms": (SmsSettings, "sms_http_host", "sms_http_port"),
}
"""Compose service -> (model, listen-address field, port field) of the HTTP port it serves."""

ONE_SHOTS = {"migrate"}
"""Compose services that run to completion; everything else is long-running."""

STACK = {
    "rabbitmq",
    "postgres",
    "mailpit",
    "migrate",
    "api",
    "dispatcher",
    "channel-email",
    "channel-sms",
    "channel-push",
    "prometheus",
    "grafana",
}
"""What `docker compose up` runs: the whole stack, monitoring included."""

MAILPIT_SMTP_PORT = 1025
"""Mailpit's SMTP port (its default; `MP_SMTP_BIND_ADDR` may say it again)."""

RABBITMQ_PROMETHEUS_PORT = 15692
"""Where the rabbitmq_prometheus plugin serves the broker's metrics."""

SANDBOXED = {"channel-sms": (SmsSettings, "sms"), "channel-push": (PushSettings, "push")}
"""Channel services compose runs on their `sandbox` provider: (model, settings prefix)."""


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """``value`` as Compose reads it with none of the variables set: ``${NAME:-default}`` and
    ``${NAME-default}`` give the default, ``${NAME}`` nothing, ``$$`` a dollar."""
    return INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else m.group(2) or "", value)


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    if isinstance(env, list):
        pairs = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    else:
        pairs = {str(k): "" if v is None else str(v) for k, v in env.items()}
    return {name: interpolate(value) for name, value in pairs.items()}


def published_ports(service: str) -> list[tuple[int, int]]:
    """(host port, container port) of every port a compose service publishes."""
    result: list[tuple[int, int]] = []
    for entry in services()[service].get("ports", []):
        if isinstance(entry, dict):
            result.append((int(entry["published"]), int(entry["target"])))
            continue
        *host, container = str(entry).split("/")[0].split(":")
        result.append((int(host[-1]) if host else int(container), int(container)))
    return result


def volume_mounts(service: str) -> dict[str, str]:
    """Container path -> source (a named volume or a host path) of every volume of a service."""
    result: dict[str, str] = {}
    for entry in services()[service].get("volumes", []):
        if isinstance(entry, dict):
            result[str(entry["target"])] = str(entry.get("source", ""))
            continue
        source, target, *_ = str(entry).split(":")
        result[target] = source
    return result


def depends_on(service: str) -> dict[str, str]:
    """Dependency -> condition of a service (the short list form means service_started)."""
    declared = services()[service].get("depends_on", {})
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {name: str(spec["condition"]) for name, spec in declared.items()}


def healthcheck_command(service: str) -> str:
    test = services()[service]["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def default(model: type[BaseSettings], field: str) -> Any:
    value = model.model_fields[field].get_default(call_default_factory=True)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def projects() -> dict[str, dict[str, Any]]:
    """Workspace members' [project] tables by distribution name."""
    tables = (
        tomllib.loads((m / "pyproject.toml").read_text())["project"] for m in workspace_members()
    )
    return {table["name"]: table for table in tables}


def console_scripts(distribution: str) -> set[str]:
    """Console scripts ``distribution`` and the workspace members it depends on install."""
    table = projects()[distribution]
    scripts = set(table.get("scripts", {}))
    for requirement in table.get("dependencies", []):
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        if name in projects():
            scripts |= console_scripts(name)
    return scripts


# -- the Compose file ---------------------------------------------------------------------------


def schema_errors(document: Any) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    jsonschema.Draft201909Validator.check_schema(json.loads(SCHEMA.read_text()))
    assert schema_errors(compose()) == []


def test_the_schema_rejects_what_compose_rejects() -> None:
    broken = json.loads(json.dumps(compose()))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    broken["services"]["api"]["enviroment"] = {"HERALD_API_PORT": "8000"}
    errors = schema_errors(broken)
    assert any("enviroment" in e for e in errors), errors
    assert any(e.startswith("services/api/depends_on") for e in errors), errors


def test_herald_variables_are_settings_of_the_service() -> None:
    documented = {env_name(model, name) for model in MODELS for name in model.model_fields}
    for service in services():
        names = {n for n in environment(service) if n.startswith("HERALD_")}
        assert names <= documented, f"{service}: not settings: {sorted(names - documented)}"
        model = SERVICE_SETTINGS.get(service)
        if model is None:
            assert not names, f"{service} reads no Herald settings but sets {sorted(names)}"
            continue
        own = {env_name(model, name) for name in model.model_fields}
        assert names <= own, f"{service} does not read {sorted(names - own)}"


def test_herald_variables_are_fields_of_the_service_settings() -> None:
    # The same from the models alone: HERALD_ + a field name of the model the service reads.
    built = {
        name
        for name, service in services().items()
        if "build" in service and (ROOT / "services" / service["build"]["args"]["SERVICE"]).is_dir()
    }
    assert built <= set(SERVICE_SETTINGS), (
        f"no settings model for {sorted(built - set(SERVICE_SETTINGS))}"
    )
    for service, model in SERVICE_SETTINGS.items():
        assert model.model_config.get("env_prefix") == "HERALD_", model.__name__
        fields = {f"HERALD_{name.upper()}" for name in model.model_fields}
        names = {n for n in environment(service) if n.upper().startswith("HERALD_")}
        assert {n.upper() for n in names} <= fields, (
            f"{service}: {sorted(n for n in names if n.upper() not in fields)} "
            f"are not fields of {model.__name__}"
        )


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_herald_variables_are_valid_values(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    SERVICE_SETTINGS[service]()


@pytest.mark.parametrize("service", sorted(HTTP_SETTINGS))
def test_http_ports_are_the_settings_defaults(service: str) -> None:
    model, host_field, port_field = HTTP_SETTINGS[service]
    port = default(model, port_field)
    env = environment(service)
    assert env.get(env_name(model, port_field), str(port)) == str(port)
    assert env.get(env_name(model, host_field)) == "0.0.0.0", "unreachable outside the container"
    if service.startswith("channel-"):
        # Channel services scale with `--scale`: a fixed host port would clash between
        # replicas; Prometheus reaches them inside the compose network.
        assert published_ports(service) == []
    else:
        assert published_ports(service) == [(port, port)]
    # Healthy means ready: database and broker reachable, the service started.
    assert f"http://127.0.0.1:{port}/readyz" in healthcheck_command(service)
    assert services()[service]["healthcheck"]["test"][:2] == ["CMD", "python"], "the image's python"


def test_broker_and_database_are_where_the_settings_point() -> None:
    api_env = environment("api")
    for field, service in (("amqp_url", "rabbitmq"), ("database_url", "postgres")):
        local = urlsplit(default(CommonSettings, field))
        assert local.port is not None
        assert (local.port, local.port) in published_ports(service)
        in_compose = urlsplit(api_env[env_name(CommonSettings, field)])
        assert in_compose.hostname == service
        assert in_compose.port == local.port
        assert in_compose.path == local.path, "same database / vhost as in development"


def test_channel_email_sends_to_mailpit() -> None:
    env = environment("channel-email")
    assert "smtp" in env.get("HERALD_EMAIL_PROVIDERS", "smtp").split(",")
    assert env["HERALD_EMAIL_SMTP_HOST"] == "mailpit"
    assert env["HERALD_EMAIL_SMTP_PORT"] == str(MAILPIT_SMTP_PORT)
    mailpit = services()["mailpit"]
    image, _, tag = mailpit["image"].partition(":")
    assert image == "axllent/mailpit"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), "pin a Mailpit release"
    bind = environment("mailpit").get("MP_SMTP_BIND_ADDR", f"0.0.0.0:{MAILPIT_SMTP_PORT}")
    assert bind == f"0.0.0.0:{MAILPIT_SMTP_PORT}"
    assert (8025, 8025) in published_ports("mailpit"), "the web UI"
    assert all(entry.startswith("127.0.0.1:") for entry in mailpit["ports"]), "local only"
    assert depends_on("channel-email")["mailpit"] == "service_healthy"
    assert "mailsink" not in services(), "Mailpit replaced the mail sink in compose"


@pytest.mark.parametrize("service", sorted(SANDBOXED))
def test_sms_and_push_use_the_sandbox_provider_on_a_volume(service: str) -> None:
    model, prefix = SANDBOXED[service]
    env = environment(service)
    assert env[env_name(model, f"{prefix}_providers")] == "sandbox"
    directory = Path(env[env_name(model, f"{prefix}_sandbox_dir")])
    mounts = volume_mounts(service)
    assert any(directory.is_relative_to(target) for target in mounts), "lost with the container"
    # A new named volume takes the owner of the image's directory: the image must make it for
    # its non-root user, or the sandbox cannot write.
    lines = dockerfile_lines()
    runs = [
        line for line in lines[lines.index("FROM ${PYTHON_IMAGE} AS runtime") :] if "RUN" in line
    ]
    for target in (t for t in mounts if directory.is_relative_to(t)):
        path = re.escape(target) + r"(\s|$)"
        assert any(re.search(r"mkdir -p [^&]*" + path, line) for line in runs), target
        assert any(re.search(r"chown herald:herald [^&]*" + path, line) for line in runs), target


def test_the_whole_stack_runs_by_default() -> None:
    assert set(services()) == STACK
    profiled = sorted(name for name, service in services().items() if service.get("profiles"))
    assert not profiled, f"`docker compose up` would leave out {profiled}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if name in ONE_SHOTS:
            assert service.get("restart") == "no", f"{name} must not be restarted once done"
            assert "healthcheck" not in service, name
            continue
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} has its healthcheck disabled"


def test_depends_on_waits_for_healthy_services_and_finished_one_shots() -> None:
    for name in services():
        for dependency, condition in depends_on(name).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            )
            assert condition == expected, f"{name} -> {dependency}: {condition}"
    assert depends_on("migrate") == {"postgres": "service_healthy"}
    assert depends_on("grafana") == {"prometheus": "service_healthy"}


def test_the_dependencies_have_no_cycle() -> None:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, f"a depends_on cycle through {name}"
        if name in order:
            return
        visiting.add(name)
        for dependency in depends_on(name):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in services():
        visit(name)
    assert order.index("migrate") < min(order.index(s) for s in HTTP_SETTINGS)


def test_nothing_has_a_fixed_container_name() -> None:
    # A fixed name fails `docker compose up --scale` and clashes between two checkouts.
    named = sorted(name for name, service in services().items() if "container_name" in service)
    assert not named


def test_rabbitmq_runs_the_management_and_prometheus_plugins() -> None:
    rabbitmq = services()["rabbitmq"]
    image, _, tag = rabbitmq["image"].partition(":")
    assert image == "rabbitmq"
    assert re.fullmatch(r"(3\.13|4\.\d+)(\.\d+)?-management", tag), tag
    plugins = environment("rabbitmq")["RABBITMQ_ENABLED_PLUGINS"].split(",")
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= set(plugins)


def test_services_wait_for_broker_database_and_migrations() -> None:
    for service in ("api", "dispatcher", "channel-email", "channel-push", "channel-sms"):
        depends = services()[service]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services()["migrate"]["command"] == ["herald-migrate"]


# -- images ---------------------------------------------------------------------------------------


def test_built_services_use_the_dockerfile_with_a_real_service() -> None:
    available = {  # the services, and the development tools compose runs beside them
        p.name
        for d in ("services", "tools")
        for p in (ROOT / d).iterdir()
        if (p / "pyproject.toml").exists()
    }
    by_image: dict[str, Any] = {}
    for service, definition in services().items():
        if "build" not in definition:
            continue
        build = definition["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == DOCKERFILE
        target = build["args"]["SERVICE"]
        assert target in available, f"{service}: no services/{target} or tools/{target}"
        scripts = console_scripts(f"herald-{target}")
        command = definition.get("command", [f"herald-{target}"])  # the image's CMD
        assert command[0] in scripts, f"{service}: {command[0]} is not in herald-{target}"
        image = definition.get("image")
        if image:
            assert by_image.setdefault(image, build) == build, f"{image} built two ways"


def dockerfile_lines() -> list[str]:
    text = (ROOT / DOCKERFILE).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_installs_dependencies_before_the_code() -> None:
    lines = dockerfile_lines()
    lock = next(i for i, line in enumerate(lines) if line.startswith("COPY") and "uv.lock" in line)
    code = next(
        i
        for i, line in enumerate(lines)
        if re.match(r"COPY\s+(libs|services)\b", line) and "pyproject.toml" not in line
    )
    deps = next(i for i, line in enumerate(lines) if "--no-install-workspace" in line)
    assert lock < deps < code
    for member in workspace_members():
        manifest = (member / "pyproject.toml").relative_to(ROOT).as_posix()
        assert any(manifest in line for line in lines[:deps]), f"{manifest} not copied first"
    assert any(line.startswith("USER") and not line.endswith("root") for line in lines)
    assert any("herald-${SERVICE}" in line for line in lines if line.startswith("CMD"))


def test_every_service_has_an_image_cmd() -> None:
    for service in (ROOT / "services").iterdir():
        if not (service / "pyproject.toml").exists():
            continue
        table = tomllib.loads((service / "pyproject.toml").read_text())["project"]
        assert f"herald-{service.name}" in table.get("scripts", {}), service.name


# -- Procfile, Prometheus, scripts --------------------------------------------------------------


def test_procfile_runs_console_scripts_of_the_workspace() -> None:
    scripts = set().union(*(console_scripts(name) for name in projects()))
    processes: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, text = line.partition(":")
            # Leading VAR=value assignments set a process's environment (sandbox directories).
            words = text.split()
            while words and "=" in words[0]:
                words.pop(0)
            processes[name.strip()] = words
    assert set(processes) == {"api", "dispatcher", "email", "sms", "push", "mailsink"}
    for name, command in processes.items():
        assert command[:2] == ["uv", "run"], name
        assert command[2] in scripts, f"{name}: {command[2]} is no console script"


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    } | {
        f"{name}:{dns['port']}"
        for job in config["scrape_configs"]
        for dns in job.get("dns_sd_configs", [])
        for name in dns["names"]
    }
    for target in targets:
        assert target.split(":")[0] in services(), target
    for service, (model, _, port_field) in HTTP_SETTINGS.items():
        assert f"{service}:{default(model, port_field)}" in targets
    assert f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}" in targets


def test_prometheus_finds_every_replica_of_the_scalable_services() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    discovered = {
        name
        for job in config["scrape_configs"]
        for dns in job.get("dns_sd_configs", [])
        for name in dns["names"]
    }
    scalable = {name for name in HTTP_SETTINGS if not published_ports(name)}
    assert scalable == {"channel-email", "channel-sms", "channel-push"}
    assert scalable <= discovered, "a static target would scrape one replica only"


@pytest.mark.parametrize("script", [".ci/run", "scripts/dev-infra.sh"])
def test_scripts_are_executable(script: str) -> None:
    assert os.access(ROOT / script, os.X_OK)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_readme_shows_the_current_make_help() -> None:
    listing = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    targets = [line for line in listing.splitlines() if line.startswith("  ")]
    assert len(targets) >= 10
    readme = (ROOT / "README.md").read_text()
    missing = [line for line in targets if line not in readme]
    assert not missing, f"README.md's `make help` is out of date: {missing}"
