"""/api/v1's group sessions: one session's roster (patient IDs, sessions and what the store
last heard: no names) and its sign-in sheet, each mark accepted or refused by the patient's
journey and recorded under the patient's case manager. A track at another site than the
client's looks like none (404)."""

from __future__ import annotations

import json
from hashlib import sha256
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import Field, ValidationError

from clinical.group_sheets import GroupMark, GroupSheet, parse_stamp
from clinical.protocol import GroupTrack, ProgramCatalog, describe_validation_error
from services.group_sheets import SheetRefused, roster, submit, track_of
from services.journeys import RequestFailed
from web.api import STATUS_FOR, Answer, _Body, answered, once
from web.api_security import API, Caller, Problem, caller, grant
from web.context import Console, console_of


class GroupSheetBody(_Body):
    marks: list[GroupMark] = Field(min_length=1, max_length=50)


def _session(
    console: Console, found: Caller, program_id: str, track_id: str, stamp: str
) -> tuple[GroupTrack, Any]:
    try:
        track = track_of(ProgramCatalog.of(console.settings.programs_dir), program_id, track_id)
        starts_at = parse_stamp(stamp)
    except (SheetRefused, ValueError) as exc:
        raise Problem(404, str(exc)) from None
    if track.site != found.client.site_id:
        raise Problem(
            404,
            f"program {program_id} has no group track {track_id!r} at site {found.client.site_id}",
        )
    return track, starts_at


def install(app: FastAPI) -> None:
    seen = Depends(caller)

    @app.get(f"{API}/groups/{{program_id}}/{{track_id}}/{{stamp}}", tags=["groups"])
    @grant("patients:read")
    async def api_group_roster(
        request: Request, program_id: str, track_id: str, stamp: str, found: Caller = seen
    ) -> Response:
        """One group session's roster: who is booked (patient IDs), their session and its
        status as last recorded. `stamp` is the session's start in UTC, 20270301T1400Z."""
        console = console_of(request)
        track, starts_at = _session(console, found, program_id, track_id, stamp)
        catalog = ProgramCatalog.of(console.settings.programs_dir)
        try:
            lines = roster(console.store, catalog, program_id, track.id, starts_at).lines
        except SheetRefused as exc:
            raise Problem(404, str(exc)) from None
        body = [
            {"patient_id": r.patient_id, "session_id": r.session_id, "status": r.status}
            for r in lines
        ]
        return answered(request, 200, json.dumps(body))

    @app.post(f"{API}/groups/{{program_id}}/{{track_id}}/{{stamp}}/sheet", tags=["groups"])
    @grant("attendance:write")
    async def api_group_sheet(
        request: Request,
        program_id: str,
        track_id: str,
        stamp: str,
        sheet: GroupSheetBody,
        found: Caller = seen,
    ) -> Response:
        """A group session's sign-in sheet: each patient's mark to their journey, accepted,
        unchanged (the same sheet again changes nothing) or refused with its reason."""
        console = console_of(request)
        track, starts_at = _session(console, found, program_id, track_id, stamp)
        try:
            built = GroupSheet(
                program_id=program_id,
                track_id=track.id,
                starts_at=starts_at,
                marks=tuple(sheet.marks),
            )
        except ValidationError as exc:
            raise Problem(422, describe_validation_error(exc)) from None

        async def act(update_id: str | None) -> tuple[int, Any]:
            catalog = ProgramCatalog.of(console.settings.programs_dir)
            # A call retried with its Idempotency-Key is the same submission.
            submission = None if update_id is None else sha256(update_id.encode()).hexdigest()
            try:
                client = await console.connect()
                lines = await submit(
                    client,
                    console.settings.task_queue,
                    console.store,
                    catalog,
                    built.model_copy(update={"submission": submission}),
                )
            except SheetRefused as exc:
                raise Problem(404, str(exc)) from None
            except RequestFailed as exc:
                raise Problem(STATUS_FOR[exc.why], str(exc)) from None
            accepted = sum(1 for line in lines if line.outcome != "refused")
            return 200, Answer(
                message=f"{accepted} of {len(lines)} marks recorded or already held",
                result=[line.model_dump(mode="json") for line in lines],
            )

        return await once(request, found, act)
