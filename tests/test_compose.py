"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the services and
their wiring (images pinned, health checks, start order, loopback-only ports, volumes,
secrets), every variable a CarePath container is given is one the code reads (and what it
needs is given, with values it accepts), and the search attributes registered are the
code's. `problems()` names each fault; the last test breaks the file in several ways and
sees each one named."""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.envconfig import ClientConfig

from infra.embedded_server import search_attribute_flags
from infra.settings import PROJECT_ROOT, SettingsError, load_settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"

SERVICES = {
    "postgresql",
    "temporal-schema",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "codec-server",
    "console",
    "deliver",
    "worker",
    "cli",
}
ONE_SHOT = {"temporal-schema", "temporal-setup"}  # jobs that run to completion
ON_DEMAND = {"cli"}  # run by hand: `docker compose run --rm cli ...`
# An exact version (a digest also pins): never `latest`, never a bare major like `16`.
PINNED = re.compile(r"^[a-z0-9./_-]+(:\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?|@sha256:[0-9a-f]{64})$")


def dotenv(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            env[name.strip()] = value.strip()
    return env


def interpolate(value: Any, env: dict[str, str], missing: list[str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from `env`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2], m[3] or ""
        if name in env and (env[name] or op != ":-"):
            return env[name]
        if op == ":?":
            missing.append(name)
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def dockerfile_env() -> dict[str, str]:
    """The ENV the Dockerfile sets (continued lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(pair.split("=", 1) for pair in line[4:].split())
    return env


class Reading(dict[str, str]):
    """An environment that remembers every name it was asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def carepath_names() -> set[str]:
    """Every CAREPATH_* variable the settings read."""
    env = Reading()
    load_settings(env)
    return {n for n in env.asked if n.startswith("CAREPATH_")}


def temporal_reads(name: str, value: str) -> bool:
    """Whether the SDK's envconfig reads a TEMPORAL_* variable (it changes the profile)."""
    read = ClientConfig.load_client_connect_config(disable_file=True, override_env_vars={})
    given = ClientConfig.load_client_connect_config(
        disable_file=True, override_env_vars={name: value}
    )
    return read != given


def code_search_attributes() -> set[str]:
    flags = search_attribute_flags()
    return set(flags[1::2])  # "--search-attribute", "Name=Type", ...


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def problems(compose: dict[str, Any]) -> Iterator[str]:
    """Every fault in the compose file's wiring, one line each."""
    missing: list[str] = []
    compose = interpolate(compose, dotenv(ENV_EXAMPLE), missing)
    for name in sorted(set(missing)):
        yield f".env.example does not set {name}, which the compose file requires"
    services: dict[str, dict[str, Any]] = compose.get("services", {})
    if set(services) != SERVICES:
        yield f"services are {sorted(services)}, expected {sorted(SERVICES)}"
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    volumes = set(compose.get("volumes") or {})
    secrets = compose.get("secrets") or {}
    healthy = {n for n, s in services.items() if s.get("healthcheck", {}).get("test")}
    known = carepath_names()

    for name, s in services.items():
        image = str(s.get("image", ""))
        if not PINNED.match(image):
            yield f"{name}: image {image!r} is not pinned to an exact version"
        if "build" in s and image != f"carepath-worker:{version}":
            yield f"{name}: builds carepath-worker, tagged {image!r} not the project's {version}"
        if "container_name" in s:
            yield f"{name}: a container_name stops it being scaled or run twice"
        for port in s.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                yield f"{name}: port {port} is published beyond the host's loopback"
        if name in ONE_SHOT:
            if not str(s.get("restart", "")).startswith("on-failure"):
                yield f"{name}: a one-shot job should restart on failure only"
        elif name not in ON_DEMAND and name not in healthy:
            yield f"{name}: no health check"
        for dep, how in (s.get("depends_on") or {}).items():
            if not isinstance(how, dict) or "condition" not in how:
                yield f"{name}: depends on {dep} without a condition"
                continue
            wanted = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            if dep not in services:
                yield f"{name}: depends on unknown service {dep}"
            elif how["condition"] != wanted:
                yield f"{name}: waits for {dep} with {how['condition']}, not {wanted}"
            elif wanted == "service_healthy" and dep not in healthy:
                yield f"{name}: waits for {dep} to be healthy, but it has no health check"
        for mount in s.get("volumes", []):
            source = str(mount).split(":")[0]
            if source.startswith("."):
                if not (PROJECT_ROOT / source).exists():
                    yield f"{name}: mounts {source}, which is not in the repository"
            elif source not in volumes:
                yield f"{name}: volume {source} is not declared"
        for secret in s.get("secrets", []):
            if secret not in secrets:
                yield f"{name}: secret {secret} is not declared"
        command = [str(c) for c in (s.get("entrypoint") or []) + (s.get("command") or [])]
        for word in command:
            if re.fullmatch(r"/scripts/[\w.-]+", word):
                mounted = next(
                    (m.split(":")[0] for m in s.get("volumes", []) if ":/scripts" in m), None
                )
                if mounted is None or not (PROJECT_ROOT / mounted / word[9:]).exists():
                    yield f"{name}: runs {word}, which is not mounted from the repository"
            elif word.endswith(".py") and not (PROJECT_ROOT / word).exists():
                yield f"{name}: runs {word}, which is not in the repository"
        if "build" in s:
            yield from _carepath_service(name, s, services, secrets, known)

    attributes = environment_of(services.get("temporal-setup", {})).get("SEARCH_ATTRIBUTES", "")
    if set(attributes.split()) != code_search_attributes():
        yield (
            f"temporal-setup registers {sorted(attributes.split())}, "
            f"the code uses {sorted(code_search_attributes())}"
        )
    for secret, source in secrets.items():
        if "file" in source and not _ignored(source["file"]):
            yield f"secret {secret}: {source['file']} is not gitignored"


def _carepath_service(
    name: str,
    s: dict[str, Any],
    services: dict[str, dict[str, Any]],
    secrets: dict[str, Any],
    known: set[str],
) -> Iterator[str]:
    """A container of the CarePath image: it is told only what the code reads, and enough."""
    env = environment_of(s)
    for var in sorted(env):
        if var.startswith("CAREPATH_") and var not in known:
            yield f"{name}: {var} is not a setting CarePath reads"
        if var.startswith("TEMPORAL_") and not temporal_reads(var, env[var]):
            yield f"{name}: {var} is not read by Temporal's client configuration"
    try:
        settings = load_settings({**dockerfile_env(), **env})
    except SettingsError as exc:
        yield f"{name}: {exc}"
        return
    url = settings.database_url
    if not re.fullmatch(r"postgresql\+psycopg://carepath:[^@]+@postgresql:5432/carepath", url):
        yield f"{name}: CAREPATH_DATABASE_URL {url} is not the stack's PostgreSQL store"
    if "postgresql" not in (s.get("depends_on") or {}):
        yield f"{name}: uses the store but does not wait for postgresql"
    files = {"CAREPATH_KEYS_FILE": settings.key_file}
    for var, path in files.items():
        secret = path.name
        if path.parent != Path("/run/secrets") or secret not in s.get("secrets", []):
            yield f"{name}: {var} {path} is not one of its secrets"
    if env.get("TEMPORAL_ADDRESS", "").split(":")[0] not in services:
        yield f"{name}: TEMPORAL_ADDRESS {env.get('TEMPORAL_ADDRESS')} is not the stack's server"
    if name == "worker":
        if settings.metrics_address is None:
            yield "worker: no CAREPATH_METRICS_ADDRESS to scrape or check health by"
        elif settings.metrics_address.rsplit(":", 1)[1] not in map(str, s.get("expose", [])):
            yield f"worker: metrics port of {settings.metrics_address} is not exposed"
        if s.get("ports"):
            yield "worker: a fixed host port stops it being scaled"


def _ignored(path: str) -> bool:
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path],
        cwd=PROJECT_ROOT,
        check=False,
        capture_output=True,
    )
    if check.returncode in (0, 1):
        return check.returncode == 0
    # Not a git checkout: the top-level entry must be listed in .gitignore.
    top = path.removeprefix("./").split("/")[0]
    listed = (PROJECT_ROOT / ".gitignore").read_text().split()
    return f"/{top}" in listed or f"/{top}/" in listed


