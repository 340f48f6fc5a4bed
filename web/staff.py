"""Pages for those who see no patient's PHI: the operator's view of the engine (counts,
health, links to workflows) and the auditor's access log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from infra.store.accounts import Role
from services.journeys import RequestFailed, worker_running
from web.context import console_of, page
from web.security import Visitor, allow


def _day(text: str) -> datetime | None:
    try:
        return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(), UTC)
    except ValueError:
        return None


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    """Adds these pages' routes to the app (flat: the route-enumeration test walks them)."""
    seen = Depends(signed_in)

    @r.get("/operations", response_class=HTMLResponse)
    @allow(Role.operator)
    async def operations(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        try:
            engine = await worker_running(await console.connect(), console.settings.task_queue)
        except RequestFailed:
            engine = False
        census = console.store.census()
        console.record(request, visitor.user, "view operations")
        return page(
            request,
            "operations.html",
            visitor=visitor,
            engine=engine,
            census=census,
            ui_url=console.settings.ui_url,
        )

    @r.get("/access-log", response_class=HTMLResponse)
    @allow(Role.auditor)
    async def access_log(
        request: Request,
        actor: str = "",
        patient: str = "",
        since: str = "",
        until: str = "",
        visitor: Visitor = seen,
    ) -> Response:
        console = console_of(request)
        start, end = _day(since), _day(until)
        entries = console.access.search(
            actor=actor[:48] or None,
            patient_id=patient[:16] or None,
            since=start,
            until=end + timedelta(days=1) if end else None,
        )
        check = console.access.verify()
        console.record(request, visitor.user, "view access log")
        return page(
            request,
            "access_log.html",
            visitor=visitor,
            entries=entries,
            check=check,
            actor=actor,
            patient=patient,
            since=since,
            until=until,
        )
