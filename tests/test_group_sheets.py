"""The facilitator's sign-in sheet: one session of a group track, marked and submitted
through the one path to the journeys (services.journeys): accepted per patient, the same
sheet again unchanged, refusals per patient with the journey's reason; in the console
(the case manager's role, the track's site only) and on the command line."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from cli.main import main as cli_main
from clinical.group_sheets import GroupSheet, session_stamp
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from clinical.status import JourneyStatus
from services.group_sheets import submit
from tests.console_support import Clock, csrf_of, make_console
from tests.support import PROGRAMS, Clinic, clinic, make_enrolment, settle
from web.api_security import API
from workflows.patient_journey import PatientJourneyWorkflow

PROGRAM, TRACK = "default-iop", "north-morning"
STRANGER = "P-0000000A"


async def _two_in_the_morning_group(env: WorkflowEnvironment, c: Clinic) -> tuple[Any, Any]:
    """Two patients seated in the morning track, the clock past their first session."""
    handles = []
    for _ in range(2):
        handles.append(await c.enrol(make_enrolment()))
        await settle(env.client, handles[-1].id)
    # Up to two weeks: intake over, the first week may begin on the next track day after
    # a full week (a start just past Monday's session waits for the Monday after).
    for _ in range(112):
        status: JourneyStatus = await handles[0].query(PatientJourneyWorkflow.status)
        status = status.as_of(await env.get_current_time())
        if status.phase == Phase.intensive and any(
            s.track_id and s.day + 0.2 < status.program_day for s in status.sessions
        ):
            return handles[0], handles[1]
        await env.sleep(timedelta(hours=3))
        for h in handles:
            await settle(env.client, h.id)
    raise AssertionError("the first group session never came")


def _sheet(starts_at: Any, by: str | None = "CM-01", **marks: str) -> GroupSheet:
    return GroupSheet.model_validate(
        {
            "program_id": PROGRAM,
            "track_id": TRACK,
            "starts_at": starts_at,
            "marks": [{"patient_id": p, "status": s} for p, s in marks.items()],
            "submitted_by": by,
        }
    )


@pytest.mark.slow
async def test_a_sheet_is_accepted_once_and_refused_per_patient_with_reasons(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            one, two = await _two_in_the_morning_group(env, c)
            now = await env.get_current_time()
            starts = c.store.group_sessions(PROGRAM, TRACK, now - timedelta(days=7), now)
            first, later = (
                starts[0],
                c.store.group_sessions(PROGRAM, TRACK, now, now + timedelta(days=7))[0],
            )
            catalog = ProgramCatalog(PROGRAMS)
            p1, p2 = one.id.removeprefix("journey-"), two.id.removeprefix("journey-")
            roster = c.store.group_session_roster(PROGRAM, TRACK, first)
            assert {r.patient_id for r in roster} == {p1, p2}

            sheet = _sheet(first, **{p1: "attended", p2: "missed", STRANGER: "attended"})
            lines = await submit(c.client, c.settings.task_queue, c.store, catalog, sheet)
            assert [(x.patient_id, x.outcome) for x in lines] == [
                (p1, "accepted"),
                (p2, "accepted"),
                (STRANGER, "refused"),
            ]
            assert lines[2].reason == "not booked into this session"
            status = await one.query(PatientJourneyWorkflow.status)
            marked = next(s for s in status.sessions if s.starts_at == first)
            assert (marked.status.value, marked.recorded_by) == ("attended", "CM-01")

            # The same sheet again changes nothing.
            again = await submit(c.client, c.settings.task_queue, c.store, catalog, sheet)
            assert [x.outcome for x in again] == ["unchanged", "unchanged", "refused"]
            assert await one.query(PatientJourneyWorkflow.status) == status

            # A session still ahead: the journey refuses, and says why.
            ahead = _sheet(later, **{p1: "attended"})
            (refused,) = await submit(c.client, c.settings.task_queue, c.store, catalog, ahead)
            assert refused.outcome == "refused" and "has not happened yet" in refused.reason

            # The console: the case manager at the track's site marks the sheet.
            # The console's clock is the clinic's (the server's), for its recent sessions.
            ui = make_console(c.settings, c.store, c.client, Clock(now))
            path = f"/groups/{PROGRAM}/{TRACK}/{session_stamp(first)}"
            async with ui.signed_in("cm1") as http:
                listing = await http.get("/groups")
                assert listing.status_code == 200 and path in listing.text
                page = await http.get(path)
                assert page.status_code == 200 and "Avery Q." in page.text
                posted = await http.post(
                    path,
                    data={"csrf": csrf_of(http), f"mark:{p1}": "attended", f"mark:{p2}": "excused"},
                )
                assert posted.status_code == 200
                assert "attended, unchanged" in posted.text and "excused, accepted" in posted.text
            # The track's facilitator (staff ID CM-F01 in its facilitator_ids) marks the sheet
            # under their own ID, and sees no patient's chart, caseload or inbox.
            async with ui.signed_in("fac") as http:
                home = await http.get("/")
                assert home.headers["location"] == "/groups"
                listing = await http.get("/groups")
                assert path in listing.text and "north-evening" not in listing.text
                assert "Avery Q." in (await http.get(path)).text
                posted = await http.post(
                    path, data={"csrf": csrf_of(http), f"mark:{p2}": "attended"}
                )
                assert posted.status_code == 200 and "attended, accepted" in posted.text
                for page_path in (f"/patients/{p1}", "/caseload", "/inbox", "/enrol"):
                    assert (await http.get(page_path)).status_code == 403, page_path
            status2 = await two.query(PatientJourneyWorkflow.status)
            mark2 = next(s for s in status2.sessions if s.starts_at == first)
            assert (mark2.status.value, mark2.recorded_by) == ("attended", "CM-F01")
            # A facilitator of another track at the same site: that sheet is not theirs.
            async with ui.signed_in("fac-evening") as http:
                assert path not in (await http.get("/groups")).text
                assert (await http.get(path)).status_code == 404
                refused_post = await http.post(
                    path, data={"csrf": csrf_of(http), f"mark:{p1}": "missed"}
                )
                assert refused_post.status_code == 404
            async with ui.signed_in("sup-south") as http:
                assert (await http.get(path)).status_code == 404
                refused_post = await http.post(
                    path, data={"csrf": csrf_of(http), f"mark:{p1}": "missed"}
                )
                assert refused_post.status_code == 404
            async with ui.signed_in("ops") as http:
                assert (await http.get(path)).status_code == 403
            async with ui.signed_in("cm1") as http:
                unknown = await http.get(f"/groups/{PROGRAM}/no-such-track/{session_stamp(first)}")
                assert unknown.status_code == 404
            # The API: an EHR at the site reads the roster (IDs, no names) and sends the
            # sheet again: nothing changes; the marks go under each patient's case manager.
            _, token = ui.console.clients.add(
                "ehr", "patients:read,attendance:write", "north", ui.clock()
            )
            auth = {"Authorization": f"Bearer {token}"}
            async with ui.signed_in(None) as http:
                got = await http.get(f"{API}{path}", headers=auth)
                assert got.status_code == 200 and "Avery" not in got.text
                assert {r["patient_id"] for r in got.json()} == {p1, p2}
                sent = await http.post(
                    f"{API}{path}/sheet",
                    json={"marks": [{"patient_id": p1, "status": "attended"}]},
                    headers=auth,
                )
                assert sent.status_code == 200
                assert [x["outcome"] for x in sent.json()["result"]] == ["unchanged"]
            status2 = await two.query(PatientJourneyWorkflow.status)
            mark2 = next(s for s in status2.sessions if s.starts_at == first)
            assert (mark2.status.value, mark2.recorded_by) == ("attended", "CM-F01")

            # A correction back to a mark the journey held before (missed, excused,
            # attended, then missed again) is recorded, not taken for a repeat.
            back = _sheet(first, **{p2: "missed"})
            (line,) = await submit(c.client, c.settings.task_queue, c.store, catalog, back)
            assert line.outcome == "accepted"
            status2 = await two.query(PatientJourneyWorkflow.status)
            mark2 = next(s for s in status2.sessions if s.starts_at == first)
            assert (mark2.status.value, mark2.recorded_by) == ("missed", "CM-01")

            # One submission sent twice at once (a second click): its mark is recorded once.
            once = _sheet(first, **{p1: "excused"}).model_copy(update={"submission": "form-1"})
            await asyncio.gather(
                *(submit(c.client, c.settings.task_queue, c.store, catalog, once) for _ in "ab")
            )
            history = await one.fetch_history()
            accepted = [
                e.workflow_execution_update_accepted_event_attributes.accepted_request.meta
                for e in history.events
                if e.HasField("workflow_execution_update_accepted_event_attributes")
            ]
            assert sum(1 for m in accepted if "/form-1/" in m.update_id) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["group-sheet", "no-such-track"], "has no group track 'no-such-track'"),
        (["group-sheet", TRACK, "--session", "monday"], "is not a session start like"),
        (["group-sheet", TRACK, "--mark", f"{STRANGER}=attended"], "--mark needs the --session"),
        (
            ["group-sheet", TRACK, "--session", "20270301T1400Z", "--mark", "nobody=attended"],
            "patient_id",
        ),
        (
            ["group-sheet", TRACK, "--session", "20270301T1400Z", "--mark", f"{STRANGER}=late"],
            "status",
        ),
    ],
)
def test_the_command_line_refuses_a_bad_sheet_in_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAREPATH_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAREPATH_PROGRAMS_DIR", str(PROGRAMS))
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
