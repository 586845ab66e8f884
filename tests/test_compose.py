"""docker-compose.yml, the Dockerfile and the Prometheus / Grafana files agree.

Docker is not available where these tests run, so the stack is never started here:
the compose file is validated against the Compose Specification's JSON Schema, its
wiring (hostnames, ports, mounts, settings names, CLI commands) is checked against the
code, and both Prometheus configurations go through ``promtool check config``.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from jsonschema import Draft202012Validator

from app.config import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
PROMETHEUS_FILES = [PROJECT_ROOT / "ops/prometheus.yml", PROJECT_ROOT / "ops/prometheus-local.yml"]
DATASOURCE_FILE = PROJECT_ROOT / "ops/grafana/provisioning/datasources/prometheus.yml"
COMPOSE_SPEC = Path(__file__).parent / "data" / "compose-spec.schema.json"
SERVICES = {"kafka", "redis", "prometheus", "grafana", "worker", "replay"}
METRICS_PORT = 6066


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {k: str(v) for k, v in env.items()}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


# --- the file itself -------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema = json.loads(COMPOSE_SPEC.read_text(encoding="utf-8"))
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_every_service_of_the_stack_is_defined(services):
    assert set(services) == SERVICES
    assert services["replay"]["profiles"] == ["replay"]
    # every other service starts with a plain `docker compose up`
    assert all("profiles" not in s for name, s in services.items() if name != "replay")


# --- Kafka -------------------------------------------------------------------------------


def test_kafka_is_a_single_kraft_node_with_internal_and_host_listeners(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert not any("ZOOKEEPER" in key for key in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16  # a KRaft UUID

    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) == set(protocols) and set(advertised) <= set(listeners)
    assert controller in listeners and controller not in advertised

    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller][1]}"

    # one advertised address for containers (the service name), one for the host
    by_host = {host: (name, port) for name, (host, port) in advertised.items()}
    assert set(by_host) == {"kafka", "localhost"}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == by_host["kafka"][0]
    assert by_host["localhost"][1] == 9092
    assert "127.0.0.1:9092:9092" in kafka["ports"]
    assert by_host["kafka"][1] == listeners[by_host["kafka"][0]][1]


# --- the worker --------------------------------------------------------------------------


def test_worker_reaches_kafka_and_redis_by_service_name(services):
    kafka_env = _env(services["kafka"])
    internal = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])[
        kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    ]
    for name in ("worker", "replay"):
        env = _env(services[name])
        assert env["KAFKA_BROKER_URL"] == f"kafka://kafka:{internal[1]}"
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert _env(services["worker"])["WEB_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", ["worker", "replay"])
def test_app_environment_names_settings_fields_with_valid_values(services, name, monkeypatch):
    env = _env(services[name])
    fields = {f.upper() for f in Settings.model_fields}
    assert set(env) <= fields, f"not a Settings field: {sorted(set(env) - fields)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # raises if a value is out of range
    assert settings.broker_bootstrap == "kafka:19092"
    assert settings.producer_max_batch_size > 1  # real Kafka: batches are fine


def test_worker_scales_and_is_scraped_by_dns(services):
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N`
    assert worker["command"] == ["python", "-m", "app", "worker", "-l", "info"]
    assert int(_env(worker)["WEB_PORT"]) == METRICS_PORT
    assert "6066" in worker["healthcheck"]["test"][-1]

    prom = yaml.safe_load(PROMETHEUS_FILES[0].read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "fraud-worker")
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == METRICS_PORT and sd["type"] == "A"
    assert prom["global"]["scrape_interval"] == "5s"
    own = next(j for j in prom["scrape_configs"] if j["job_name"] == "prometheus")
    assert own["static_configs"][0]["targets"] == ["localhost:9090"]


def test_local_prometheus_scrapes_loopback_workers():
    prom = yaml.safe_load(PROMETHEUS_FILES[1].read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "fraud-worker")
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:6066", "127.0.0.1:6067", "127.0.0.1:6068"]
    assert prom["global"]["scrape_interval"] == "5s"


def test_replay_job_runs_real_fraudctl_commands(services):
    from app.cli import cli  # every command module registered

    script = services["replay"]["command"]
    assert script[:2] == ["sh", "-c"]
    steps = [shlex.split(step) for step in script[2].split("&&")]
    assert [step[:2] for step in steps] == [["fraudctl", "simulate"], ["fraudctl", "replay"]]

    group = typer.main.get_command(cli)
    for step in steps:
        command = group.commands[step[1]]
        options = {
            opt for p in command.params for opt in p.opts + p.secondary_opts if opt[0] == "-"
        }
        flags = {opt for p in command.params if getattr(p, "is_flag", False) for opt in p.opts}
        args, positionals = step[2:], 0
        while args:
            token = args.pop(0)
            if token.startswith("-"):
                assert token.split("=")[0] in options, f"fraudctl {step[1]}: no option {token}"
                if token not in flags and "=" not in token:
                    args.pop(0)
            else:
                positionals += 1
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        assert positionals <= len(arguments), f"fraudctl {step[1]}: too many arguments"
        assert all(not a.required for a in arguments[positionals:]), f"fraudctl {step[1]}"


# --- Prometheus, Grafana and the files they mount ---------------------------------------


def test_every_bind_mounted_file_exists_in_the_repo(services):
    mounts = [
        (name, v.split(":")[0])
        for name, service in services.items()
        for v in service.get("volumes", [])
        if v.startswith(".")
    ]
    assert ("prometheus", "./ops/prometheus.yml") in mounts
    assert ("grafana", "./ops/grafana/provisioning") in mounts
    for name, source in mounts:
        assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_healthcheck_exists_wherever_a_dependency_waits_for_health(services):
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"


def test_grafana_datasource_points_at_the_prometheus_service(services):
    provisioning = yaml.safe_load(DATASOURCE_FILE.read_text())
    (source,) = provisioning["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    env = _env(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


@pytest.mark.parametrize("path", PROMETHEUS_FILES, ids=lambda p: p.name)
def test_promtool_accepts_the_prometheus_config(path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: .ci/run must install Debian's `prometheus` package")
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --- the image ---------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_worker_image(services):
    lines = [
        ln.strip()
        for ln in re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8")).splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    instructions = [ln.split(None, 1) for ln in lines]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    # the locked versions, hashes checked, then the project without resolving again
    runs = [arg for op, arg in instructions if op == "RUN"]
    locked = next(i for i, a in enumerate(runs) if "pip install --require-hashes -r requirements.lock" in a)
    assert any("pip install --no-deps . " in f"{a} " for a in runs[locked + 1:])
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ["EXPOSE", str(METRICS_PORT)] in instructions
    cmd = json.loads(next(arg for op, arg in instructions if op == "CMD"))
    assert cmd == services["worker"]["command"]
    # every file the image copies is in the repo and not excluded by .dockerignore
    ignored = set((PROJECT_ROOT / ".dockerignore").read_text().split())
    for op, arg in instructions:
        if op == "COPY":
            sources = [s for s in arg.split()[:-1] if not s.startswith("--")]
            for source in sources:
                assert source not in ignored, f"{source} is copied but .dockerignore drops it"
                if source != "README.md":  # written by the lead; required by pyproject
                    assert (PROJECT_ROOT / source).exists(), source
    assert {".git", ".venv", ".env", ".run"} <= ignored
    assert all(s["build"] == "." for n, s in services.items() if n in ("worker", "replay"))
