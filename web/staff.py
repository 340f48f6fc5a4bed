"""Pages for those who see no patient's PHI: the operator's view of the engine (counts,
health, links to workflows, group tracks' capacity, counsellors' load) and the auditor's
access log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from clinical.counsellors import CounsellorLoad, load_view, weeks_at
from clinical.groups import TrackCapacity, capacity_view, facilitator_hours
from clinical.protocol import ProgramCatalog
from infra.store.accounts import Role
from web.context import Console, console_of, page
from web.security import Visitor, allow


def _day(text: str) -> datetime | None:
    try:
        return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(), UTC)
    except ValueError:
        return None


def _tracks(console: Console) -> list[tuple[str, list[TrackCapacity], dict[str, float]]]:
    """Each program's group tracks in view, with its facilitators' hours a week. A file that
    is no program (the sites file shares the directory) has no tracks to show."""
    shown = []
    for program in ProgramCatalog.of(console.settings.programs_dir).programs():
        program_id, tracks = program.program.id, program.groups.tracks
        if tracks:
            view = capacity_view(tracks, console.store.track_loads(program_id), console.now())
            shown.append((program_id, view, facilitator_hours(tracks)))
    return shown


def _counsellors(console: Console) -> list[tuple[str, list[CounsellorLoad]]]:
    """Each program's counsellors with their sessions this week and next."""
    shown = []
    for program in ProgramCatalog.of(console.settings.programs_dir).programs():
        program_id, counsellors = program.program.id, program.counselling.counsellors
        if counsellors:
            weeks = {c.site: weeks_at(console.now(), console.zone_of(c.site)) for c in counsellors}
            mondays = sorted({w for pair in weeks.values() for w in pair})
            view = load_view(counsellors, console.store.counsellor_loads(mondays), weeks)
            shown.append((program_id, view))
    return shown


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    """Adds these pages' routes to the app (flat: the route-enumeration test walks them)."""
    seen = Depends(signed_in)

    @r.get("/operations", response_class=HTMLResponse)
    @allow(Role.operator)
    async def operations(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        engine = await console.engine() is not None
        census = console.store.census()
        console.record(request, visitor.user, "view operations")
        return page(
            request,
            "operations.html",
            visitor=visitor,
            engine=engine,
            census=census,
            programs=_tracks(console),
            counselling=_counsellors(console),
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
