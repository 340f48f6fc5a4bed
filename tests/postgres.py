"""A throwaway PostgreSQL server for the test run: Debian's `postgresql` binaries, a data
directory in a temporary folder, a free loopback port, started once per session (~1 s) and
stopped at its end, also when tests fail. Each test gets a database of its own.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (or
`nobody`) through `runuser`, in a data directory that user owns."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.embedded_server import free_port

_DEBIAN_BIN = Path("/usr/lib/postgresql")
NOT_INSTALLED = (
    "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
    "`apt-get install postgresql` (.ci/run does so as root) to run the store tests on it"
)


def server_binaries() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's newest."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(
        (p for p in _DEBIAN_BIN.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    return versions[-1] if versions else None


@dataclass
class PostgresServer:
    port: int
    admin_url: str  # the superuser's database, for creating each test's own

    def new_database(self) -> str:
        """An empty database of its own; returns its SQLAlchemy URL."""
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://carepath@127.0.0.1:{self.port}/{name}"


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root, and the uid/gid to own the data directory."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], user.pw_uid, user.pw_gid
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


@contextmanager
def running_postgres() -> Iterator[PostgresServer | None]:
    """The server, or None where PostgreSQL is not installed."""
    binaries = server_binaries()
    if binaries is None:
        yield None
        return
    prefix, uid, gid = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="carepath-pg-"))
    data, log = base / "data", base / "server.log"
    if uid is not None and gid is not None:
        os.chown(base, uid, gid)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60, cwd=base)

    started = False
    try:
        run(
            str(binaries / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            "carepath",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        # A test server: loopback only, its socket in its own folder, no durability.
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        run(str(binaries / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(log), "-o", options)
        started = True
        yield PostgresServer(
            port=port, admin_url=f"postgresql://carepath@127.0.0.1:{port}/postgres"
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        tail = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        raise RuntimeError(
            f"PostgreSQL did not start: {(detail or tail or ['no output'])[-1]}"
        ) from None
    finally:
        if started or (data / "postmaster.pid").exists():
            _stop(prefix, binaries, data)
        shutil.rmtree(base, ignore_errors=True)


def _stop(prefix: list[str], binaries: Path, data: Path) -> None:
    pid_file = data / "postmaster.pid"
    try:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
            capture_output=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pass
    if pid_file.exists():  # pg_ctl could not stop it: the postmaster by its own PID
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
