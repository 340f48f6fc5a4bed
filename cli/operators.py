"""What operators and clinical leads read: a journey's status, history and FHIR export,
journeys found by their search attributes, and the outcomes report."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from cli.common import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    CliError,
    care_store,
    client_for,
    console,
    failed,
    site_zone_names,
    site_zones,
    validated,
)
from clinical.consents import NO_CONSENT_NEEDED, NOT_NAMED, recipient_kind
from clinical.disclosures import accounting_since
from clinical.identifiers import CaseManagerId, PatientId, SiteId
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from clinical.status import JourneyStatus
from infra import visibility
from infra.settings import Settings
from infra.store import CareStore
from operators import report
from operators.history import journey_story
from operators.outcomes import percent
from operators.snapshot import stored_snapshot
from services.journeys import ENGINE_DOWN, RequestFailed, query_status, worker_running


async def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    patient_id = validated(PatientId, args.patient, "patient")
    client = await client_for(settings)
    store = care_store(settings)
    try:
        story = await journey_story(client, patient_id, store)
        zone = site_zones(settings, store)(patient_id)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no journey for patient {patient_id}") from None
        raise
    finally:
        store.dispose()
    # Read at the patient's site: local times with their offset.
    story = [replace(e, at=e.at.astimezone(zone)) for e in story]
    if args.json:
        print(json.dumps([e.as_json() for e in story], indent=2))
        return 0
    table = Table("when", "where", "what", "who", "detail", title=f"{patient_id}: the journey")
    for e in story:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S %z}", e.source, e.what, e.who, e.detail[:80])
    console.print(table)
    return 0


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """The journey as a FHIR R4 Bundle, for another system (the mapping is operators/fhir)."""
    # Imported here: the FHIR models take ~0.3 s to load, which no other command should pay.
    from operators.fhir import ExportError, journey_bundle, journey_record, with_partner_answers

    if not args.fhir:
        raise CliError("export: say which format: --fhir (a FHIR R4 Bundle, the only one)")
    patient_id = validated(PatientId, args.patient, "patient")
    store = care_store(settings)
    try:
        record = journey_record(
            store,
            ProgramCatalog.of(settings.programs_dir),
            patient_id,
            site_zone_names(settings, store)(patient_id),
        )
        _consented(store, patient_id, args.recipient, args.purpose)
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
    now = datetime.now(UTC)
    bundle = journey_bundle(record, now)
    text = bundle.model_dump_json(indent=2)
    if args.out is None:
        print(text)
    else:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{args.out}: {exc.strerror}") from None
    # Out of CarePath's hands now: a disclosure, on the patient's accounting.
    store = care_store(settings)
    try:
        store.record_export(
            patient_id=patient_id,
            by=f"cli:{getpass.getuser()}",
            recipient=args.recipient,
            purpose=args.purpose,
            description=f"the journey as a FHIR R4 Bundle of {len(bundle.entry or [])} resources "
            "(no name, birth date or contact details)",
            at=now,
        )
    finally:
        store.dispose()
    if args.out is not None:
        console.print(
            f"{patient_id}: {len(bundle.entry or [])} FHIR resources written to {args.out}"
        )
    return 0


def _consented(store: CareStore, patient_id: str, recipient: str, purpose: str) -> None:
    """An export to a recipient is made only under the patient's consent to it, for that
    purpose (§2.31); the patient's own copy and an audit (§2.53) need none."""
    if purpose in NO_CONSENT_NEEDED:
        return
    if recipient == NOT_NAMED or not recipient_kind(recipient).removeprefix("recipient:"):
        raise CliError(
            f"export for {purpose}: name the --recipient (the patient's consent must cover "
            f"it), or --purpose {' or '.join(NO_CONSENT_NEEDED)}"
        )
    why_not = store.why_not_consented(
        patient_id, recipient_kind(recipient), purpose, datetime.now(UTC)
    )
    if why_not is not None:
        raise CliError(
            f"refused: no consent of {patient_id}'s covers disclosure to {recipient[:60]} "
            f"for {purpose} ({why_not}); record it with `starter.py consents`",
            EXIT_REFUSED,
        )


def cmd_disclosures(args: argparse.Namespace, settings: Settings) -> int:
    """The patient's accounting of disclosures: the past three years."""
    patient_id = validated(PatientId, args.patient, "patient")
    store = care_store(settings)
    try:
        if store.patient(patient_id) is None:
            raise CliError(f"no patient {patient_id} in the care-operations store")
        found = store.disclosures(patient_id, accounting_since(datetime.now(UTC)))
        zone_of = site_zones(settings, store)
    finally:
        store.dispose()
    if args.json:
        print(json.dumps([d.as_json() for d in found], indent=2))
        return 0
    if not found:
        console.print(f"{patient_id}: no disclosures in the past three years")
        return 0
    table = Table("when", "to", "purpose", "what", "by", title=f"{patient_id}: disclosures")
    for d in found:
        at = d.at.astimezone(zone_of(patient_id))
        table.add_row(f"{at:%Y-%m-%d %H:%M %z}", d.recipient, d.purpose, d.description, d.by)
    console.print(table)
    return 0


