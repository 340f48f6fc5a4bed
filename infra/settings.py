"""Settings from the environment (CAREPATH_*), with defaults for the embedded setup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
    )
