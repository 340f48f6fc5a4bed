"""What a case manager can record from a chart: each form's fields become the same request
the command line sends (the clinical request models and their validation), delivered to
the same update. A bad field is one line, and nothing is sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from clinical.assessment import DIMENSIONS, parse_commitment
from clinical.identifiers import referral_workflow_id
from clinical.protocol import describe_validation_error
from clinical.referrals import PartnerReport, ReferralCancel
from clinical.requests import (
    AlumniAttendance,
    AttendanceSheet,
    CheckInAdjustment,
    CommitmentsRevision,
    DischargeRequest,
    FamilyConsentChange,
    ProgressReview,
    Reassignment,
    ReferralRequest,
    RelapseReport,
)
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

Form = dict[str, str]
Built = tuple[Any, BaseModel, str | None]  # the update, its request, the workflow (None: journey)


class ActionRefused(ValueError):
    """A form that does not make a valid request: one line, nothing sent."""


def _request(model: type[BaseModel], **fields: Any) -> BaseModel:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ActionRefused(describe_validation_error(exc)) from None


def _number(form: Form, name: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not (len(text) <= 4 and text.isascii() and text.isdigit()):
        raise ActionRefused(f"{name}: {text[:20]!r} is not a whole number")
    return int(text)


def _sheet(pid: str, cm: str, form: Form) -> Built:
    marks = [
        {"session_id": key.removeprefix("session:"), "status": value}
        for key, value in form.items()
        if key.startswith("session:") and value
    ]
    if not marks:
        raise ActionRefused("the sheet marks no session")
    sheet = _request(AttendanceSheet, case_manager_id=cm, marks=marks)
    return PatientJourneyWorkflow.record_attendance_sheet, sheet, None


def _discharge(pid: str, cm: str, form: Form) -> Built:
    request = _request(DischargeRequest, case_manager_id=cm, reason=form.get("reason", ""))
    return PatientJourneyWorkflow.discharge, request, None


def _relapse(pid: str, cm: str, form: Form) -> Built:
    ratings = {d: _number(form, d) for d in DIMENSIONS}
    missing = [d for d, v in ratings.items() if v is None]
    if missing:
        raise ActionRefused(f"rate every dimension 0-4 (missing: {', '.join(missing)})")
    report = _request(RelapseReport, case_manager_id=cm, ratings=ratings)
    return PatientJourneyWorkflow.report_relapse, report, None


def _review(pid: str, cm: str, form: Form) -> Built:
    review = _request(
        ProgressReview,
        case_manager_id=cm,
        decision=form.get("decision", ""),
        weeks=_number(form, "weeks"),
        level=form.get("level") or None,
    )
    return PatientJourneyWorkflow.review_progress, review, None


def _refer(pid: str, cm: str, form: Form) -> Built:
    request = _request(ReferralRequest, case_manager_id=cm, need=form.get("need", ""))
    return PatientJourneyWorkflow.refer, request, None


def _need(form: Form) -> str:
    need = form.get("need", "")
    if need not in ("medical", "housing", "parenting", "employment", "legal"):
        raise ActionRefused(f"need: {need[:20]!r} is not a referral's need")
    return need


def _cancel_referral(pid: str, cm: str, form: Form) -> Built:
    need = _need(form)
    cancel = _request(ReferralCancel, case_manager_id=cm, reason=form.get("reason", ""))
    return ReferralWorkflow.cancel, cancel, referral_workflow_id(pid, need)


def _partner_answer(pid: str, cm: str, form: Form) -> Built:
    need = _need(form)
    report = _request(PartnerReport, answer=form.get("answer", ""), reported_by=cm)
    return ReferralWorkflow.partner_response, report, referral_workflow_id(pid, need)


def _family_consent(pid: str, cm: str, form: Form) -> Built:
    granted = form.get("granted", "")
    if granted not in ("give", "withdraw"):
        raise ActionRefused("family consent: give or withdraw")
    change = _request(FamilyConsentChange, case_manager_id=cm, granted=granted == "give")
    return PatientJourneyWorkflow.change_family_consent, change, None


def _check_ins(pid: str, cm: str, form: Form) -> Built:
    parts = [p.strip() for p in form.get("days", "").split(",") if p.strip()]
    days = tuple(_number({"days": p}, "days") for p in parts)
    adjustment = _request(
        CheckInAdjustment, case_manager_id=cm, days=days, reason=form.get("reason", "")
    )
    return PatientJourneyWorkflow.adjust_check_ins, adjustment, None


def _alumni(pid: str, cm: str, form: Form) -> Built:
    report = _request(AlumniAttendance, case_manager_id=cm, meeting_id=form.get("meeting", ""))
    return PatientJourneyWorkflow.report_alumni_attendance, report, None


def _commitments(pid: str, cm: str, form: Form) -> Built:
    lines = [line for line in form.get("commitments", "").splitlines() if line.strip()]
    try:
        commitments = [parse_commitment(line) for line in lines]
    except ValueError as exc:
        raise ActionRefused(str(exc)) from None
    revision = _request(CommitmentsRevision, case_manager_id=cm, commitments=commitments)
    return PatientJourneyWorkflow.revise_commitments, revision, None


def _reassign(pid: str, cm: str, form: Form) -> Built:
    change = _request(
        Reassignment, case_manager_id=cm, to_case_manager_id=form.get("to", "").strip()
    )
    return PatientJourneyWorkflow.reassign_case_manager, change, None


def _summary(answer: Any) -> str:
    rate = "n/a" if answer.rate is None else f"{answer.rate:.0%}"
    return f"recorded (attended {answer.attended}, missed {answer.missed}, rate {rate})"


def _said(answer: Any) -> str:
    return str(answer)


def _stage(answer: Any) -> str:
    outcome = f", {answer.outcome}" if answer.outcome else ""
    return f"referral: {answer.stage}{outcome}"


@dataclass(frozen=True)
class Action:
    title: str
    build: Callable[[str, str, Form], Built]
    describe: Callable[[Any], str] = _said


ACTIONS: dict[str, Action] = {
    "attendance": Action("attendance sheet", _sheet, _summary),
    "discharge": Action(
        "discharge", _discharge, lambda o: f"journey ended: {o.outcome.value} ({o.reason})"
    ),
    "relapse": Action("relapse report", _relapse),
    "review": Action("progress review", _review),
    "refer": Action("referral", _refer, lambda ref: f"{ref.referral_id} started"),
    "cancel-referral": Action("cancel referral", _cancel_referral, _stage),
    "partner-answer": Action("partner's answer", _partner_answer, _stage),
    "family-consent": Action("family consent", _family_consent),
    "check-ins": Action("check-in schedule", _check_ins),
    "alumni": Action("alumni attendance", _alumni),
    "reassign": Action("reassignment", _reassign),
    "commitments": Action(
        "commitments",
        _commitments,
        lambda c: (
            "commitments revised; the schedule fits"
            if c is None
            else f"commitments revised; still no schedule fits: {c}"
        ),
    ),
}

SUPERVISOR_ACTIONS = frozenset({"review", "reassign"})
"""What a clinical supervisor records (approving step-down is a review); the rest is the
case manager's."""
