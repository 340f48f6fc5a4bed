"""Settings from the environment (CAREPATH_*), with defaults for the embedded setup.

Where Temporal is (address, namespace, TLS, API key) is not here: it comes from a
`temporalio.envconfig` profile and TEMPORAL_* variables (infra/temporal.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A CAREPATH_* variable holds a value CarePath cannot use."""


SITES_FILE = "sites.toml"
"""The sites file's name beside the programs, where a worker looks for it by default."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    programs_dir: Path
    database_url: str
    task_queue: str
    log_format: str  # "console" or "json"
    log_level: str
    max_cached_workflows: int
    server_port: int
    ui_port: int
    # The simulated telephony's cohort: the highest chance that a simulated patient reports
    # use at a check-in (each patient draws their own below it). 0 keeps everyone abstinent.
    simulated_use_risk: float = 0.02
    # Payload encryption (AES-GCM) with the key file, made on first use; off only for the
    # demo (CAREPATH_ENCRYPTION=off) or by choice.
    encryption: bool = True
    keys_file: Path | None = None

    codec_port: int = 8234
    # The codec server listens on loopback; in a container, on all of the container's
    # interfaces (its port is then published on the host's loopback only).
    codec_host: str = "127.0.0.1"
    ui_url: str | None = None  # the Web UI's origin, allowed to call the codec server

    # A worker's share of the work: activity threads (each may hold a database
    # connection), workflow tasks in flight, and the workflow cache (its memory bound).
    max_concurrent_activities: int = 16
    max_concurrent_workflow_tasks: int = 100
    # Prometheus metrics of a worker ("host:port"; off when None) and how often CarePath's
    # own gauges are read from the store.
    metrics_address: str | None = None
    metrics_interval: float = 15.0
    # OpenTelemetry tracing of workflows and activities (the `otel` extra).
    otel: bool = False
    # The worker's overrides of temporalio 1.35's private sandbox internals (infra/sandbox.py):
    # on, as BENCHMARKS.md measured them worth it; off runs the SDK exactly as shipped.
    sdk_tuning: bool = True
    # The workflow sandbox (on): off only for the simulations' own workers (a what-if, the
    # cohort benchmark), whose workflows the sandboxed tests and the replay gate check; a
    # fifth of a simulation worker's CPU (BENCHMARKS.md). Never off for a clinic's worker.
    workflow_sandbox: bool = True
    # How long a workflow task may hold its thread before the SDK fails it as a potential
    # deadlock ([TMPRL1101]): the SDK's 2 s, but for the simulations' own workers (60 s),
    # whose tasks a full garbage collection of a large worker on a loaded machine can hold
    # for longer (BENCHMARKS.md, what-if section).
    deadlock_timeout: float = 2.0
    # Workflow tasks on threads of their own (on: the SDK's way, which lets its deadlock
    # detector fail a task that holds its thread); off runs each on the worker's event loop,
    # without the hand-offs to and from a thread and without the detector: only for the
    # simulations' own workers (BENCHMARKS.md, fourth what-if session).
    workflow_threads: bool = True
    # Synchronous activities (the store's writes) on the activity threads (on); off calls
    # each inline on the worker's event loop (infra/inline_activities.py), without the
    # hand-off of its result back to the loop: only for the simulations' own workers, whose
    # workflow tasks are on the loop too. An activity that blocks would hold up the worker.
    activity_threads: bool = True
    # The worker's garbage collector frozen after start, with higher thresholds (off: Python's
    # defaults): only for the simulations' own workers, whose full collections held every
    # thread for seconds (BENCHMARKS.md).
    gc_tuning: bool = False
    # The clinic's sites (time zones, holidays): `sites.toml` beside the programs unless set.
    sites_path: Path | None = None
    # The case managers' console (`starter.py console`).
    console_host: str = "127.0.0.1"
    console_port: int = 8000
    console_idle_minutes: float = 15.0  # automatic sign-out after this long without activity
    console_secure_cookies: bool = False  # on behind HTTPS (a reverse proxy in production)
    console_url: str | None = None  # the console's public origin (redirects come back here)
    # OpenID Connect sign-in instead of local passwords, when an issuer is set.
    oidc_issuer: str | None = None
    oidc_client_id: str = "carepath-console"
    oidc_client_secret: str = ""
    # Delivering the outbox (`starter.py deliver`): e-mail through an SMTP server, texts
    # through an SMS provider's HTTP API. A channel with no server configured is not sent
    # (its messages wait). Secrets come from owner-only files, never the environment.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "care-team@carepath.invalid"
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password_file: Path | None = None
    sms_url: str | None = None
    sms_from: str = "CarePath"
    sms_token_file: Path | None = None
    delivery_interval: float = 15.0  # seconds between passes when nothing was due
    # The telephony provider's HTTP API for check-in calls (its callbacks come to
    # /api/v1/webhooks/{sender}); unset: the in-process simulated provider, which is for
    # simulated cohorts only (its outcomes need no callback). Its token from a file.
    telephony_url: str | None = None
    telephony_token_file: Path | None = None

    @property
    def sites_file(self) -> Path:
        return self.sites_path or self.programs_dir / SITES_FILE

    @property
    def key_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def webhook_senders_file(self) -> Path:
        """Who may send events, with their secrets (owner-only; infra.webhooks)."""
        return self.data_dir / "webhook-senders.json"

    @property
    def ui_origin(self) -> str:
        return self.ui_url or f"http://127.0.0.1:{self.ui_port}"

    @property
    def console_origin(self) -> str:
        return (self.console_url or f"http://{self.console_host}:{self.console_port}").rstrip("/")

    @property
    def embedded_address(self) -> str:
        return f"127.0.0.1:{self.server_port}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (the process environment unless given)."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("CAREPATH_DATA_DIR", PROJECT_ROOT / "data")).resolve()
    return Settings(
        data_dir=data_dir,
        programs_dir=Path(env.get("CAREPATH_PROGRAMS_DIR", PROJECT_ROOT / "programs")).resolve(),
        database_url=_database_url(env, f"sqlite:///{data_dir / 'carepath.db'}"),
        task_queue=_name(env, "CAREPATH_TASK_QUEUE", "carepath"),
        log_format=_choice(env, "CAREPATH_LOG_FORMAT", "console", ("console", "json")),
        log_level=_choice(
            env, "CAREPATH_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ),
        max_cached_workflows=_count(env, "CAREPATH_MAX_CACHED_WORKFLOWS", 1000, least=0),
        server_port=_port(env, "CAREPATH_SERVER_PORT", 7233),
        ui_port=_port(env, "CAREPATH_UI_PORT", 8233),
        simulated_use_risk=_probability(env, "CAREPATH_SIMULATED_USE_RISK", 0.02),
        encryption=_switch(env, "CAREPATH_ENCRYPTION", True),
        codec_port=_port(env, "CAREPATH_CODEC_PORT", 8234),
        codec_host=env.get("CAREPATH_CODEC_HOST", "127.0.0.1"),
        ui_url=env.get("CAREPATH_UI_URL") or None,
        keys_file=_path(env, "CAREPATH_KEYS_FILE"),
        sites_path=_path(env, "CAREPATH_SITES_FILE"),
        max_concurrent_activities=_count(env, "CAREPATH_MAX_CONCURRENT_ACTIVITIES", 16),
        max_concurrent_workflow_tasks=_count(
            env, "CAREPATH_MAX_CONCURRENT_WORKFLOW_TASKS", 100, least=2
        ),
        metrics_address=_address(env, "CAREPATH_METRICS_ADDRESS"),
        metrics_interval=_seconds(env, "CAREPATH_METRICS_INTERVAL", 15.0),
        otel=_switch(env, "CAREPATH_OTEL", False),
        sdk_tuning=_switch(env, "CAREPATH_SDK_TUNING", True),
        workflow_sandbox=_switch(env, "CAREPATH_WORKFLOW_SANDBOX", True),
        deadlock_timeout=_seconds(env, "CAREPATH_DEADLOCK_TIMEOUT", 2.0),
        workflow_threads=_switch(env, "CAREPATH_WORKFLOW_THREADS", True),
        activity_threads=_switch(env, "CAREPATH_ACTIVITY_THREADS", True),
        gc_tuning=_switch(env, "CAREPATH_GC_TUNING", False),
        console_host=env.get("CAREPATH_CONSOLE_HOST", "127.0.0.1"),
        console_port=_port(env, "CAREPATH_CONSOLE_PORT", 8000),
        console_idle_minutes=_number(
            env, "CAREPATH_CONSOLE_IDLE_MINUTES", 15.0, lambda v: 0 < v <= 720, "minutes (0-720]"
        ),
        console_secure_cookies=_switch(env, "CAREPATH_CONSOLE_SECURE_COOKIES", False),
        console_url=env.get("CAREPATH_CONSOLE_URL") or None,
        oidc_issuer=env.get("CAREPATH_OIDC_ISSUER") or None,
        oidc_client_id=env.get("CAREPATH_OIDC_CLIENT_ID", "carepath-console"),
        oidc_client_secret=env.get("CAREPATH_OIDC_CLIENT_SECRET", ""),
        smtp_host=env.get("CAREPATH_SMTP_HOST") or None,
        smtp_port=_port(env, "CAREPATH_SMTP_PORT", 25),
        smtp_from=env.get("CAREPATH_SMTP_FROM") or "care-team@carepath.invalid",
        smtp_starttls=_switch(env, "CAREPATH_SMTP_STARTTLS", False),
        smtp_user=env.get("CAREPATH_SMTP_USER") or None,
        smtp_password_file=_path(env, "CAREPATH_SMTP_PASSWORD_FILE"),
        sms_url=_http_url(env, "CAREPATH_SMS_URL"),
        sms_from=env.get("CAREPATH_SMS_FROM") or "CarePath",
        sms_token_file=_path(env, "CAREPATH_SMS_TOKEN_FILE"),
        delivery_interval=_seconds(env, "CAREPATH_DELIVERY_INTERVAL", 15.0),
        telephony_url=_http_url(env, "CAREPATH_TELEPHONY_URL"),
        telephony_token_file=_path(env, "CAREPATH_TELEPHONY_TOKEN_FILE"),
    )


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.lower() in ("on", "true", "1", "yes"):
        return True
    if raw.lower() in ("off", "false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, not {raw!r}")


def _number(
    env: Mapping[str, str], name: str, default: float, fits: Callable[[float], bool], what: str
) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")  # fits nothing
    if not fits(value):
        raise SettingsError(f"{name} must be {what}, not {raw!r}")
    return value


def _probability(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 0.0 <= v <= 1.0, "a probability between 0 and 1")


def _count(env: Mapping[str, str], name: str, default: int, least: int = 1) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        raise SettingsError(f"{name} must be a whole number of at least {least}, not {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _count(env, name, default)
    if value > 65535:
        raise SettingsError(f"{name} must be a port (1-65535), not {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: v > 0, "a number of seconds above 0")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not value or value != value.strip() or len(value) > 200:
        raise SettingsError(f"{name} must be a name without spaces around it, not {value!r}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).resolve() if raw else None


def _address(env: Mapping[str, str], name: str) -> str | None:
    """A "host:port" to listen on, or None when unset or empty."""
    raw = env.get(name)
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise SettingsError(f"{name} must be host:port (e.g. 127.0.0.1:9464), not {raw!r}")
    return raw


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")):
        raise SettingsError(f"{name} must be an http(s):// URL, not {raw.split(':')[0]}:…")
    return raw


def _database_url(env: Mapping[str, str], default: str) -> str:
    url = env.get("CAREPATH_DATABASE_URL", default)
    if not url.startswith(("sqlite:///", "postgresql+psycopg://")):
        raise SettingsError(
            "CAREPATH_DATABASE_URL must be sqlite:///<file> or "
            f"postgresql+psycopg://<user>:<password>@<host>/<database>, not {url.split(':')[0]}:…"
        )
    return url
