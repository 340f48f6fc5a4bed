"""What case managers record on a journey (attendance, discharge, relapse, reviews,
referrals, consent, check-ins, alumni meetings) and their inbox: tasks, done, caseload."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, get_args

from rich.table import Table

from cli.common import (
    EXIT_REFUSED,
    CliError,
    answer_update,
    care_store,
    client_for,
    console,
    make_request,
    send_update,
    site_zones,
    validated,
)
from cli.operators import list_journeys, visibility_query
from clinical.assessment import DIMENSIONS, parse_commitment
from clinical.identifiers import (
    CaseManagerId,
    PatientId,
    referral_workflow_id,
)
from clinical.phases import ACTIVE_PHASES
from clinical.referrals import PartnerReport, ReferralCancel
from clinical.requests import (
    AlumniAttendance,
    AttendanceReport,
    AttendanceSheet,
    AttendanceStatus,
    CheckInAdjustment,
    CommitmentsRevision,
    DischargeRequest,
    FamilyConsentChange,
    ProgressReview,
    ReferralRequest,
    RelapseReport,
    TaskDone,
)
from infra.settings import Settings
from infra.store import InboxTask
from operators.outcomes import percent
from services.journeys import task_completion
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

ATTENDANCE_STATUSES: tuple[str, ...] = get_args(AttendanceStatus)


async def cmd_attendance(args: argparse.Namespace, settings: Settings) -> int:
    """One session (SESSION STATUS), or a sheet of several (SESSION STATUS SESSION STATUS
    ...) in one request that is recorded whole or refused whole."""
    words: list[str] = args.marks
    if len(words) % 2:
        raise CliError(f"attendance: {words[-1]!r} has no status (give SESSION STATUS pairs)")
    pairs = list(zip(words[::2], words[1::2], strict=True))
    for _, status in pairs:
        if status not in ATTENDANCE_STATUSES:
            raise CliError(
                f"attendance: {status!r} is not a status ({', '.join(ATTENDANCE_STATUSES)})"
            )
    if len(pairs) == 1:
        ((session, status),) = pairs
        report = make_request(
            AttendanceReport, case_manager_id=args.case_manager, session_id=session, status=status
        )
        summary = await send_update(
            settings, args.patient, PatientJourneyWorkflow.record_attendance, report
        )
        what = f"{session}: {status}"
    else:
        sheet = make_request(
            AttendanceSheet,
            case_manager_id=args.case_manager,
            marks=[{"session_id": session, "status": status} for session, status in pairs],
        )
        summary = await send_update(
            settings, args.patient, PatientJourneyWorkflow.record_attendance_sheet, sheet
        )
        what = f"{len(pairs)} sessions recorded"
    rate = "n/a" if summary.rate is None else f"{summary.rate:.0%}"
    console.print(
        f"{args.patient} {what} (attended {summary.attended}, missed {summary.missed}, rate {rate})"
    )
    return 0


async def cmd_discharge(args: argparse.Namespace, settings: Settings) -> int:
    request = make_request(DischargeRequest, case_manager_id=args.case_manager, reason=args.reason)
    outcome = await send_update(settings, args.patient, PatientJourneyWorkflow.discharge, request)
    console.print(f"{args.patient}: journey ended, {outcome.outcome.value} ({outcome.reason})")
    return 0


def _small_number(text: str) -> bool:
    """0-9999 in ASCII digits: `str.isdigit` also takes '²' and other scripts' digits, and
    `int` refuses thousands of digits, each with a traceback."""
    return 1 <= len(text) <= 4 and text.isascii() and text.isdigit()


async def cmd_relapse(args: argparse.Namespace, settings: Settings) -> int:
    values = [v.strip() for v in args.ratings.split(",")]
    if len(values) != len(DIMENSIONS) or not all(_small_number(v) for v in values):
        raise CliError(f"--ratings takes six numbers 0-4, in order: {','.join(DIMENSIONS)}")
    report = make_request(
        RelapseReport,
        case_manager_id=args.case_manager,
        ratings=dict(zip(DIMENSIONS, (int(v) for v in values), strict=True)),
    )
    return await answer_update(
        settings, args.patient, PatientJourneyWorkflow.report_relapse, report
    )


async def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    review = make_request(
        ProgressReview,
        case_manager_id=args.case_manager,
        decision=args.decision.replace("-", "_"),
        weeks=args.weeks,
        level=args.level,
    )
    return await answer_update(
        settings, args.patient, PatientJourneyWorkflow.review_progress, review
    )


async def cmd_refer(args: argparse.Namespace, settings: Settings) -> int:
    request = make_request(ReferralRequest, case_manager_id=args.case_manager, need=args.need)
    ref = await send_update(settings, args.patient, PatientJourneyWorkflow.refer, request)
    console.print(f"{args.patient}: {ref.referral_id} started ({ref.workflow_id})")
    return 0


async def cmd_cancel_referral(args: argparse.Namespace, settings: Settings) -> int:
    """End a referral that is no longer wanted (its loop closes as cancelled)."""
    request = make_request(ReferralCancel, case_manager_id=args.case_manager, reason=args.reason)
    return await _to_referral(settings, args, ReferralWorkflow.cancel, request)


async def _to_referral(
    settings: Settings, args: argparse.Namespace, update: Any, request: Any
) -> int:
    """Send a request to the patient's referral loop for a need; print where it stands."""
    patient_id = validated(PatientId, args.patient, "patient")
    status = await send_update(
        settings,
        patient_id,
        update,
        request,
        workflow_id=referral_workflow_id(patient_id, args.need),
    )
    outcome = f", {status.outcome}" if status.outcome else ""
    console.print(f"{patient_id} {args.need} referral: {status.stage}{outcome}")
    return 0


