"""Settings from the environment (CAREPATH_*), with defaults for the embedded setup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A CAREPATH_* variable holds a value CarePath cannot use."""


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

    @property
    def key_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def codec_token_file(self) -> Path:
        return self.data_dir / "codec-token"

    @property
    def embedded_address(self) -> str:
        return f"127.0.0.1:{self.server_port}"


def load_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("CAREPATH_DATA_DIR", PROJECT_ROOT / "data")).resolve()
    return Settings(
        data_dir=data_dir,
        programs_dir=Path(env.get("CAREPATH_PROGRAMS_DIR", PROJECT_ROOT / "programs")).resolve(),
        database_url=env.get("CAREPATH_DATABASE_URL", f"sqlite:///{data_dir / 'carepath.db'}"),
        task_queue=env.get("CAREPATH_TASK_QUEUE", "carepath"),
        log_format=env.get("CAREPATH_LOG_FORMAT", "console"),
        log_level=env.get("CAREPATH_LOG_LEVEL", "info"),
        max_cached_workflows=int(env.get("CAREPATH_MAX_CACHED_WORKFLOWS", "1000")),
        server_port=int(env.get("CAREPATH_SERVER_PORT", "7233")),
        ui_port=int(env.get("CAREPATH_UI_PORT", "8233")),
        simulated_use_risk=_probability(env, "CAREPATH_SIMULATED_USE_RISK", 0.02),
        encryption=_switch(env, "CAREPATH_ENCRYPTION", True),
        codec_port=int(env.get("CAREPATH_CODEC_PORT", "8234")),
        keys_file=Path(env["CAREPATH_KEYS_FILE"]).resolve()
        if "CAREPATH_KEYS_FILE" in env
        else None,
    )


def _switch(env: os._Environ[str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.lower() in ("on", "true", "1", "yes"):
        return True
    if raw.lower() in ("off", "false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, not {raw!r}")


def _probability(env: os._Environ[str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be a probability between 0 and 1, not {raw!r}")
    return value