def test_the_compose_file_is_wired_as_the_code_expects() -> None:
    assert list(problems(load_compose())) == []


def test_the_stack_database_for_carepath_is_made_with_the_password_it_is_given() -> None:
    """The postgres image's init script creates the role and database the URL names, from
    the variable the compose file gives the postgresql service."""
    compose = load_compose()
    given = environment_of(compose["services"]["postgresql"])
    script = (PROJECT_ROOT / "deploy/postgres/10-carepath-database.sh").read_text()
    assert "STORE_DB_PASSWORD" in given and "${STORE_DB_PASSWORD" in script
    assert "CREATE ROLE carepath LOGIN" in script
    assert "CREATE DATABASE carepath OWNER carepath" in script
    assert given["STORE_DB_PASSWORD"] in compose["x-carepath-environment"]["CAREPATH_DATABASE_URL"]


def test_the_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert PINNED.match(base) and base.startswith("python:3.11"), base
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^CMD \["python", "worker.py"\]$', text, re.M)
    assert (PROJECT_ROOT / "worker.py").exists()
    copied = set()
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (PROJECT_ROOT / path).exists(), path
            copied.add(path.rstrip("/").removesuffix(".py"))
    # Every package the project installs is in the image (the editable install needs them all);
    # a subpackage (infra.store) comes with its parent's directory.
    setup = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top_level = {name.split(".")[0] for name in setup["packages"]}
    assert top_level | set(setup["py-modules"]) <= copied
    (check,) = re.findall(r'CMD \["python", "-m", "([\w.]+)"\]', text)
    assert (PROJECT_ROOT / (check.replace(".", "/") + ".py")).exists()
    # Nothing secret or local is sent to the image build.
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".env", "secrets/", "data/", ".venv/"} <= set(ignored)
    assert _ignored(".env") and _ignored("secrets/keys.json")


