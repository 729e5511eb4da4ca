"""docker-compose.yaml, Dockerfile and .env.example checked statically (no Docker engine runs here).

The compose file is validated against the Compose Specification's JSON schema, the copy that the
pinned dev dependency `check-jsonschema` ships (its hash checked against the one it ships beside
it), then against what an Airflow 3 CeleryExecutor deployment of this project needs: the shared
environment is lab/airflow_celery.py's airflow_settings() (the local deployment's), and the worker
beside the pooler serves the pooler's queue and writes the ini PgBouncer reads. Each check
returns its problems as sentences; the tests at the bottom break the file in the ways that matter
(a component missing, a literal password, a pinned worker name, ...) and expect a problem each
time, so these tests can fail.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from lab.airflow_celery import COMPOSE, DEFAULT_QUEUE, airflow_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
MIGRATION_CONFIG = REPO_ROOT / "include" / "migration.yaml"

BASE_IMAGE = "apache/airflow:3.3.2-python3.11"
COMMON = "x-airflow-common"
# service name -> the Airflow command it runs
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
INIT = "airflow-init"
POOLER = "pgbouncer"
POOLER_WORKER = "airflow-worker-pgbouncer"
MIRROR_WORKER = "airflow-worker-kafka-mirror"
SETTINGS_HOME = "airflow_settings() in lab/airflow_celery.py"
APISERVER = "airflow-apiserver"
WORKER = "airflow-worker"
POSTGRES = "postgres"
REDIS = "redis"
HEALTHCHECKED = [POSTGRES, REDIS, *AIRFLOW_COMPONENTS]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# Options of providers the image ships but this venv does not install (so Airflow here cannot
# list them): the Celery provider's result backend.
OPTIONS_FROM_IMAGE_PROVIDERS = {("celery", "result_backend")}
# Environment keys whose values are secrets: they must come from .env, never be written here.
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|SECRET|FERNET|TOKEN|CREDENTIAL|PRIVATE|_AUTH$")
SECRET_FLAGS = {"--requirepass", "--password", "--pass", "-a"}
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>[^@\s]*(?:\s[^@]*)?)@")

Problems = list[str]


# --- Compose variable interpolation (the subset of the spec this project may use) ---------------

REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?$", re.S)


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset or empty: compose refuses to start."""


@dataclass(frozen=True)
class Reference:
    name: str
    operator: str | None  # None, "-", ":-", "?", ":?", "+", ":+"
    argument: str
    bare: bool

    @property
    def required(self) -> bool:
        return self.operator in {"?", ":?"}

    @property
    def defaulted(self) -> bool:
        return self.operator in {"-", ":-"}


def references_in(text: str) -> Iterator[Reference]:
    for match in REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        if match["bare"]:
            yield Reference(match["bare"], None, "", bare=True)
            continue
        parsed = BRACED.match(match["braced"])
        if parsed is None:
            raise ValueError(f"unsupported interpolation ${{{match['braced']}}} in {text!r}")
        yield Reference(parsed["name"], parsed["operator"], parsed["argument"] or "", bare=False)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        reference = next(references_in(match.group(0)))
        value = env.get(reference.name)
        operator = reference.operator or ""
        absent = not value if operator.startswith(":") else value is None
        kind = operator.lstrip(":")
        if kind == "?" and absent:
            raise MissingVariable(f"{reference.name}: {reference.argument}")
        if kind == "-" and absent:
            return reference.argument
        if kind == "+":
            return "" if absent else reference.argument
        return value or ""

    return REFERENCE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)


# --- loading ------------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def parse_env_file(text: str) -> dict[str, str]:
    """The active `NAME=value` lines of a dotenv file (quotes removed)."""
    entries = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            value = match[2].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            entries[match[1]] = value
    return entries


def sample_env(example: Mapping[str, str]) -> dict[str, str]:
    """.env.example with every empty value filled, as a user's .env would be."""
    return {name: value or f"sample{name.lower().replace('_', '')}" for name, value in example.items()}


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema vendored by check-jsonschema (pinned in requirements.txt)."""
    try:
        distribution = metadata.distribution("check-jsonschema")
    except metadata.PackageNotFoundError:
        pytest.fail("check-jsonschema (pinned in requirements.txt) is not installed: run `make bootstrap`")
    vendor = Path(str(distribution.locate_file("check_jsonschema/builtin_schemas/vendor")))
    raw = (vendor / "compose-spec.json").read_bytes()
    expected = (vendor / "sha256" / "compose-spec.sha256").read_text().split()[0]
    assert hashlib.sha256(raw).hexdigest() == expected, "compose-spec.json differs from its shipped hash"
    schema = json.loads(raw)
    assert isinstance(schema, dict)
    return schema


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return compose_schema()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text())


@pytest.fixture()
def raw() -> dict[str, Any]:
    return load_compose()


@pytest.fixture()
def rendered(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose renders it with a filled-in .env."""
    return interpolate_tree(raw, sample_env(env_example))


