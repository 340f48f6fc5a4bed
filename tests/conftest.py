"""Fixtures shared by the tests: the time-skipping server, and the care-operations store on
each database CarePath supports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.clinic_time import SEED, SEED_VARIABLE, START
from tests.postgres import NOT_INSTALLED, PostgresServer, running_postgres
from tests.support import start_time_skipping

# Tests read no file outside the repository: not the caller's CAREPATH_* or TEMPORAL_*
# settings, nor a Temporal config file in their home directory (an empty one of ours, for
# this process and every worker and starter.py a test starts).
for name in [n for n in os.environ if n.startswith(("CAREPATH_", "TEMPORAL_"))]:
    if name != SEED_VARIABLE:
        del os.environ[name]
os.environ["TEMPORAL_CONFIG_FILE"] = str(Path(__file__).parent / "temporal-no-profiles.toml")


def pytest_report_header() -> str:
    return (
        f"journeys start on {START.describe()} America/New_York (seed {SEED}; "
        f"{SEED_VARIABLE}={SEED} reproduces this run)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also under -q (which hides the header): the seed is what reproduces a failing run.
    terminalreporter.write_line(
        f"journeys started on {START.describe()} America/New_York (seed {SEED}); "
        f"{SEED_VARIABLE}={SEED} repeats this run's start"
    )


@pytest_asyncio.fixture(loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    # A fresh time-skipping server per test (~0.1 s): a journey one test leaves behind
    # must not hold the next test's clock.
    environment = await start_time_skipping()
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    """One PostgreSQL server for the whole run, started on first use."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty care-operations database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'care.db'}"
    server: PostgresServer | None = request.getfixturevalue("postgres")
    if server is None:
        pytest.skip(NOT_INSTALLED)
    return server.new_database()
