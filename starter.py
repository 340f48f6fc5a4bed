"""CarePath's command line, for case managers and operators.

    python starter.py server start|stop|status
    python starter.py enrol FILE.json | --generate [--case-manager CM-01 --site north]
    python starter.py attendance PATIENT SESSION attended|missed|excused --case-manager CM-01
    python starter.py discharge PATIENT --reason withdrew --case-manager CM-01
    python starter.py relapse PATIENT --ratings 1,0,2,2,3,3 --case-manager CM-01
    python starter.py status PATIENT [--json]
    python starter.py export PATIENT --fhir [--out FILE]
    python starter.py list [--phase P] [--case-manager CM] [--site S] [--json]
    python starter.py report [--site S] [--case-manager CM] [--program P]
        [--enrolled-from D --enrolled-to D] [--html FILE] [--png-dir DIR] [--json]
    python starter.py demo [--patients 20]

Every error is one line on stderr naming the problem, with a non-zero exit; a refused
request changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clinical.assessment import Enrolment, SocialNeed
from clinical.identifiers import (
    CaseManagerId,
    PatientId,
    is_referral_workflow_id,
    journey_workflow_id,
    referral_workflow_id,
)
from clinical.journey import (
    AlumniAttendance,
    AttendanceReport,
    CheckInAdjustment,
    DischargeReason,
    DischargeRequest,
    FamilyConsentChange,
    JourneyInput,
    JourneyStatus,
    ProgressReview,
    ReferralRequest,
    RelapseReport,
    TaskDone,
)
from clinical.phases import ACTIVE_PHASES, Phase
from clinical.placement import PlacementRefused, place_enrolment
from clinical.protocol import ProgramCatalog, ProtocolError, describe_validation_error
from clinical.referrals import PartnerAnswer, PartnerReport
from infra.codec import EncryptionCodec, KeyFileError, KeyRing
from infra.codec_server import CodecServer, load_or_create_token
from infra.embedded_server import EmbeddedServer
from infra.history import journey_story
from infra.logging import configure_logging
from infra.settings import Settings, SettingsError, load_settings
from infra.store import SCHEMA_VERSION, CareStore, store_unreachable
from infra.temporal import connect
from operators import report
from workflows import visibility
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

console = Console()
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
# A query or update needs a worker to answer; don't leave a case manager staring at a prompt.
ANSWER_TIMEOUT = timedelta(seconds=15)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def embedded_server(settings: Settings) -> EmbeddedServer:
    # With encryption on, the Web UI asks the codec server (`starter.py codec-server`) to
    # open payloads for an operator.
    extra = ["--ui-codec-endpoint", codec_endpoint(settings)] if settings.encryption else []
    return EmbeddedServer(
        data_dir=settings.data_dir,
        port=settings.server_port,
        ui_port=settings.ui_port,
        extra_args=extra,
    )


def codec_endpoint(settings: Settings) -> str:
    token = load_or_create_token(settings.codec_token_file)
    return f"http://127.0.0.1:{settings.codec_port}/t/{token}"


def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the codec for the Web UI until Ctrl-C."""
    if not settings.encryption:
        raise CliError("encryption is off (CAREPATH_ENCRYPTION=off): nothing to decode")
    try:
        codec = EncryptionCodec(KeyRing.load_or_create(settings.key_file))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    token = load_or_create_token(settings.codec_token_file)
    ui_origin = settings.ui_origin
    try:
        server = CodecServer(codec, token, settings.codec_port, ui_origin, settings.codec_host)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {settings.codec_host}:{settings.codec_port}: {exc.strerror}"
        ) from None
    console.print(f"codec server for {ui_origin} at {server.endpoint} (Ctrl-C stops it)")
    try:
        server.httpd.serve_forever()
    finally:
        server.httpd.server_close()
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Make the payload key file (CAREPATH_KEYS_FILE) if there is none; name its active key
    (never the key itself)."""
    try:
        ring = KeyRing.load_or_create(settings.key_file)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    console.print(f"{settings.key_file}: active key {ring.active} of {len(ring.keys)}")
    return 0


async def client_for(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise CliError(
            f"cannot reach the Temporal server ({reason}); "
            "start the embedded one with `python starter.py server start`",
            EXIT_UNREACHABLE,
        ) from None


def _validated(adapter: Any, value: Any, what: str) -> Any:
    try:
        return TypeAdapter(adapter).validate_python(value)
    except ValidationError as exc:
        raise CliError(f"{what}: {exc.errors()[0]['msg']}") from None


def _handle(client: Client, patient_id: str) -> WorkflowHandle[Any, Any]:
    patient_id = _validated(PatientId, patient_id, "patient")
    return client.get_workflow_handle(journey_workflow_id(patient_id))


async def _journey_call(
    handle: WorkflowHandle[Any, Any], patient_id: str, call: Callable[[], Awaitable[Any]]
) -> Any:
    """Run a request against a journey, turning Temporal's errors into one-line ones."""
    try:
        return await call()
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise CliError(f"refused: {message}", EXIT_REFUSED) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CliError(
            f"no answer within {ANSWER_TIMEOUT.seconds} s; is a CarePath worker running "
            "(`python worker.py`)? The request may still be carried out",
            EXIT_UNREACHABLE,
        ) from None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise CliError(
                f"no CarePath worker answered within {ANSWER_TIMEOUT.seconds} s; "
                "is one running (`python worker.py`)?",
                EXIT_UNREACHABLE,
            ) from None
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise CliError(
                f"the Temporal server refused: {exc.message}", EXIT_UNREACHABLE
            ) from None
    # An update to a finished workflow is "not found" too: tell the two apart.
    try:
        described = await handle.describe()
    except RPCError:
        raise CliError(f"no journey for patient {patient_id}") from None
    status = described.status.name.lower() if described.status else "closed"
    raise CliError(f"the journey of patient {patient_id} has ended ({status})", EXIT_REFUSED)