def _commitment(text: str) -> dict[str, str]:
    try:
        return parse_commitment(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def cmd_commitments(args: argparse.Namespace, settings: Settings) -> int:
    """Revise the times the patient cannot attend: what closes a schedule conflict."""
    if not args.commitment and not args.none:
        raise CliError("commitments: give each one with --commitment, or --none for none")
    if args.commitment and args.none:
        raise CliError("commitments: --none and --commitment together say two things")
    revision = make_request(
        CommitmentsRevision,
        case_manager_id=args.case_manager,
        commitments=[_commitment(c) for c in args.commitment or ()],
    )
    conflict = await send_update(
        settings, args.patient, PatientJourneyWorkflow.revise_commitments, revision
    )
    if conflict is None:
        console.print(f"{args.patient}: commitments revised; the schedule fits")
        return 0
    console.print(f"{args.patient}: commitments revised; still no schedule fits: {conflict}")
    return EXIT_REFUSED


async def cmd_family_consent(args: argparse.Namespace, settings: Settings) -> int:
    change = make_request(
        FamilyConsentChange, case_manager_id=args.case_manager, granted=args.action == "give"
    )
    return await answer_update(
        settings, args.patient, PatientJourneyWorkflow.change_family_consent, change
    )


async def cmd_partner_answer(args: argparse.Namespace, settings: Settings) -> int:
    """What a partner's portal reports; a case manager can enter it for a partner that
    answered by phone."""
    report = make_request(PartnerReport, answer=args.answer, reported_by=args.reported_by)
    return await _to_referral(settings, args, ReferralWorkflow.partner_response, report)


async def cmd_check_ins(args: argparse.Namespace, settings: Settings) -> int:
    parts = [d.strip() for d in args.days.split(",")]
    if not all(_small_number(p) for p in parts):
        raise CliError("--days takes aftercare days as whole numbers, e.g. 20,45,90")
    adjustment = make_request(
        CheckInAdjustment,
        case_manager_id=args.case_manager,
        days=tuple(int(p) for p in parts),
        reason=args.reason,
    )
    return await answer_update(
        settings, args.patient, PatientJourneyWorkflow.adjust_check_ins, adjustment
    )


async def cmd_alumni(args: argparse.Namespace, settings: Settings) -> int:
    report = make_request(
        AlumniAttendance, case_manager_id=args.case_manager, meeting_id=args.meeting
    )
    return await answer_update(
        settings, args.patient, PatientJourneyWorkflow.report_alumni_attendance, report
    )


def _task_rows(tasks: list[InboxTask], zone_of: Callable[[str], tzinfo]) -> list[dict[str, Any]]:
    """Tasks as people read them: opened and due at the patient's site's local time."""
    return [
        {
            "id": t.id,
            "patient_id": t.patient_id,
            "case_manager_id": t.case_manager_id,
            "kind": t.kind,
            "status": t.status,
            "detail": t.detail,
            "workflow_id": t.workflow_id,
            "opened_at": t.created_at.astimezone(zone_of(t.patient_id)).isoformat(),
            "due_at": (
                t.due_at.astimezone(zone_of(t.patient_id)).isoformat() if t.due_at else None
            ),
            "completed_by": t.completed_by,
        }
        for t in tasks
    ]


def _task_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table("task", "patient", "kind", "opened", "due", "status", "detail", title=title)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["patient_id"],
            r["kind"],
            _local(r["opened_at"]),
            _local(r["due_at"]),
            r["status"] if r["status"] == "open" else f"done by {r['completed_by']}",
            r["detail"],
        )
    return table