# --- helpers over the parsed document -------------------------------------------------------------


def services(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found = document.get("services") or {}
    return found if isinstance(found, dict) else {}


def command_text(service: Mapping[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(str(part) for part in command) if isinstance(command, list) else str(command)


def command_tokens(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", "")
    return [str(part) for part in command] if isinstance(command, list) else str(command).split()


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def airflow_services(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services(document).items() if name.startswith("airflow-")}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            found.append(Mount(source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            found.append(
                Mount(str(volume.get("source", "")), str(volume["target"]), bool(volume.get("read_only")))
            )
    return found


def host_path(source: str) -> Path | None:
    """A bind mount's host path, relative to the compose file; None for a named volume."""
    if not source.startswith((".", "/")):
        return None
    return (COMPOSE_FILE.parent / source).resolve()


def container_to_host(service: Mapping[str, Any], container_path: PurePosixPath) -> Path | None:
    """Where a path inside the container lives on the host, through the service's bind mounts."""
    best: tuple[int, Path] | None = None
    for mount in mounts(service):
        target = PurePosixPath(mount.target)
        source = host_path(mount.source)
        if source is None or not container_path.is_relative_to(target):
            continue
        if best is None or len(target.parts) > best[0]:
            best = (len(target.parts), source / container_path.relative_to(target))
    return None if best is None else best[1]


# --- the checks: each returns its problems ----------------------------------------------------------


def schema_problems(document: Any, schema: Mapping[str, Any]) -> Problems:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"schema: {'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    ]


def component_problems(document: Mapping[str, Any]) -> Problems:
    problems = []
    found = services(document)
    for name, command in AIRFLOW_COMPONENTS.items():
        if name not in found:
            problems.append(f"no {name} service (runs `airflow {command}`)")
        elif command_text(found[name]) != command:
            problems.append(f"{name} runs {command_text(found[name])!r}, not {command!r}")
    if INIT not in found:
        problems.append(f"no {INIT} service (db migrate + admin user)")
    for name, image in ((POSTGRES, "postgres:"), (REDIS, "redis:")):
        if name not in found:
            problems.append(f"no {name} service")
        elif not str(found[name].get("image", "")).startswith(image):
            problems.append(f"{name} runs image {found[name].get('image')!r}, not {image}*")
    return problems


def anchor_problems(document: Mapping[str, Any]) -> Problems:
    """Every Airflow service: the common image, build, env file, mounts and environment."""
    common = document.get(COMMON)
    if not isinstance(common, dict):
        return [f"no {COMMON} block shared by the Airflow services"]
    problems = []
    common_env = environment(common)
    for name, service in airflow_services(document).items():
        for key in ("image", "build", "env_file"):
            if service.get(key) != common.get(key):
                problems.append(
                    f"{name}: {key} {service.get(key)!r} differs from {COMMON}'s {common.get(key)!r}"
                )
        env = environment(service)
        for key, value in common_env.items():
            if env.get(key) != value:
                problems.append(f"{name}: environment {key} differs from {COMMON}'s")
        missing = set(map(str, common.get("volumes") or [])) - set(map(str, service.get("volumes") or []))
        if missing:
            problems.append(f"{name}: lacks the common volumes {sorted(missing)}")
    if not common.get("env_file"):
        problems.append(f"{COMMON} has no env_file: settings and connections cannot come from .env")
    return problems


def config_key_problems(document: Mapping[str, Any]) -> Problems:
    """Every AIRFLOW__SECTION__KEY names an option Airflow 3.3.2 (or a provider it runs) knows."""
    from airflow.configuration import conf

    description = conf.configuration_description
    problems = []
    for name, service in [(COMMON, document.get(COMMON) or {}), *services(document).items()]:
        for key in environment(service):
            if not key.startswith("AIRFLOW__"):
                continue
            section, _, option = key[len("AIRFLOW__") :].lower().partition("__")
            if (section, option) in OPTIONS_FROM_IMAGE_PROVIDERS:
                continue
            if option not in description.get(section, {}).get("options", {}):
                problems.append(f"{name}: {key} is no Airflow option ([{section}] {option})")
    return problems


def executor_problems(rendered: Mapping[str, Any]) -> Problems:
    problems = []
    found = services(rendered)
    env = environment(rendered.get(COMMON) or {})
    if env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
        problems.append(f"executor is {env.get('AIRFLOW__CORE__EXECUTOR')!r}, not CeleryExecutor")

    def points_at(key: str, schemes: tuple[str, ...], service: str, image: str, port: int) -> None:
        url = urlsplit(env.get(key, ""))
        if not url.scheme.startswith(schemes):
            problems.append(f"{key} has scheme {url.scheme!r}, not {' or '.join(schemes)}")
        if url.hostname != service or not str(found.get(service, {}).get("image", "")).startswith(image):
            problems.append(f"{key} points at host {url.hostname!r}, not the {service} service")
        if (url.port or port) != port:
            problems.append(f"{key} uses port {url.port}, not {port}")
        if not url.password:
            problems.append(f"{key} carries no password")

    points_at("AIRFLOW__CELERY__BROKER_URL", ("redis",), REDIS, "redis:", 6379)
    points_at("AIRFLOW__CELERY__RESULT_BACKEND", ("db+postgresql",), POSTGRES, "postgres:", 5432)
    points_at("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ("postgresql",), POSTGRES, "postgres:", 5432)
    return problems


def credential_problems(raw: Mapping[str, Any]) -> Problems:
    """The broker and the databases authenticate with the very variables their servers require."""
    problems = []
    env = environment(raw.get(COMMON) or {})
    found = services(raw)

    def names(text: str) -> set[str]:
        return {reference.name for reference in references_in(text)}

    redis_password = names(" ".join(command_tokens(found.get(REDIS, {}))))
    if not redis_password:
        problems.append("redis is started without --requirepass from .env")
    elif not redis_password <= names(env.get("AIRFLOW__CELERY__BROKER_URL", "")):
        problems.append(f"the broker URL does not use the password redis requires ({sorted(redis_password)})")
    postgres_password = names(environment(found.get(POSTGRES, {})).get("POSTGRES_PASSWORD", ""))
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        if not postgres_password or not postgres_password <= names(env.get(key, "")):
            problems.append(f"{key} does not use postgres's POSTGRES_PASSWORD variable")
    return problems


def auth_problems(rendered: Mapping[str, Any]) -> Problems:
    problems = []
    env = environment(rendered.get(COMMON) or {})
    if env.get("AIRFLOW__CORE__AUTH_MANAGER") != FAB_AUTH_MANAGER:
        problems.append("the auth manager is not FAB's, yet airflow-init creates a FAB admin user")
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        if not env.get(key):
            problems.append(f"{key} is not set for every component (each would make up its own)")
    init_env = environment(services(rendered).get(INIT, {}))
    for key in ("_AIRFLOW_DB_MIGRATE", "_AIRFLOW_WWW_USER_CREATE"):
        if init_env.get(key) != "true":
            problems.append(f"{INIT} does not set {key}=true")
    for key in ("_AIRFLOW_WWW_USER_USERNAME", "_AIRFLOW_WWW_USER_PASSWORD"):
        if not init_env.get(key):
            problems.append(f"{INIT} sets no {key}")
    if "/entrypoint" not in command_text(services(rendered).get(INIT, {})):
        problems.append(
            f"{INIT} does not go through the image's /entrypoint (which migrates and creates the user)"
        )
    return problems


def execution_api_problems(rendered: Mapping[str, Any]) -> Problems:
    env = environment(rendered.get(COMMON) or {})
    url = urlsplit(env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
    apiserver = services(rendered).get(url.hostname or "", {})
    if command_text(apiserver) != "api-server":
        return [f"the execution API URL points at {url.hostname!r}, not the api-server service"]
    problems = []
    container_ports = {str(port).rsplit(":", 1)[-1].split("/")[0] for port in apiserver.get("ports") or []}
    port = environment(apiserver).get("AIRFLOW__API__PORT", "8080")
    if str(url.port) != port or port not in container_ports:
        problems.append(f"the execution API URL uses port {url.port}; the api-server serves {port}")
    if url.path != "/execution/":
        problems.append(f"the execution API URL path is {url.path!r}, not '/execution/'")
    return problems


def mount_problems(rendered: Mapping[str, Any]) -> Problems:
    """dags/, plugins/, include/ mounted read-only where Airflow and the DAG look for them."""
    problems = []
    for name, service in airflow_services(rendered).items():
        env = environment(service)
        wanted = {
            "dags": env.get("AIRFLOW__CORE__DAGS_FOLDER", "/opt/airflow/dags"),
            "plugins": env.get("AIRFLOW__CORE__PLUGINS_FOLDER", "/opt/airflow/plugins"),
            "include": "/opt/airflow/include",
        }
        for folder, target in wanted.items():
            mount = next((mount for mount in mounts(service) if mount.target == target), None)
            if mount is None or host_path(mount.source) != REPO_ROOT / folder:
                problems.append(f"{name}: {folder}/ is not mounted at {target}")
            elif not mount.read_only:
                problems.append(f"{name}: {folder}/ is mounted writable at {target}")
        # The DAG reads PYAIRTABLE_MIGRATION_CONFIG, else config.DEFAULT_CONFIG_PATH, which sits
        # at a fixed place relative to the config module inside plugins/.
        from pyairtable_migration import config

        module = Path(config.__file__).resolve()
        relative = config.DEFAULT_CONFIG_PATH.relative_to(module.parents[2])
        in_container = PurePosixPath(wanted["plugins"]) / module.relative_to(REPO_ROOT / "plugins").as_posix()
        config_path = PurePosixPath(
            env.get("PYAIRTABLE_MIGRATION_CONFIG") or in_container.parents[2] / relative.as_posix()
        )
        on_host = container_to_host(service, config_path)
        if on_host is None or on_host != MIGRATION_CONFIG:
            problems.append(f"{name}: the DAG reads {config_path}, which is not include/migration.yaml")
    return problems


def variable_problems(raw: Mapping[str, Any], example: Mapping[str, str]) -> Problems:
    """Every ${VAR}: documented in .env.example, and either defaulted or required."""
    problems = []
    seen: set[str] = set()
    for text in strings_in(raw):
        for reference in references_in(text):
            if reference.name in seen:
                continue
            seen.add(reference.name)
            if reference.bare:
                problems.append(f"${reference.name}: write ${{{reference.name}}} (or $$ for the container)")
            if reference.name not in example:
                problems.append(f"${{{reference.name}}} has no entry in .env.example")
            if not (reference.defaulted or reference.required):
                problems.append(f"${{{reference.name}}} has neither a default (:-) nor a message (:?)")
            if SECRET_KEY.search(reference.name) and not reference.required:
                problems.append(
                    f"${{{reference.name}}} is a secret but compose would start without it (use :?)"
                )
    return problems


def is_reference(value: str) -> bool:
    """The whole value is one ${VAR...} reference: nothing literal around it."""
    found = list(references_in(value))
    return len(found) == 1 and REFERENCE.fullmatch(value) is not None


def secret_problems(raw: Mapping[str, Any]) -> Problems:
    """No password, key or secret written in the compose file: each is a ${VAR:?...} from .env."""
    problems = []
    blocks = [(COMMON, raw.get(COMMON) or {}), *services(raw).items()]
    for name, service in blocks:
        for key, value in environment(service).items():
            if not SECRET_KEY.search(key):
                continue
            if not is_reference(value):
                problems.append(f"{name}: {key} has a literal value; take it from .env as ${{VAR:?...}}")
            elif not next(references_in(value)).required:
                problems.append(f"{name}: {key} may fall back to a default; write ${{VAR:?...}}")
        tokens = command_tokens(service)
        for flag, value in itertools.pairwise(tokens):
            if flag in SECRET_FLAGS and not is_reference(value):
                problems.append(f"{name}: {flag} is followed by a literal value")
    for text in strings_in(raw):
        for match in URL_PASSWORD.finditer(text):
            if not is_reference(match["password"]):
                problems.append(f"a URL carries a literal password: {text!r}")
    return problems


def healthcheck_problems(document: Mapping[str, Any]) -> Problems:
    problems = []
    for name in HEALTHCHECKED:
        check = services(document).get(name, {}).get("healthcheck") or {}
        if not check.get("test") or check.get("disable") or check.get("test") == ["NONE"]:
            problems.append(f"{name} has no healthcheck")
    return problems


def depends_on_problems(document: Mapping[str, Any]) -> Problems:
    problems = []
    found = services(document)
    backing = {POSTGRES: "service_healthy", REDIS: "service_healthy"}
    wanted: dict[str, dict[str, str]] = {
        name: {**backing, INIT: "service_completed_successfully"} for name in AIRFLOW_COMPONENTS
    }
    wanted[WORKER][APISERVER] = "service_healthy"
    wanted[INIT] = dict(backing)
    for name, dependencies in wanted.items():
        depends_on = found.get(name, {}).get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on without conditions (a list) starts it too early")
            continue
        for dependency, condition in dependencies.items():
            actual = (depends_on.get(dependency) or {}).get("condition")
            if actual != condition:
                problems.append(f"{name} depends on {dependency} with {actual!r}, not {condition}")
    for name, service in found.items():
        depends_on = service.get("depends_on") or {}
        for dependency in depends_on:
            if dependency not in found:
                problems.append(f"{name} depends on {dependency}, which is no service")
            elif isinstance(depends_on, dict):
                declared = (depends_on[dependency] or {}).get("condition")
                if declared == "service_healthy" and not found[dependency].get("healthcheck"):
                    problems.append(f"{name} waits for {dependency} to be healthy; it has no healthcheck")
    return problems


def settings_problems(raw: Mapping[str, Any]) -> Problems:
    """The shared environment is the one the local Celery deployment runs with: one source, no drift."""
    env = environment(raw.get(COMMON) or {})
    wanted = airflow_settings(COMPOSE)
    return [
        *(f"{COMMON}: {key} is missing; {SETTINGS_HOME} sets it" for key in wanted if key not in env),
        *(f"{COMMON}: {key} is not among {SETTINGS_HOME}" for key in env if key not in wanted),
        *(
            f"{COMMON}: {key} differs from {SETTINGS_HOME}"
            for key in wanted
            if key in env and env[key] != wanted[key]
        ),
    ]


def pooler_problems(rendered: Mapping[str, Any]) -> Problems:
    """The worker beside the pooler: its own queue, PgBouncer's config volume writable, and the admin
    connection's `ini_path` (.env.example) the very ini PgBouncer was started with."""
    found = services(rendered)
    pooler, worker = found.get(POOLER), found.get(POOLER_WORKER)
    if pooler is None or worker is None:
        return [f"no {name} service" for name in (POOLER, POOLER_WORKER) if name not in found]
    tokens = command_tokens(pooler)
    if len(tokens) != 2 or tokens[0] != "pgbouncer":
        return [f"{POOLER} runs {tokens}, not `pgbouncer <ini>`"]
    ini = PurePosixPath(tokens[1])
    config = next((mount for mount in mounts(pooler) if ini.is_relative_to(mount.target)), None)
    if config is None:
        return [f"{POOLER}'s ini {ini} is on no volume another service could share"]
    problems = []
    shared = next((m for m in mounts(worker) if (m.source, m.target) == (config.source, config.target)), None)
    if shared is None:
        problems.append(
            f"{POOLER_WORKER} does not mount {POOLER}'s config ({config.source} at {config.target})"
        )
    elif shared.read_only:
        problems.append(f"{POOLER_WORKER} mounts {POOLER}'s config read-only; the switchover rewrites {ini}")
    worker_tokens = command_tokens(worker)
    queues = worker_tokens[3].split(",") if worker_tokens[:3] == ["celery", "worker", "--queues"] else []
    configured = {
        str(pooler.get("queue"))
        for pooler in yaml.safe_load(MIGRATION_CONFIG.read_text())["database"]["poolers"]
    }
    if queues and set(queues) != configured:
        problems.append(
            f"{POOLER_WORKER} serves {queues}; include/migration.yaml's poolers name {sorted(configured)}"
        )
    if not queues or DEFAULT_QUEUE in queues:
        problems.append(
            f"{POOLER_WORKER} runs {worker_tokens}, not `celery worker --queues <the pooler's queue>`"
        )
    ini_paths = set(re.findall(r'"ini_path": "([^"]+)"', ENV_EXAMPLE.read_text()))
    if ini_paths != {str(ini)}:
        problems.append(f".env.example's pooler connection names ini_path {sorted(ini_paths)}, not {ini}")
    condition = ((worker.get("depends_on") or {}).get(POOLER) or {}).get("condition")
    if condition != "service_healthy":
        problems.append(f"{POOLER_WORKER} depends on {POOLER} with {condition!r}, not service_healthy")
    return problems


def mirror_problems(rendered: Mapping[str, Any]) -> Problems:
    """The Kafka mirror's worker: the config's mirror queue alone, the mirror's state on a volume."""
    kafka = yaml.safe_load(MIGRATION_CONFIG.read_text()).get("kafka") or {}
    queue, state_dir = kafka.get("mirror_queue"), kafka.get("mirror_state_dir")
    if not queue:
        return []
    worker = services(rendered).get(MIRROR_WORKER)
    if worker is None:
        return [f"no {MIRROR_WORKER} service for include/migration.yaml's kafka.mirror_queue {queue!r}"]
    problems = []
    if command_tokens(worker) != ["celery", "worker", "--queues", str(queue)]:
        problems.append(
            f"{MIRROR_WORKER} runs {command_tokens(worker)}, not `celery worker --queues {queue}`"
        )
    if not any(mount.target == state_dir and not mount.read_only for mount in mounts(worker)):
        problems.append(f"{MIRROR_WORKER} mounts no writable volume at kafka.mirror_state_dir {state_dir}")
    return problems


def scaling_problems(document: Mapping[str, Any]) -> Problems:
    """`docker compose up --scale airflow-worker=3` needs copies that do not collide."""
    worker = services(document).get(WORKER, {})
    return [
        f"{WORKER} sets {key}: its copies would collide when scaled"
        for key in ("container_name", "hostname", "ports")
        if worker.get(key)
    ]


def all_problems(raw: Mapping[str, Any], example: Mapping[str, str], schema: Mapping[str, Any]) -> Problems:
    rendered = interpolate_tree(raw, sample_env(example))
    problems = [
        *schema_problems(raw, schema),
        *schema_problems(rendered, schema),
        *component_problems(rendered),
        *anchor_problems(rendered),
        *config_key_problems(rendered),
        *executor_problems(rendered),
        *credential_problems(raw),
        *auth_problems(rendered),
        *execution_api_problems(rendered),
        *mount_problems(rendered),
        *variable_problems(raw, example),
        *secret_problems(raw),
        *healthcheck_problems(rendered),
        *depends_on_problems(rendered),
        *scaling_problems(rendered),
        *settings_problems(raw),
        *pooler_problems(rendered),
        *mirror_problems(rendered),
    ]
    return list(dict.fromkeys(problems))


# --- the tests on the real files ---------------------------------------------------------------


def test_schema_is_the_compose_specification(schema):
    assert schema.get("title") == "Compose Specification"
    assert "services" in schema["properties"]


def test_compose_file_follows_the_compose_specification(raw, rendered, schema):
    assert schema_problems(raw, schema) == []
    assert schema_problems(rendered, schema) == []


# One check a case, on the compose file as Compose renders it with a filled-in .env, or as written.
CHECKS_ON_RENDERED: dict[str, Callable[[Mapping[str, Any]], Problems]] = {
    "every Airflow 3 component is there": component_problems,
    "the Airflow services share one image, environment and mounts": anchor_problems,
    "the Celery broker is Redis and results go to PostgreSQL": executor_problems,
    "the auth manager's shared secrets and init": auth_problems,
    "the execution API URL points at the api-server": execution_api_problems,
    "dags, plugins and include mounted where Airflow and the DAG look": mount_problems,
    "healthchecks": healthcheck_problems,
    "startup order": depends_on_problems,
    "the worker can be scaled": scaling_problems,
    "the pooler worker serves its queue and writes the poolers' ini": pooler_problems,
    "the Kafka mirror's worker serves its queue and keeps its state": mirror_problems,
}
CHECKS_ON_RAW: dict[str, Callable[[Mapping[str, Any]], Problems]] = {
    "every Airflow setting is a real option": config_key_problems,
    "the broker and databases use the passwords their servers require": credential_problems,
    "no literal secret in the compose file": secret_problems,
    "the shared environment is the local Celery deployment's": settings_problems,
}


@pytest.mark.parametrize("check", list(CHECKS_ON_RENDERED.values()), ids=list(CHECKS_ON_RENDERED))
def test_the_rendered_file_passes_the_check(check, rendered):
    assert check(rendered) == []


@pytest.mark.parametrize("check", list(CHECKS_ON_RAW.values()), ids=list(CHECKS_ON_RAW))
def test_the_file_as_written_passes_the_check(check, raw):
    assert check(raw) == []


def test_every_variable_is_documented_in_env_example(raw, env_example):
    assert variable_problems(raw, env_example) == []


def test_env_example_holds_no_secret_and_compose_refuses_to_start_unfilled(raw, env_example):
    secrets = [name for name in env_example if SECRET_KEY.search(name)]
    assert secrets, ".env.example documents no secret at all"
    assert {name: env_example[name] for name in secrets if env_example[name]} == {}
    for name in secrets:
        with pytest.raises(MissingVariable, match=name):
            interpolate_tree(raw, {**sample_env(env_example), name: ""})


def test_dockerfile_extends_the_official_image_with_our_requirements(raw):
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert instructions[0] == f"FROM {BASE_IMAGE}"
    pinned = re.search(r"^apache-airflow==(\S+)$", REQUIREMENTS.read_text(), re.M)
    assert pinned and BASE_IMAGE.split(":")[1].startswith(f"{pinned[1]}-python3.11"), (
        "the image's Airflow version differs from requirements.txt's pin"
    )
    assert re.search(r"^COPY requirements\.txt (\S+)$", text, re.M)
    assert re.search(r'pip install[^\n]*(\\\n[^\n]*)*"apache-airflow==\$\{AIRFLOW_VERSION\}"', text)
    assert re.search(r"-r /tmp/requirements\.txt", text)
    # The schema copy runs pg_dump from include/migration.yaml's pg_bin_dir.
    pg_bin_dir = yaml.safe_load(MIGRATION_CONFIG.read_text())["database"]["pg_bin_dir"]
    major = re.fullmatch(r"/usr/lib/postgresql/(\d+)/bin", pg_bin_dir)
    assert major, f"pg_bin_dir {pg_bin_dir} is not a Debian PostgreSQL client path"
    assert re.search(rf"^ARG PG_CLIENT_MAJOR={major[1]}$", text, re.M)
    assert '"postgresql-client-${PG_CLIENT_MAJOR}"' in text
    common = raw[COMMON]
    assert common.get("build") in (".", {"context": "."}), "the Airflow services do not build ./Dockerfile"


def test_dockerignore_keeps_secrets_and_the_venv_out_of_the_build_context():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    patterns = [pattern for pattern in patterns if not pattern.startswith("#")]

    def excluded(path: str) -> bool:
        result = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!")):
                result = not negated
        return result

    for path in (".env", ".venv", ".lab", ".git", "tests"):
        assert excluded(path), f"{path} would be sent to the Docker build"
    assert not excluded("requirements.txt")


# --- the checks can fail: break the file, expect the problem --------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def set_common_env(doc: dict[str, Any], key: str, value: str) -> None:
    """An edit of the anchor's environment, as every service merging it would see it."""
    for block in [doc[COMMON], *airflow_services(doc).values()]:
        block["environment"][key] = value


def set_common_volumes(doc: dict[str, Any], edit: Callable[[str], str]) -> None:
    doc[COMMON]["volumes"] = [edit(volume) for volume in doc[COMMON]["volumes"]]
    for service in airflow_services(doc).values():
        service["volumes"] = doc[COMMON]["volumes"]


def _drop_triggerer(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-triggerer"]


def _drop_redis(doc: dict[str, Any]) -> None:
    del doc["services"]["redis"]


def _local_executor(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


def _broker_on_localhost(doc: dict[str, Any]) -> None:
    url = doc[COMMON]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    set_common_env(doc, "AIRFLOW__CELERY__BROKER_URL", url.replace("@redis:", "@localhost:"))


def _results_in_redis(doc: dict[str, Any]) -> None:
    set_common_env(
        doc, "AIRFLOW__CELERY__RESULT_BACKEND", doc[COMMON]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    )


def _execution_api_on_localhost(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://localhost:8080/execution/")


def _execution_api_wrong_path(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://airflow-apiserver:8080/")


def _literal_postgres_password(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "airflow"


def _literal_password_in_url(doc: dict[str, Any]) -> None:
    url = "postgresql+psycopg2://airflow:airflow@postgres:5432/airflow"
    set_common_env(doc, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)


def _literal_fernet_key(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__CORE__FERNET_KEY", "bm90LWEtcmVhbC1rZXktYnV0LWxpdGVyYWwtMzJieXQ=")


def _literal_redis_password(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["command"] = ["redis-server", "--requirepass", "hunter2"]


def _secret_with_default(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__API_AUTH__JWT_SECRET", "${AIRFLOW_JWT_SECRET:-changeme}")


def _undocumented_variable(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker"]["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = (
        "${WORKER_CONCURRENCY:-16}"
    )


def _misspelt_option(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__API_AUTH__JWT_SECRETS", "${AIRFLOW_JWT_SECRET:?set it}")


def _no_jwt_secret(doc: dict[str, Any]) -> None:
    for block in [doc[COMMON], *airflow_services(doc).values()]:
        block["environment"].pop("AIRFLOW__API_AUTH__JWT_SECRET", None)


def _worker_container_name(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker"]["container_name"] = "airflow-worker"


def _worker_host_port(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker"]["ports"] = ["8793:8793"]


def _no_apiserver_healthcheck(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-apiserver"]["healthcheck"]


def _depends_on_without_conditions(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-scheduler"]["depends_on"] = ["postgres", "redis", "airflow-init"]


def _worker_before_apiserver(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-worker"]["depends_on"]["airflow-apiserver"]


def _worker_other_image(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker"]["image"] = "apache/airflow:3.3.2"


def _worker_without_env_file(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-worker"]["env_file"]


def _dags_writable(doc: dict[str, Any]) -> None:
    set_common_volumes(
        doc, lambda volume: volume.removesuffix(":ro") if volume.startswith("./dags:") else volume
    )


def _plugins_elsewhere(doc: dict[str, Any]) -> None:
    set_common_volumes(doc, lambda volume: volume.replace(":/opt/airflow/plugins", ":/plugins"))


def _include_elsewhere(doc: dict[str, Any]) -> None:
    set_common_volumes(doc, lambda volume: volume.replace(":/opt/airflow/include", ":/include"))


def _no_init_user(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_CREATE"]


def _simple_auth_manager(doc: dict[str, Any]) -> None:
    manager = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    set_common_env(doc, "AIRFLOW__CORE__AUTH_MANAGER", manager)


def _unknown_compose_key(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-scheduler"]["restart_policy"] = "always"


def _healthcheck_interval_number(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["healthcheck"]["interval"] = 10


def _heartbeat_interval_changed(doc: dict[str, Any]) -> None:
    set_common_env(doc, "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "5")


def _pooler_worker_without_config(doc: dict[str, Any]) -> None:
    worker = doc["services"][POOLER_WORKER]
    worker["volumes"] = [volume for volume in worker["volumes"] if not volume.endswith(":/etc/pgbouncer")]


def _pooler_config_read_only(doc: dict[str, Any]) -> None:
    worker = doc["services"][POOLER_WORKER]
    worker["volumes"] = [f"{v}:ro" if v.endswith(":/etc/pgbouncer") else v for v in worker["volumes"]]


def _pooler_worker_other_queue(doc: dict[str, Any]) -> None:
    doc["services"][POOLER_WORKER]["command"] = "celery worker --queues poolers"


def _pooler_worker_serves_default(doc: dict[str, Any]) -> None:
    doc["services"][POOLER_WORKER]["command"] = "celery worker"


def _mirror_worker_removed(doc: dict[str, Any]) -> None:
    del doc["services"][MIRROR_WORKER]


def _mirror_state_not_kept(doc: dict[str, Any]) -> None:
    worker = doc["services"][MIRROR_WORKER]
    worker["volumes"] = [v for v in worker["volumes"] if not v.startswith("kafka-mirror:")]


# name -> (how to break the file, words of the problem the checks must report)
MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "Kafka mirror worker removed": (_mirror_worker_removed, f"no {MIRROR_WORKER} service"),
    "Kafka mirror state on no volume": (_mirror_state_not_kept, "mounts no writable volume"),
    "triggerer removed": (_drop_triggerer, "no airflow-triggerer service"),
    "redis removed": (_drop_redis, "no redis service"),
    "LocalExecutor": (_local_executor, "not CeleryExecutor"),
    "broker on localhost": (_broker_on_localhost, "BROKER_URL points at host 'localhost'"),
    "result backend in redis": (_results_in_redis, "RESULT_BACKEND points at host 'redis'"),
    "execution API on localhost": (_execution_api_on_localhost, "execution API URL points at 'localhost'"),
    "execution API path": (_execution_api_wrong_path, "not '/execution/'"),
    "literal POSTGRES_PASSWORD": (_literal_postgres_password, "POSTGRES_PASSWORD has a literal value"),
    "literal password in a URL": (_literal_password_in_url, "URL carries a literal password"),
    "literal Fernet key": (_literal_fernet_key, "FERNET_KEY has a literal value"),
    "literal Redis password": (_literal_redis_password, "--requirepass is followed by a literal value"),
    "secret with a default": (_secret_with_default, "compose would start without it"),
    "variable missing from .env.example": (_undocumented_variable, "has no entry in .env.example"),
    "misspelt Airflow option": (_misspelt_option, "is no Airflow option"),
    "no shared JWT secret": (_no_jwt_secret, "JWT_SECRET is not set for every component"),
    "worker container_name": (_worker_container_name, "sets container_name"),
    "worker host port": (_worker_host_port, "sets ports"),
    "api-server without healthcheck": (_no_apiserver_healthcheck, "airflow-apiserver has no healthcheck"),
    "depends_on without conditions": (_depends_on_without_conditions, "depends_on without conditions"),
    "worker before the api-server": (_worker_before_apiserver, "airflow-worker depends on airflow-apiserver"),
    "worker on another image": (_worker_other_image, "airflow-worker: image"),
    "worker without env_file": (_worker_without_env_file, "airflow-worker: env_file"),
    "dags mounted writable": (_dags_writable, "dags/ is mounted writable"),
    "plugins mounted elsewhere": (_plugins_elsewhere, "plugins/ is not mounted at /opt/airflow/plugins"),
    "include mounted elsewhere": (_include_elsewhere, "which is not include/migration.yaml"),
    "init creates no user": (_no_init_user, "_AIRFLOW_WWW_USER_CREATE"),
    "simple auth manager": (_simple_auth_manager, "auth manager is not FAB's"),
    "unknown compose key": (_unknown_compose_key, "'restart_policy' was unexpected"),
    "a shared setting drifted": (_heartbeat_interval_changed, "MIN_HEARTBEAT_INTERVAL differs from"),
    "pooler worker without its config": (_pooler_worker_without_config, "does not mount pgbouncer's config"),
    "pooler config read-only": (_pooler_config_read_only, "mounts pgbouncer's config read-only"),
    "pooler worker on another queue": (_pooler_worker_other_queue, "include/migration.yaml's poolers name"),
    "pooler worker on the default queue": (_pooler_worker_serves_default, "not `celery worker --queues"),
    "healthcheck interval not a duration": (
        _healthcheck_interval_number,
        "schema: services/postgres/healthcheck",
    ),
}


def test_the_unbroken_file_has_no_problem(raw, env_example, schema):
    assert all_problems(raw, env_example, schema) == []


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_a_broken_file_is_caught(mutation, raw, env_example, schema):
    broken = copy.deepcopy(raw)
    breaks, expected = MUTATIONS[mutation]
    breaks(broken)
    problems = all_problems(broken, env_example, schema)
    assert any(expected in problem for problem in problems), (
        f"{mutation}: expected {expected!r} in {problems}"
    )
