"""What every API call pays for, kept small without losing a guarantee: the idempotency
key's answer commits with the call's access-log entry (both or neither), and the "is a
worker there" check remembers a worker seen for a few seconds but never a missing one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from infra.store import CareStore
from infra.store.access_log import AccessLog
from infra.store.api_clients import Answered, ApiClients, Claimed
from services import journeys

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _store(tmp_path: Path) -> CareStore:
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    return store


def test_a_keys_answer_and_its_access_entry_commit_together(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        clients, log = ApiClients(store.engine), AccessLog(store.engine)
        assert clients.claim("api:ehr", "sheet-1", "f1", NOW) == Claimed()
        log.append(NOW, "api:ehr", "api client", "POST x", "P-7K2M9Q4D")
        answer = clients.answering("api:ehr", "sheet-1", 200, '{"message": "ok"}')
        log.append(NOW, "api:ehr", "api client", "POST y", "P-7K2M9Q4D", along=answer)
        assert clients.claim("api:ehr", "sheet-1", "f1", NOW) == Answered(200, '{"message": "ok"}')
        assert [e.action for e in log.search()] == ["POST y", "POST x"]

        # A write that fails takes the entry with it: neither lands, the chain holds.
        assert clients.claim("api:ehr", "sheet-2", "f2", NOW) == Claimed()

        def broken(conn: Any) -> None:
            clients.answering("api:ehr", "sheet-2", 200, "{}")(conn)
            raise RuntimeError("the process died here")

        with pytest.raises(RuntimeError):
            log.append(NOW, "api:ehr", "api client", "POST z", along=broken)
        assert clients.claim("api:ehr", "sheet-2", "f2", NOW) == Claimed()
        assert [e.seq for e in log.search()] == [2, 1]
        log.append(NOW, "api:ehr", "api client", "POST z")
        assert log.verify().intact and log.verify().entries == 3
    finally:
        store.dispose()


class _Server:
    """A workflow service whose task queue has these pollers; counts the questions."""

    def __init__(self, polled: bool) -> None:
        self.asked = 0
        self.polled = polled

    async def describe_task_queue(self, request: Any, timeout: Any = None) -> Any:
        self.asked += 1
        seen = Timestamp()
        seen.FromDatetime(datetime.now(UTC))
        pollers = [SimpleNamespace(last_access_time=seen)] if self.polled else []
        return SimpleNamespace(pollers=pollers)


class _Client:
    def __init__(self, server: _Server) -> None:
        self.namespace = "default"
        self.workflow_service = server


async def test_a_worker_seen_is_remembered_for_seconds_and_a_missing_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(journeys, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    up, down = _Server(polled=True), _Server(polled=False)
    there, absent = _Client(up), _Client(down)
    for _ in range(3):
        assert await journeys.worker_running(there, "q")  # type: ignore[arg-type]
        assert not await journeys.worker_running(absent, "q")  # type: ignore[arg-type]
    assert (up.asked, down.asked) == (1, 3)
    assert await journeys.worker_running(there, "another queue")  # type: ignore[arg-type]
    assert up.asked == 2
    clock[0] += journeys.WORKER_ASKED_AFTER
    assert await journeys.worker_running(there, "q")  # type: ignore[arg-type]
    assert up.asked == 3


async def test_a_worker_seen_lately_is_asked_about_beside_the_request_and_forgotten_if_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between WORKER_SEEN_FOR and WORKER_ASKED_AFTER a request does not wait for the
    question: it goes on, and one question at a time runs beside it; a worker gone by
    then is forgotten, so the next request asks (and is refused) itself."""
    clock = [1000.0]
    monkeypatch.setattr(journeys, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    server = _Server(polled=True)
    there = _Client(server)
    assert await journeys.worker_running(there, "q")  # type: ignore[arg-type]
    clock[0] += journeys.WORKER_SEEN_FOR
    server.polled = False  # the worker stops
    answers = [await journeys.worker_running(there, "q") for _ in range(3)]  # type: ignore[arg-type]
    assert answers == [True, True, True] and server.asked == 1  # none waited, none asked yet
    await asyncio.sleep(0)  # the question beside them runs
    assert server.asked == 2  # one question for the three
    assert not await journeys.worker_running(there, "q")  # type: ignore[arg-type]
    assert server.asked == 3


def test_the_console_keeps_what_it_built_out_of_the_collector_s_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served, the console has frozen what it built (gc.freeze): a full collection would
    otherwise scan it in the middle of some request."""
    import dataclasses
    import gc

    from infra.settings import load_settings
    from tests.support import OPEN_SITES
    from web import serve as serving

    settings = dataclasses.replace(
        load_settings(), database_url=f"sqlite:///{tmp_path / 'care.db'}", sites_path=OPEN_SITES
    )
    store = CareStore(settings.database_url)
    store.migrate()
    before = gc.get_freeze_count()
    frozen: list[int] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **_: frozen.append(gc.get_freeze_count()))
    try:
        serving.serve(settings, store)
    finally:
        gc.unfreeze()
        store.dispose()
    assert frozen and frozen[0] > before + 10_000