def test_the_commands_the_stack_runs_exist() -> None:
    from cli.main import parser

    services = load_compose()["services"]
    codec = services["codec-server"]["command"]
    assert codec[:2] == ["python", "starter.py"]
    assert parser().parse_args(codec[2:]).command == "codec-server"
    assert services["cli"]["entrypoint"] == ["python", "starter.py"]
    assert parser().parse_args(["status", "P-7K2M9Q4D"]).command == "status"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = compose
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_set("services/temporal/image", "temporalio/server:latest"), "is not pinned"),
        (_set("services/postgresql/image", "postgres:16"), "is not pinned"),
        (_set("services/worker/container_name", "worker"), "container_name"),
        (_set("services/worker/ports", ["9464:9464"]), "beyond the host's loopback"),
        (_set("services/temporal/healthcheck", None), "temporal: no health check"),
        (
            _set("services/worker/depends_on/temporal-setup", {"condition": "service_started"}),
            "not service_completed_successfully",
        ),
        (
            _set("services/worker/environment/CAREPATH_MAX_CACHE", "10"),
            "CAREPATH_MAX_CACHE is not a setting",
        ),
        (
            _set("services/worker/environment/CAREPATH_MAX_CACHED_WORKFLOWS", "lots"),
            "CAREPATH_MAX_CACHED_WORKFLOWS must be a whole number",
        ),
        (_set("services/worker/environment/TEMPORAL_HOST", "temporal:7233"), "TEMPORAL_HOST"),
        (_set("services/worker/secrets", []), "CAREPATH_KEYS_FILE /run/secrets/carepath_keys"),
        (_set("services/worker/expose", ["9000"]), "metrics port"),
        (_set("volumes", {}), "volume postgres-data is not declared"),
        (
            _set(
                "services/temporal-setup/environment/SEARCH_ATTRIBUTES",
                "CarePathPhase=Keyword CarePathSite=Text",
            ),
            "temporal-setup registers",
        ),
        (
            _set("x-carepath-environment/CAREPATH_DATABASE_URL", "sqlite:////tmp/care.db"),
            "is not the stack's PostgreSQL store",
        ),
        (_set("services/worker/command", ["python", "workers.py"]), "runs workers.py"),
    ],
)
def test_each_fault_is_named(change: Callable[[dict[str, Any]], None], named: str) -> None:
    compose = copy.deepcopy(load_compose())
    change(compose)
    # YAML anchors were resolved at load: apply a change to the shared environment to the
    # services that merge it, as Compose would.
    shared = compose["x-carepath-environment"]
    for name in ("worker", "cli", "codec-server"):
        service_env = compose["services"][name]["environment"]
        for key, value in shared.items():
            if key in service_env:
                service_env[key] = value
    found = list(problems(compose))
    assert any(named in p for p in found), found