def _local(iso: str | None) -> str:
    """`2027-01-14 18:00 -0500` from an ISO time with its offset."""
    return "-" if iso is None else f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M %z}"


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    cm = validated(CaseManagerId, args.case_manager, "case manager") if args.case_manager else None
    patient = validated(PatientId, args.patient, "patient") if args.patient else None
    store = care_store(settings)
    rows = _task_rows(
        store.tasks(case_manager_id=cm, patient_id=patient, include_done=args.all),
        site_zones(settings, store),
    )
    store.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(_task_table(rows, f"{len(rows)} {'tasks' if args.all else 'open tasks'}"))
    return 0


async def cmd_done(args: argparse.Namespace, settings: Settings) -> int:
    """Mark a task done: the update goes to the workflow that opened it, which decides what
    done means (a consent task records the consent and sends the referral)."""
    store = care_store(settings)
    task = store.task(args.task)
    store.dispose()
    if task is None:
        raise CliError(f"no task {args.task}")
    if not task.open:
        raise CliError(f"task {args.task} is already done (by {task.completed_by})", EXIT_REFUSED)
    request = make_request(TaskDone, case_manager_id=args.case_manager, task_key=task.key)
    update, workflow_id = task_completion(task)
    message = await send_update(settings, task.patient_id, update, request, workflow_id=workflow_id)
    console.print(f"task {args.task} ({task.patient_id}): {message}")
    return 0


async def cmd_caseload(args: argparse.Namespace, settings: Settings) -> int:
    """A case manager's active patients (from search attributes) with their open tasks (from
    the store)."""
    cm = validated(CaseManagerId, args.case_manager, "case manager")
    client = await client_for(settings)
    active = {p.value for p in ACTIVE_PHASES}
    patients = [
        r
        for r in await list_journeys(client, visibility_query(case_manager=cm))
        if r["running"] and r["phase"] in active
    ]
    store = care_store(settings)
    open_tasks = _task_rows(store.tasks(case_manager_id=cm), site_zones(settings, store))
    store.dispose()
    per_patient = Counter(t["patient_id"] for t in open_tasks)
    for p in patients:
        p["open_tasks"] = per_patient.get(p["patient_id"], 0)
    if args.json:
        print(json.dumps({"patients": patients, "open_tasks": open_tasks}, indent=2))
        return 0
    table = Table(
        "patient",
        "phase",
        "risk",
        "attendance",
        "next contact due",
        "open tasks",
        title=f"{cm}: {len(patients)} active patients",
    )
    for p in patients:
        table.add_row(
            p["patient_id"],
            p["phase"],
            p["risk"] or "-",
            percent(p["attendance_rate"]),
            (p["next_contact_due"] or "-")[:16],
            str(p["open_tasks"]),
        )
    console.print(table)
    console.print(_task_table(open_tasks, f"{len(open_tasks)} open tasks"))
    return 0