async def fetch_status(client: Client, patient_id: str) -> JourneyStatus:
    try:
        return await query_status(client, patient_id)
    except RequestFailed as exc:
        raise failed(exc) from None


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    patient_id = validated(PatientId, args.patient, "patient")
    client = await client_for(settings)
    if not await worker_running(client, settings.task_queue):
        return _status_from_store(settings, patient_id, args.json)
    status = await fetch_status(client, patient_id)
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    render_status(status)
    return 0


def _status_from_store(settings: Settings, patient_id: str, as_json: bool) -> int:
    """No worker to answer the journey's query: what the store knows, how fresh, and exit 4
    (the engine is down, which scripts must see)."""
    store = care_store(settings)
    try:
        snapshot = stored_snapshot(store, patient_id, site_zones(settings, store)(patient_id))
    finally:
        store.dispose()
    down = ENGINE_DOWN.format(queue=settings.task_queue)
    if snapshot is None:
        raise CliError(f"{down}; the store has no patient {patient_id}", EXIT_UNREACHABLE)
    if as_json:
        print(snapshot.model_dump_json(indent=2))
    else:
        s = snapshot
        console.print(
            f"[bold]{s.patient_id}[/] {s.phase}  level {s.level or '-'}  risk {s.risk or '-'}  "
            f"case manager {s.case_manager_id}  site {s.site_id}"
        )
        console.print(f"as the store knew it at {s.as_of:%Y-%m-%d %H:%M %z}")
        for kind in s.open_tasks:
            console.print(f"[yellow]open task[/] {kind}")
        table = Table("session", "when", "type", "status", title="Sessions (from the store)")
        for x in s.sessions[-8:]:
            table.add_row(
                x.session_id, f"{x.starts_at:%a %Y-%m-%d %H:%M %z}", x.session_type, x.status
            )
        console.print(table)
    print(
        f"error: {down}; shown is what the store knew at {snapshot.as_of:%Y-%m-%d %H:%M %z}",
        file=sys.stderr,
    )
    return EXIT_UNREACHABLE


def render_status(s: JourneyStatus) -> None:
    rate = "n/a" if s.attendance_rate is None else f"{s.attendance_rate:.0%}"
    due = "-" if s.next_contact_due is None else f"{s.next_contact_due:%Y-%m-%d %H:%M %z}"
    week = f"week {s.week} of {s.weeks_in_phase}" if s.weeks_in_phase else ""
    console.print(
        f"[bold]{s.patient_id}[/] {s.phase.value} {week}  level {s.level or '-'}  "
        f"risk {s.risk}  case manager {s.case_manager_id}  site {s.site_id}"
    )
    console.print(
        f"program {s.program_id}, today {s.today:%Y-%m-%d} at the site ({s.clock.zone}, times "
        f"below are local with their UTC offset); {s.plan.placement.explain()}"
    )
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
                f"{x.starts_at:%a %Y-%m-%d %H:%M %z}",
                x.session_type,
                x.modality,
                x.status.value + (f" ({x.cancelled_for})" if x.cancelled_for else ""),
            )
        console.print(table)
    if s.follow_ups:
        table = Table("check-in", "due", "outcome", "attempts", "days of use", title="Aftercare")
        for f in s.follow_ups:
            table.add_row(
                f.call_id,
                f"{f.due_at:%Y-%m-%d %H:%M %z}",
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
        clauses.append(f"{visibility.PHASE.name} = '{validated(Phase, phase, 'phase').value}'")
    if case_manager:
        cm = validated(CaseManagerId, case_manager, "case manager")
        clauses.append(f"{visibility.CASE_MANAGER.name} = '{cm}'")
    if site:
        # The identifier's own type: str.isalnum() let other scripts' letters and digits by.
        clauses.append(f"{visibility.SITE.name} = '{validated(SiteId, site, 'site')}'")
    if risk:
        if risk not in ("low", "moderate", "high"):
            raise CliError(f"risk: {risk!r} is not one of low, moderate, high")
        clauses.append(f"{visibility.RISK.name} = '{risk}'")
    if overdue:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        clauses.append(f"{visibility.NEXT_CONTACT_DUE.name} < '{now}'")
    for bound, op in ((enrolled_from, ">="), (enrolled_to, "<")):
        if bound:
            day = validated(date, bound, "enrolled date (YYYY-MM-DD)")
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
        table.add_row(
            r["patient_id"],
            r["phase"] or "-",
            r["case_manager_id"] or "-",
            r["site_id"] or "-",
            r["risk"] or "-",
            percent(r["attendance_rate"]),
            (r["next_contact_due"] or "-")[:16],
        )
    console.print(table)
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
    store = care_store(settings)
    try:
        outcomes = report.cohort_report(
            store, ProgramCatalog.of(settings.programs_dir), cohort, datetime.now(UTC)
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
