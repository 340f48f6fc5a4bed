"""Fixtures shared by the tests that run journeys on the time-skipping server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.support import start_time_skipping


@pytest_asyncio.fixture(loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    # A fresh time-skipping server per test (~0.1 s): a journey one test leaves behind
    # must not hold the next test's clock.
    environment = await start_time_skipping()
    yield environment
    await environment.shutdown()
