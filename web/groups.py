"""The facilitator's sign-in sheet in the console: the group tracks at the user's site with
their recent sessions, one session's roster (patients by the name the facilitator calls
them: staff eyes only), and its marks submitted, each accepted or refused by the patient's
journey. A track at another site looks like none (404). A facilitator sees only the tracks
that name their staff ID in the program's `facilitator_ids` (at their site): a clinic's
facilitator leads particular groups, not the whole site's."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from clinical.group_sheets import GroupSheet, parse_stamp, session_stamp
from clinical.protocol import GroupTrack, ProgramCatalog, describe_validation_error
from infra.store.accounts import Role, User
from services.group_sheets import SheetRefused, recent_sessions, roster, submit, track_of
from services.journeys import RequestFailed
from web.context import Console, console_of, page
from web.patients import STATUS_FOR
from web.security import NotFound, Visitor, allow


def _may_mark(user: User, track: GroupTrack) -> bool:
    """Whether this user's site runs the track and, for a facilitator, they lead it."""
    if user.site_id not in (None, track.site):
        return False
    return user.role is not Role.facilitator or user.case_manager_id in track.facilitator_ids


def _tracks_at(console: Console, user: User) -> list[tuple[str, GroupTrack, list[datetime]]]:
    shown = []
    for program in ProgramCatalog.of(console.settings.programs_dir).programs():
        program_id = program.program.id
        for t in program.groups.tracks:
            if _may_mark(user, t):
                shown.append(
                    (program_id, t, recent_sessions(console.store, program_id, t, console.now()))
                )
    return shown


def _session(
    console: Console, user: User, program_id: str, track_id: str, stamp: str
) -> tuple[GroupTrack, datetime]:
    """The track and session start the address names, if the user's site runs it."""
    try:
        track = track_of(ProgramCatalog.of(console.settings.programs_dir), program_id, track_id)
        starts_at = parse_stamp(stamp)
    except (SheetRefused, ValueError):
        raise NotFound() from None
    if not _may_mark(user, track):
        raise NotFound()
    return track, starts_at


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    """Adds these pages' routes to the app (flat: the route-enumeration test walks them)."""
    seen = Depends(signed_in)

    @r.get("/groups", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, Role.facilitator)
    async def group_tracks(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        console.record(request, visitor.user, "view group tracks")
        return page(
            request,
            "groups.html",
            visitor=visitor,
            tracks=_tracks_at(console, visitor.user),
            stamp=session_stamp,
        )

    async def show(
        request: Request,
        visitor: Visitor,
        program_id: str,
        track_id: str,
        stamp: str,
        lines: list[object] | None = None,
        message: str = "",
        status_code: int = 200,
    ) -> Response:
        console = console_of(request)
        track, starts_at = _session(console, visitor.user, program_id, track_id, stamp)
        catalog = ProgramCatalog.of(console.settings.programs_dir)
        try:
            found = roster(console.store, catalog, program_id, track.id, starts_at)
        except SheetRefused:
            raise NotFound() from None
        for line in found.lines:
            console.record(request, visitor.user, "view group sheet", line.patient_id)
        return page(
            request,
            "group_sheet.html",
            status_code,
            visitor=visitor,
            program_id=program_id,
            roster=found,
            stamp=stamp,
            local=starts_at.astimezone(console.zone_of(track.site)),
            lines=lines,
            message=message,
            # Each rendering of the form is one submission: sent twice (a second click),
            # its marks are recorded once; a correction comes from a new rendering.
            submission=secrets.token_urlsafe(16),
        )

    @r.get("/groups/{program_id}/{track_id}/{stamp}", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, Role.facilitator)
    async def group_sheet(
        request: Request, program_id: str, track_id: str, stamp: str, visitor: Visitor = seen
    ) -> Response:
        return await show(request, visitor, program_id, track_id, stamp)

    @r.post("/groups/{program_id}/{track_id}/{stamp}", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, Role.facilitator)
    async def submit_group_sheet(
        request: Request, program_id: str, track_id: str, stamp: str, visitor: Visitor = seen
    ) -> Response:
        """The sheet's marks, each to its patient's journey; the actor is the signed-in
        user, never a form field."""
        console = console_of(request)
        track, starts_at = _session(console, visitor.user, program_id, track_id, stamp)
        form = {k: v for k, v in (await request.form()).multi_items() if isinstance(v, str)}
        marks = [
            {"patient_id": key.removeprefix("mark:"), "status": value}
            for key, value in form.items()
            if key.startswith("mark:") and value
        ]
        if visitor.user.case_manager_id is None:
            message = "your account has no staff ID to record this under"
            return await show(request, visitor, program_id, track_id, stamp, None, message, 409)
        try:
            sheet = GroupSheet(
                program_id=program_id,
                track_id=track.id,
                starts_at=starts_at,
                marks=marks,
                submitted_by=visitor.user.case_manager_id,
                submission=form.get("submission") or None,
            )
        except ValidationError as exc:
            message = describe_validation_error(exc)
            return await show(request, visitor, program_id, track_id, stamp, None, message, 422)
        try:
            client = await console.connect()
            catalog = ProgramCatalog.of(console.settings.programs_dir)
            lines = await submit(client, console.settings.task_queue, console.store, catalog, sheet)
        except RequestFailed as exc:
            status = STATUS_FOR[exc.why]
            return await show(request, visitor, program_id, track_id, stamp, None, str(exc), status)
        for line in lines:
            outcome = "allowed" if line.outcome != "refused" else "refused"
            console.record(request, visitor.user, "group sheet", line.patient_id, outcome=outcome)
        return await show(request, visitor, program_id, track_id, stamp, list(lines))