def _request(model: Any, **fields: Any) -> Any:
    """Build a case manager's request, or a one-line error naming the bad field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None


async def _send_update(
    settings: Settings, patient_id: str, update: Any, request: Any, workflow_id: str | None = None
) -> Any:
    """Deliver a request to the patient's journey (or to another of the patient's workflows,
    such as a referral)."""
    client = await client_for(settings)
    handle = client.get_workflow_handle(workflow_id) if workflow_id else _handle(client, patient_id)
    return await _journey_call(
        handle,
        patient_id,
        lambda: handle.execute_update(update, request, rpc_timeout=ANSWER_TIMEOUT),
    )


# --- commands ----------------------------------------------------------------------------


def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    server = embedded_server(settings)
    if args.action == "start":
        already = server.running()
        pid = server.start()
        state = "already running" if already else "started"
        console.print(f"Temporal server {state} (pid {pid}) at {server.address}")
        console.print(f"Web UI: {server.ui_url}   data: {server.db_file}")
    elif args.action == "stop":
        stopped = server.stop()
        console.print("Temporal server stopped" if stopped else "Temporal server was not running")
    else:
        if server.running():
            console.print(f"running (pid {server.pid()}) at {server.address}, UI {server.ui_url}")
        else:
            console.print("not running")
            return 1
    return 0


def load_enrolment(path: Path) -> Enrolment:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path.name}: not valid JSON ({exc})") from None
    try:
        return Enrolment.model_validate(raw)
    except ValidationError as exc:
        raise CliError(f"{path.name}: {describe_validation_error(exc)}") from None


async def start_journey(
    client: Client, settings: Settings, enrolment: Enrolment
) -> WorkflowHandle[Any, Any]:
    try:
        protocol = ProgramCatalog(settings.programs_dir).load(enrolment.program_id)
    except ProtocolError as exc:
        raise CliError(str(exc)) from None
    try:
        place_enrolment(enrolment, protocol)
    except PlacementRefused as exc:
        raise CliError(str(exc)) from None
    try:
        return await client.start_workflow(
            PatientJourneyWorkflow.run,
            JourneyInput(enrolment=enrolment, protocol=protocol),
            id=journey_workflow_id(enrolment.patient_id),
            task_queue=settings.task_queue,
            # Readmission under the same identifier would share the first admission's
            # idempotency keys in the store (its sessions, phases and tasks would be taken
            # for repeats and dropped): refused until admissions are keyed apart.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        workflow_id = journey_workflow_id(enrolment.patient_id)
        described = await client.get_workflow_handle(workflow_id).describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            raise CliError(
                f"patient {enrolment.patient_id} is already enrolled (journey {workflow_id})",
                EXIT_REFUSED,
            ) from None
        raise CliError(
            f"patient {enrolment.patient_id} was enrolled before and their journey has ended; "
            "readmission under the same identifier is not supported yet: enrol them with a "
            "new patient identifier",
            EXIT_REFUSED,
        ) from None


async def cmd_enrol(args: argparse.Namespace, settings: Settings) -> int:
    if args.generate:
        from demo.cohort import synthetic_enrolment

        try:
            enrolment = synthetic_enrolment(args.case_manager, args.site, args.program)
        except ValidationError as exc:
            raise CliError(describe_validation_error(exc)) from None
    elif args.file:
        enrolment = load_enrolment(Path(args.file))
    else:
        raise CliError("give an enrolment file, or --generate")
    client = await client_for(settings)
    await start_journey(client, settings, enrolment)
    console.print(f"enrolled {enrolment.patient_id} in {enrolment.program_id}")
    return 0


async def cmd_attendance(args: argparse.Namespace, settings: Settings) -> int:
    report = _request(
        AttendanceReport,
        case_manager_id=args.case_manager,
        session_id=args.session,
        status=args.status,
    )
    summary = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.record_attendance, report
    )
    rate = "n/a" if summary.rate is None else f"{summary.rate:.0%}"
    console.print(
        f"{args.patient} {args.session}: {args.status} "
        f"(attended {summary.attended}, missed {summary.missed}, rate {rate})"
    )
    return 0


async def cmd_discharge(args: argparse.Namespace, settings: Settings) -> int:
    request = _request(DischargeRequest, case_manager_id=args.case_manager, reason=args.reason)
    outcome = await _send_update(settings, args.patient, PatientJourneyWorkflow.discharge, request)
    console.print(f"{args.patient}: journey ended, {outcome.outcome.value} ({outcome.reason})")
    return 0


DIMENSIONS = ("withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment")


async def cmd_relapse(args: argparse.Namespace, settings: Settings) -> int:
    values = args.ratings.split(",")
    if len(values) != len(DIMENSIONS) or not all(v.strip().isdigit() for v in values):
        raise CliError(f"--ratings takes six numbers 0-4, in order: {','.join(DIMENSIONS)}")
    report = _request(
        RelapseReport,
        case_manager_id=args.case_manager,
        ratings=dict(zip(DIMENSIONS, (int(v) for v in values), strict=True)),
    )
    message = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.report_relapse, report
    )
    console.print(f"{args.patient}: {message}")
    return 0


async def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    review = _request(
        ProgressReview,
        case_manager_id=args.case_manager,
        decision=args.decision.replace("-", "_"),
        weeks=args.weeks,
        level=args.level,
    )
    message = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.review_progress, review
    )
    console.print(f"{args.patient}: {message}")
    return 0


async def cmd_refer(args: argparse.Namespace, settings: Settings) -> int:
    request = _request(ReferralRequest, case_manager_id=args.case_manager, need=args.need)
    ref = await _send_update(settings, args.patient, PatientJourneyWorkflow.refer, request)
    console.print(f"{args.patient}: {ref.referral_id} started ({ref.workflow_id})")
    return 0


async def cmd_family_consent(args: argparse.Namespace, settings: Settings) -> int:
    change = _request(
        FamilyConsentChange, case_manager_id=args.case_manager, granted=args.action == "give"
    )
    message = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.change_family_consent, change
    )
    console.print(f"{args.patient}: {message}")
    return 0


async def cmd_partner_answer(args: argparse.Namespace, settings: Settings) -> int:
    """What a partner's portal reports; a case manager can enter it for a partner that
    answered by phone."""
    patient_id = _validated(PatientId, args.patient, "patient")
    report = _request(PartnerReport, answer=args.answer, reported_by=args.reported_by)
    status = await _send_update(
        settings,
        patient_id,
        ReferralWorkflow.partner_response,
        report,
        workflow_id=referral_workflow_id(patient_id, args.need),
    )
    outcome = f", {status.outcome}" if status.outcome else ""
    console.print(f"{patient_id} {args.need} referral: {status.stage}{outcome}")
    return 0


async def cmd_check_ins(args: argparse.Namespace, settings: Settings) -> int:
    parts = [d.strip() for d in args.days.split(",")]
    if not all(p.isdigit() for p in parts):
        raise CliError("--days takes aftercare days as whole numbers, e.g. 20,45,90")
    adjustment = _request(
        CheckInAdjustment,
        case_manager_id=args.case_manager,
        days=tuple(int(p) for p in parts),
        reason=args.reason,
    )
    message = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.adjust_check_ins, adjustment
    )
    console.print(f"{args.patient}: {message}")
    return 0


async def cmd_alumni(args: argparse.Namespace, settings: Settings) -> int:
    report = _request(AlumniAttendance, case_manager_id=args.case_manager, meeting_id=args.meeting)
    message = await _send_update(
        settings, args.patient, PatientJourneyWorkflow.report_alumni_attendance, report
    )
    console.print(f"{args.patient}: {message}")
    return 0


async def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    patient_id = _validated(PatientId, args.patient, "patient")
    client = await client_for(settings)
    store = _care_store(settings)
    try:
        story = await journey_story(client, patient_id, store)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no journey for patient {patient_id}") from None
        raise
    finally:
        store.dispose()
    if args.json:
        print(json.dumps([e.as_json() for e in story], indent=2))
        return 0
    table = Table("when", "where", "what", "who", "detail", title=f"{patient_id}: the journey")
    for e in story:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.source, e.what, e.who, e.detail[:80])
    console.print(table)
    return 0


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """The journey as a FHIR R4 Bundle, for another system (the mapping is operators/fhir)."""
    # Imported here: the FHIR models take ~0.3 s to load, which no other command should pay.
    from operators.fhir import ExportError, journey_bundle, journey_record, with_partner_answers

    if not args.fhir:
        raise CliError("export: say which format: --fhir (a FHIR R4 Bundle, the only one)")
    patient_id = _validated(PatientId, args.patient, "patient")
    store = _care_store(settings)
    try:
        record = journey_record(store, ProgramCatalog(settings.programs_dir), patient_id)
        # Only an open referral needs Temporal: whether its partner accepted is in its history.
        if record.awaiting_partners:
            record = await with_partner_answers(record, await client_for(settings))
    except ExportError as exc:
        raise CliError(str(exc)) from None
    except RPCError as exc:
        raise CliError(
            f"cannot read a referral's history: {exc.message}", EXIT_UNREACHABLE
        ) from None
    finally:
        store.dispose()
    bundle = journey_bundle(record, datetime.now(UTC))
    text = bundle.model_dump_json(indent=2)
    if args.out is None:
        print(text)
        return 0
    try:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{args.out}: {exc.strerror}") from None
    console.print(f"{patient_id}: {len(bundle.entry or [])} FHIR resources written to {args.out}")
    return 0


async def fetch_status(client: Client, patient_id: str) -> JourneyStatus:
    handle = _handle(client, patient_id)
    status: JourneyStatus = await _journey_call(
        handle,
        patient_id,
        lambda: handle.query(PatientJourneyWorkflow.status, rpc_timeout=ANSWER_TIMEOUT),
    )
    return status.as_of(datetime.now(UTC))


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = await client_for(settings)
    status = await fetch_status(client, args.patient)
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    render_status(status)
    return 0


def render_status(s: JourneyStatus) -> None:
    rate = "n/a" if s.attendance_rate is None else f"{s.attendance_rate:.0%}"
    due = "-" if s.next_contact_due is None else f"{s.next_contact_due:%Y-%m-%d %H:%M}"
    week = f"week {s.week} of {s.weeks_in_phase}" if s.weeks_in_phase else ""
    console.print(
        f"[bold]{s.patient_id}[/] {s.phase.value} {week}  level {s.level or '-'}  "
        f"risk {s.risk}  case manager {s.case_manager_id}  site {s.site_id}"
    )
    console.print(f"program {s.program_id}, today {s.today:%Y-%m-%d}; {s.plan.placement.explain()}")
    if s.schedule_conflict:
        console.print(f"[red]schedule conflict:[/] {s.schedule_conflict}")
    for r in s.referrals:
        console.print(f"referral {r.referral_id} ({r.need.value}): {r.outcome or 'open'}")
    for t in s.open_tasks:
        since = s.clock.calendar(s.clock.day(t.opened_at))
        console.print(f"[yellow]open task[/] {t.kind} since {since:%Y-%m-%d}: {t.detail}")
    a = s.attendance
    console.print(
        f"attendance {rate}: {a.attended} attended, {a.missed} missed, {a.excused} excused, "
        f"{a.pending} pending, {a.cancelled} cancelled; next contact {due}"
    )
    recent = [x for x in s.sessions if x.day <= s.program_day][-6:]
    upcoming = [x for x in s.sessions if x.day > s.program_day][:6]
    if recent or upcoming:
        table = Table("session", "when", "type", "modality", "status", title="Sessions")
        for x in [*recent, *upcoming]:
            table.add_row(
                x.session_id,
                f"{x.starts_at:%a %Y-%m-%d %H:%M}",
                x.session_type,
                x.modality,
                x.status.value,
            )
        console.print(table)
    if s.follow_ups:
        table = Table("check-in", "due", "outcome", "attempts", "days of use", title="Aftercare")
        for f in s.follow_ups:
            table.add_row(
                f.call_id,
                f"{f.due_at:%Y-%m-%d}",
                f.outcome.value if f.outcome else "due",
                str(f.attempts),
                "-" if f.check_in is None else str(f.check_in.days_of_use),
            )
        console.print(table)


def visibility_query(
    phase: str | None = None,
    case_manager: str | None = None,
    site: str | None = None,
    risk: str | None = None,
    overdue: bool = False,
    enrolled_from: str | None = None,
    enrolled_to: str | None = None,
    active: bool = False,
) -> str:
    """A visibility query over CarePath's search attributes; every value is validated
    first, so nothing a user types reaches the query unchecked."""
    clauses = [
        "WorkflowType = 'PatientJourney'",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if active:
        clauses.append("ExecutionStatus = 'Running'")
    if phase:
        clauses.append(f"{visibility.PHASE.name} = '{_validated(Phase, phase, 'phase').value}'")
    if case_manager:
        cm = _validated(CaseManagerId, case_manager, "case manager")
        clauses.append(f"{visibility.CASE_MANAGER.name} = '{cm}'")
    if site:
        if not site.replace("-", "").isalnum():
            raise CliError(f"site: {site!r} is not a site identifier")
        clauses.append(f"{visibility.SITE.name} = '{site}'")
    if risk:
        if risk not in ("low", "moderate", "high"):
            raise CliError(f"risk: {risk!r} is not one of low, moderate, high")
        clauses.append(f"{visibility.RISK.name} = '{risk}'")
    if overdue:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        clauses.append(f"{visibility.NEXT_CONTACT_DUE.name} < '{now}'")
    for bound, op in ((enrolled_from, ">="), (enrolled_to, "<")):
        if bound:
            day = _validated(date, bound, "enrolled date (YYYY-MM-DD)")
            clauses.append(f"{visibility.ENROLLED_AT.name} {op} '{day.isoformat()}T00:00:00Z'")
    return " AND ".join(clauses)


async def list_journeys(client: Client, query: str) -> list[dict[str, Any]]:
    rows = []
    async for wf in client.list_workflows(query):
        sa = wf.typed_search_attributes
        due = sa.get(visibility.NEXT_CONTACT_DUE)
        rate = sa.get(visibility.ATTENDANCE_RATE)
        rows.append(
            {
                "patient_id": wf.id.removeprefix("journey-"),
                "phase": sa.get(visibility.PHASE),
                "case_manager_id": sa.get(visibility.CASE_MANAGER),
                "site_id": sa.get(visibility.SITE),
                "risk": sa.get(visibility.RISK),
                "attendance_rate": rate,
                "next_contact_due": due.isoformat() if due else None,
                "running": wf.status == WorkflowExecutionStatus.RUNNING,
            }
        )
    rows.sort(key=lambda r: (r["next_contact_due"] or "9999", r["patient_id"]))
    return rows


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    query = visibility_query(
        args.phase,
        args.case_manager,
        args.site,
        risk=args.risk,
        overdue=args.overdue,
        enrolled_from=args.enrolled_from,
        enrolled_to=args.enrolled_to,
        active=args.active,
    )
    client = await client_for(settings)
    rows = await list_journeys(client, query)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(
        "patient",
        "phase",
        "case manager",
        "site",
        "risk",
        "attendance",
        "next contact due",
        title=f"{len(rows)} journeys",
    )
    for r in rows:
        rate = "-" if r["attendance_rate"] is None else f"{r['attendance_rate']:.0%}"
        table.add_row(
            r["patient_id"],
            r["phase"] or "-",
            r["case_manager_id"] or "-",
            r["site_id"] or "-",
            r["risk"] or "-",
            rate,
            (r["next_contact_due"] or "-")[:16],
        )
    console.print(table)
    return 0


def _care_store(settings: Settings) -> CareStore:
    """The store, for reading: the command line never creates or migrates one (a mistyped
    URL would otherwise answer with an empty caseload); workers do."""
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CliError(f"no care-operations store at {url.removeprefix('sqlite:///')} yet")
    store = CareStore(url)
    version = store.schema_version()  # a database that does not answer: main() says so
    if version != SCHEMA_VERSION:
        store.dispose()
        found = "no CarePath schema" if version == 0 else f"schema version {version}"
        raise CliError(
            f"the care-operations store holds {found}, not version {SCHEMA_VERSION}: "
            "is this the database the workers use (a worker creates and upgrades it)?"
        )
    return store


def _task_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("id", "patient_id", "case_manager_id", "kind", "status", "detail", "workflow_id")
    return [
        {
            **{k: r[k] for k in keep},
            "opened_at": r["created_at"].isoformat(),
            "due_at": r["due_at"].isoformat() if r["due_at"] else None,
            "completed_by": r["completed_by"],
        }
        for r in rows
    ]


def _task_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table("task", "patient", "kind", "opened", "due", "status", "detail", title=title)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["patient_id"],
            r["kind"],
            r["opened_at"][:16].replace("T", " "),
            (r["due_at"] or "-")[:16].replace("T", " "),
            r["status"] if r["status"] == "open" else f"done by {r['completed_by']}",
            r["detail"],
        )
    return table


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    cm = _validated(CaseManagerId, args.case_manager, "case manager") if args.case_manager else None
    patient = _validated(PatientId, args.patient, "patient") if args.patient else None
    store = _care_store(settings)
    rows = _task_rows(store.task_list(cm, patient, include_done=args.all))
    store.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(_task_table(rows, f"{len(rows)} {'tasks' if args.all else 'open tasks'}"))
    return 0


async def cmd_done(args: argparse.Namespace, settings: Settings) -> int:
    """Mark a task done: the update goes to the workflow that opened it, which decides what
    done means (a consent task records the consent and sends the referral)."""
    store = _care_store(settings)
    row = next((r for r in store.task_list(include_done=True) if r["id"] == args.task), None)
    store.dispose()
    if row is None:
        raise CliError(f"no task {args.task}")
    if row["status"] != "open":
        raise CliError(f"task {args.task} is already done (by {row['completed_by']})", EXIT_REFUSED)
    request = _request(TaskDone, case_manager_id=args.case_manager, task_key=row["idempotency_key"])
    workflow_id = row["workflow_id"] or journey_workflow_id(row["patient_id"])
    update: Any = (
        ReferralWorkflow.complete_task
        if is_referral_workflow_id(workflow_id)
        else PatientJourneyWorkflow.complete_task
    )
    message = await _send_update(
        settings, row["patient_id"], update, request, workflow_id=workflow_id
    )
    console.print(f"task {args.task} ({row['patient_id']}): {message}")
    return 0


async def cmd_caseload(args: argparse.Namespace, settings: Settings) -> int:
    """A case manager's active patients (from search attributes) with their open tasks (from
    the store)."""
    cm = _validated(CaseManagerId, args.case_manager, "case manager")
    client = await client_for(settings)
    active = {p.value for p in ACTIVE_PHASES}
    patients = [
        r
        for r in await list_journeys(client, visibility_query(case_manager=cm))
        if r["running"] and r["phase"] in active
    ]
    store = _care_store(settings)
    open_tasks = _task_rows(store.task_list(cm))
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
        rate = "-" if p["attendance_rate"] is None else f"{p['attendance_rate']:.0%}"
        table.add_row(
            p["patient_id"],
            p["phase"],
            p["risk"] or "-",
            rate,
            (p["next_contact_due"] or "-")[:16],
            str(p["open_tasks"]),
        )
    console.print(table)
    console.print(_task_table(open_tasks, f"{len(open_tasks)} open tasks"))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """The outcomes report of a cohort, read from the care-operations store (no Temporal)."""
    try:
        cohort = report.cohort_filter(
            args.site, args.case_manager, args.program, args.enrolled_from, args.enrolled_to
        )
        report.check_outputs(args.html, args.png_dir)
    except report.ReportError as exc:
        raise CliError(str(exc)) from None
    store = _care_store(settings)
    try:
        outcomes = report.cohort_report(
            store, ProgramCatalog(settings.programs_dir), cohort, datetime.now(UTC)
        )
    finally:
        store.dispose()
    if outcomes.enrolled == 0:
        print(f"no patients match ({cohort.describe()}): nothing to report", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(report.as_json(outcomes), indent=2))
    else:
        console.print(*report.terminal_tables(outcomes))
    if args.html or args.png_dir:
        from operators import report_html

        # On stderr: stdout may be the JSON.
        if args.html:
            report_html.write_html(outcomes, args.html)
            print(f"wrote {args.html}", file=sys.stderr)
        if args.png_dir:
            for path in report_html.write_pngs(outcomes, args.png_dir):
                print(f"wrote {path}", file=sys.stderr)
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from demo.run import run_demo

    return await run_demo(
        settings,
        embedded_server(settings),
        patients=args.patients,
        program_id=args.program,
        seed=args.seed,
    )


# --- wiring ------------------------------------------------------------------------------


class _OneLineErrors(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem (and exit code 2), like every other
    bad input; `--help` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(prog="starter.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("server", help="start, stop or check the embedded Temporal server")
    s.add_argument("action", choices=["start", "stop", "status"])

    e = sub.add_parser("enrol", help="enrol a patient from a JSON file (or a generated one)")
    e.add_argument("file", nargs="?")
    e.add_argument("--generate", action="store_true", help="enrol a synthetic patient")
    e.add_argument("--case-manager", default="CM-01")
    e.add_argument("--site", default="north")
    e.add_argument("--program", default="default-iop")

    a = sub.add_parser("attendance", help="record a session's attendance")
    a.add_argument("patient")
    a.add_argument("session")
    a.add_argument("status", choices=["attended", "missed", "excused"])
    a.add_argument("--case-manager", required=True)

    d = sub.add_parser("discharge", help="end a patient's journey, with a reason")
    d.add_argument("patient")
    d.add_argument("--reason", required=True, choices=[r.value for r in DischargeReason])
    d.add_argument("--case-manager", required=True)

    r = sub.add_parser("relapse", help="report a relapse with the reassessment's ratings")
    r.add_argument("patient")
    r.add_argument("--ratings", required=True, help=f"six numbers 0-4: {','.join(DIMENSIONS)}")
    r.add_argument("--case-manager", required=True)

    rv = sub.add_parser("review", help="a progress review of the intensive phase")
    rv.add_argument("patient")
    rv.add_argument("decision", choices=["extend", "shorten", "approve-step-down", "change-level"])
    rv.add_argument("--weeks", type=int, help="for extend and shorten")
    rv.add_argument("--level", help="for change-level: a level of the program")
    rv.add_argument("--case-manager", required=True)

    rf = sub.add_parser("refer", help="refer a patient to a partner service for a need")
    rf.add_argument("patient")
    rf.add_argument("--need", required=True, choices=[n.value for n in SocialNeed])
    rf.add_argument("--case-manager", required=True)

    fc = sub.add_parser("family-consent", help="the patient gives or withdraws family consent")
    fc.add_argument("patient")
    fc.add_argument("action", choices=["give", "withdraw"])
    fc.add_argument("--case-manager", required=True)

    pa = sub.add_parser("partner-answer", help="a partner service's answer to a referral")
    pa.add_argument("patient")
    pa.add_argument("need", choices=[n.value for n in SocialNeed])
    pa.add_argument("answer", choices=[a.value for a in PartnerAnswer])
    pa.add_argument("--reported-by", required=True, help="the partner, or the case manager")

    ck = sub.add_parser("check-ins", help="reschedule the aftercare check-ins ahead")
    ck.add_argument("patient")
    ck.add_argument("--days", required=True, help="aftercare days, e.g. 20,45,90")
    ck.add_argument("--reason", required=True, choices=["patient_request", "clinical"])
    ck.add_argument("--case-manager", required=True)

    al = sub.add_parser("alumni", help="a patient went to an alumni or peer-support meeting")
    al.add_argument("patient")
    al.add_argument("meeting", help="the meeting's ID from the invitation, e.g. ALUMNI-E1-D016")
    al.add_argument("--case-manager", required=True)

    sub.add_parser("codec-server", help="let the Web UI open sealed payloads (operators)")
    sub.add_parser("keys", help="make the payload key file if there is none (operators)")

    hs = sub.add_parser("history", help="a patient's whole journey as a timeline (operators)")
    hs.add_argument("patient")
    hs.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="a patient's journey for another system (operators)")
    ex.add_argument("patient")
    ex.add_argument("--fhir", action="store_true", help="as a FHIR R4 Bundle (JSON)")
    ex.add_argument("--out", help="write to this file (default: standard output)")

    st = sub.add_parser("status", help="show a patient's journey")
    st.add_argument("patient")
    st.add_argument("--json", action="store_true")

    for name, text in (
        ("list", "list journeys (all filters optional)"),
        ("find", "find patients by phase, case manager, site, risk, overdue contact, enrolment"),
    ):
        ls = sub.add_parser(name, help=text)
        ls.add_argument("--phase", choices=[ph.value for ph in Phase])
        ls.add_argument("--case-manager")
        ls.add_argument("--site")
        ls.add_argument("--risk", choices=["low", "moderate", "high"])
        ls.add_argument("--overdue", action="store_true", help="next contact is past due")
        ls.add_argument("--enrolled-from", help="YYYY-MM-DD")
        ls.add_argument("--enrolled-to", help="YYYY-MM-DD (exclusive)")
        ls.add_argument("--active", action="store_true", help="running journeys only")
        ls.add_argument("--json", action="store_true")

    t = sub.add_parser("tasks", help="the case managers' inbox: open tasks")
    t.add_argument("--case-manager")
    t.add_argument("--patient")
    t.add_argument("--all", action="store_true", help="done tasks too")
    t.add_argument("--json", action="store_true")

    dn = sub.add_parser("done", help="mark a task done (delivered to its workflow)")
    dn.add_argument("task", type=int)
    dn.add_argument("--case-manager", required=True)

    cl = sub.add_parser("caseload", help="a case manager's active patients and open tasks")
    cl.add_argument("case_manager")
    cl.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="outcomes of a cohort or site (tables, HTML, charts)")
    rp.add_argument("--site", help="patients of this site, e.g. north")
    rp.add_argument("--case-manager", help="patients of this case manager, e.g. CM-01")
    rp.add_argument("--program", help="patients of this program, e.g. default-iop")
    rp.add_argument("--enrolled-from", help="enrolled on or after YYYY-MM-DD")
    rp.add_argument("--enrolled-to", help="enrolled before YYYY-MM-DD (exclusive)")
    rp.add_argument("--html", type=Path, metavar="FILE", help="write the report as HTML")
    rp.add_argument("--png-dir", type=Path, metavar="DIR", help="write each chart as a PNG")
    rp.add_argument("--json", action="store_true")

    dm = sub.add_parser("demo", help="run a synthetic cohort through the whole journey")
    dm.add_argument("--patients", type=int, default=20)
    dm.add_argument("--program", default="demo-iop")
    dm.add_argument("--seed", type=int, default=7)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Any]] = {
    "server": cmd_server,
    "enrol": cmd_enrol,
    "attendance": cmd_attendance,
    "discharge": cmd_discharge,
    "relapse": cmd_relapse,
    "review": cmd_review,
    "refer": cmd_refer,
    "family-consent": cmd_family_consent,
    "partner-answer": cmd_partner_answer,
    "check-ins": cmd_check_ins,
    "alumni": cmd_alumni,
    "codec-server": cmd_codec_server,
    "keys": cmd_keys,
    "history": cmd_history,
    "export": cmd_export,
    "status": cmd_status,
    "list": cmd_list,
    "find": cmd_list,
    "tasks": cmd_tasks,
    "done": cmd_done,
    "caseload": cmd_caseload,
    "report": cmd_report,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, "warning" if args.command != "demo" else "error")
    try:
        result = COMMANDS[args.command](args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except OperationalError as exc:
        print(f"error: {store_unreachable(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    code = main()
    # The SDK's Rust client threads can race CPython's interpreter teardown in short-lived
    # processes and abort it (temporalio/sdk-python issue #300). Our work is done and
    # flushed: skip the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
