"""The outcomes report for a cohort or site (`starter.py report`): the cohort's facts read
from the care-operations store, the metrics of `operators.outcomes`, and the terminal tables.
The HTML report and its charts are `operators.report_html`.

The report reads the store only; it needs no Temporal server. It names no patient: counts,
rates and durations only."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from clinical.aftercare import CHECK_IN_CONCLUDED, CallOutcome
from clinical.alumni import ALUMNI_ATTENDED
from clinical.instruments import score_bam
from clinical.protocol import ProgramCatalog, ProtocolError
from clinical.surveys import score
from infra.store import CareStore, CohortFacts
from operators.outcomes import (
    BamFact,
    CheckInFact,
    Cohort,
    CohortFilter,
    OutcomesReport,
    PatientFact,
    PhaseChangeFact,
    ReferralFact,
    SessionFact,
    TaskFact,
    TrackFact,
    outcomes,
    percent,
    phase_label,
    summary_rows,
)
from operators.support import (
    OUTCOME_HEADER,
    SURVEY_HEADER,
    SupportFacts,
    SupportReport,
    SurveyFact,
    outcome_rows,
    outcome_title,
    survey_rows,
    survey_title,
)


class ReportError(ValueError):
    """A report that cannot be made as asked, in one line."""


# --- the cohort, from the store ----------------------------------------------------------

_OPTIONS = {
    "site_id": ("--site", "a site identifier (lowercase letters, digits and '-')"),
    "case_manager_id": ("--case-manager", "a case manager identifier like CM-01"),
    "program_id": ("--program", "a program identifier like default-iop"),
}


def cohort_filter(
    site: str | None = None,
    case_manager: str | None = None,
    program: str | None = None,
    enrolled_from: str | None = None,
    enrolled_to: str | None = None,
) -> CohortFilter:
    """The filter from command-line values, or a one-line error naming the option."""
    dates: dict[str, date | None] = {}
    for option, value in (("--enrolled-from", enrolled_from), ("--enrolled-to", enrolled_to)):
        try:
            dates[option] = None if value is None else date.fromisoformat(value)
        except ValueError:
            raise ReportError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None
    try:
        return CohortFilter(
            site_id=site,
            case_manager_id=case_manager,
            program_id=program,
            enrolled_from=dates["--enrolled-from"],
            enrolled_to=dates["--enrolled-to"],
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in _OPTIONS:
            option, expected = _OPTIONS[field]
            raise ReportError(f"{option}: {error['input']!r} is not {expected}") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        for name, option in (
            ("enrolled_from", "--enrolled-from"),
            ("enrolled_to", "--enrolled-to"),
        ):
            message = message.replace(name, option)
        raise ReportError(message) from None


def load_cohort(
    store: CareStore, catalog: ProgramCatalog, cohort: CohortFilter, as_of: datetime
) -> Cohort:
    """Read the cohort's facts from the store (read only)."""
    facts = store.cohort(
        site_id=cohort.site_id,
        case_manager_id=cohort.case_manager_id,
        program_id=cohort.program_id,
        enrolled_from=_midnight(cohort.enrolled_from),
        enrolled_to=_midnight(cohort.enrolled_to),
        audit_actions=(CHECK_IN_CONCLUDED, ALUMNI_ATTENDED),
    )
    clocks, notes = _program_clocks(catalog, {p.program_id for p in facts.patients})
    tracks = _tracks(catalog, {p.program_id for p in facts.patients}, cohort.site_id)
    return Cohort(
        filter=cohort,
        as_of=as_of,
        patients=[
            PatientFact(
                patient_id=p.patient_id,
                site_id=p.site_id,
                case_manager_id=p.case_manager_id,
                program_id=p.program_id,
                enrolled_at=p.enrolled_at,
                phase=p.phase,
                seconds_per_day=clocks[p.program_id],
            )
            for p in facts.patients
        ],
        sessions=[
            SessionFact(
                patient_id=a.patient_id,
                session_id=a.session_id,
                starts_at=a.starts_at,
                session_type=a.session_type,
                status=a.status,
                track_id=a.track_id,
            )
            for a in facts.appointments
        ],
        phase_changes=[
            PhaseChangeFact(patient_id=c.patient_id, phase=c.phase, at=c.at)
            for c in facts.phase_changes
        ],
        check_ins=_check_ins(facts),
        bam=_bam_scores(facts),
        referrals=[
            ReferralFact(
                patient_id=r.patient_id,
                need=r.need,
                requested_at=r.requested_at,
                closed_at=r.closed_at,
                outcome=r.outcome,
            )
            for r in facts.referrals
        ],
        tasks=[TaskFact(patient_id=t.patient_id, kind=t.kind, open=t.open) for t in facts.tasks],
        tracks=tracks,
        support=_support_facts(store, catalog, facts, tracks),
        notes=notes,
    )


def _tracks(catalog: ProgramCatalog, program_ids: set[str], site_id: str | None) -> list[TrackFact]:
    """The group tracks of the cohort's programs (at its site, if it has one)."""
    found = []
    for program_id in sorted(program_ids):
        try:
            tracks = catalog.load(program_id).groups.tracks
        except ProtocolError:
            continue  # noted with the program's clock
        found += [
            TrackFact(
                program_id=program_id,
                track_id=t.id,
                site_id=t.site,
                capacity=t.capacity,
                facilitators=t.facilitators,
            )
            for t in tracks
            if site_id in (None, t.site)
        ]
    return found


def cohort_report(
    store: CareStore, catalog: ProgramCatalog, cohort: CohortFilter, as_of: datetime
) -> OutcomesReport:
    return outcomes(load_cohort(store, catalog, cohort, as_of))


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(0), tzinfo=UTC)


def _program_clocks(
    catalog: ProgramCatalog, program_ids: set[str]
) -> tuple[dict[str, float], list[str]]:
    """Each program's day length; a program whose file is gone counts real days."""
    clocks: dict[str, float] = {}
    notes: list[str] = []
    for program_id in sorted(program_ids):
        try:
            clocks[program_id] = catalog.load(program_id).clock.seconds_per_day
        except ProtocolError as exc:
            clocks[program_id] = 86400.0
            notes.append(f"{exc}: durations for {program_id} are in calendar days")
    return clocks, notes


def _check_ins(facts: CohortFacts) -> list[CheckInFact]:
    return [
        CheckInFact(
            patient_id=f.patient_id,
            # The key names the episode and the check-in: patient/E<episode>/<call>.
            call_ref=f.key.split("/", 1)[-1],
            outcome=CallOutcome(str(f.detail["outcome"])),
        )
        for f in facts.audit
        if f.action == CHECK_IN_CONCLUDED
    ]


def _support_facts(
    store: CareStore, catalog: ProgramCatalog, facts: CohortFacts, tracks: list[TrackFact]
) -> SupportFacts:
    """The cohort's questionnaires (points and support band only), alumni meetings each
    patient attended, and each track's facilitators."""
    patients = {p.patient_id for p in facts.patients}
    # A questionnaire sent outside a group phase speaks of the patient's last group track.
    last_track: dict[str, str] = {}
    for a in sorted(facts.appointments, key=lambda a: a.starts_at):
        if a.track_id is not None:
            last_track[a.patient_id] = a.track_id
    surveys = []
    for order, s in enumerate(store.surveys()):
        if s.patient_id not in patients:
            continue
        band = None
        if s.answers is not None:
            try:
                config = catalog.load(s.program_id).survey
            except ProtocolError:
                config = None  # noted with the program's clock
            band = None if config is None else score(config, s.answers).band
        surveys.append(
            SurveyFact(
                patient_id=s.patient_id,
                site_id=s.site_id,
                track_id=s.track_id or last_track.get(s.patient_id),
                occasion=s.occasion,
                issued_order=order,
                answers=s.answers,
                band=band,
            )
        )
    alumni = Counter(f.patient_id for f in facts.audit if f.action == ALUMNI_ATTENDED)
    return SupportFacts(
        surveys=surveys,
        alumni_attended=dict(alumni),
        facilitators={t.track_id: t.facilitators for t in tracks},
    )


def _bam_scores(facts: CohortFacts) -> list[BamFact]:
    """Scores only: the answers themselves stay in the store."""
    return [
        BamFact(patient_id=a.patient_id, call_ref=a.call_ref, score=score_bam(a.check_in.bam))
        for a in facts.call_attempts
        if a.check_in is not None and a.check_in.bam is not None
    ]


def terminal_tables(report: OutcomesReport) -> list[Table]:
    headline = Table(
        "metric",
        "value",
        "definition",
        title=f"Outcomes: {report.cohort} (as of {report.as_of:%Y-%m-%d %H:%M} UTC)",
        title_justify="left",
    )
    for metric, value, meaning in summary_rows(report):
        headline.add_row(metric, value, meaning)
    phases = Table("phase", "patients", title="Patients by phase (now)", title_justify="left")
    for phase, n in report.by_phase.items():
        phases.add_row(phase_label(phase), str(n))
    weeks = Table(
        "treatment week",
        "attended",
        "missed",
        "rate",
        title="Attendance by treatment week",
        title_justify="left",
    )
    for w in report.attendance_by_week:
        weeks.add_row(str(w.week), str(w.attended), str(w.missed), percent(w.rate))
    bam = Table(
        "aftercare month",
        "check-ins",
        "Use mean / median",
        "Risk mean / median",
        "Protective mean / median",
        title="BAM scores by check-in month (Use 0-12, Risk and Protective 0-24)",
        title_justify="left",
    )
    for m in report.bam_by_month:
        bam.add_row(
            str(m.month),
            str(m.n),
            *(f"{t.mean:.1f} / {t.median:g}" for t in (m.use, m.risk, m.protective)),
        )
    loops = Table(
        "referral outcome",
        "referrals",
        "median days to close",
        title="Referral loops",
        title_justify="left",
    )
    for outcome, n in report.referrals.by_outcome.items():
        days = report.referrals.days_to_close_by_outcome.get(outcome)
        loops.add_row(outcome, str(n), "-" if not days else f"{statistics.median(days):.1f}")
    calls = Table(
        "check-in outcome", "check-ins", title="Aftercare check-ins", title_justify="left"
    )
    for outcome, n in report.check_ins_by_outcome.items():
        calls.add_row(outcome, str(n))
    groups = Table(
        "group track",
        "program",
        "sessions held",
        "mean roster",
        "utilisation",
        "attendance",
        title="Group tracks: utilisation (mean roster / capacity) and attendance",
        title_justify="left",
    )
    for g in report.groups:
        groups.add_row(
            f"{g.track_id} ({g.site_id})",
            g.program_id,
            str(g.sessions),
            "-" if g.mean_roster is None else f"{g.mean_roster:g} of {g.capacity}",
            percent(g.utilisation),
            g.attendance.show(),
        )
    for f in report.facilitators:
        groups.add_row(f"facilitator {f.name}", "", str(f.sessions), "", "", f.attendance.show())
    tasks = Table(
        "task kind", "opened", "still open", title="Case-manager tasks", title_justify="left"
    )
    for kind, t in report.tasks.items():
        tasks.add_row(kind, str(t.opened), str(t.still_open))
    tables = [headline, phases, weeks, calls, bam, loops, tasks]
    # Group tracks only where the cohort's programs run any; the questionnaire's results
    # where any was sent.
    if report.groups:
        tables.append(groups)
    if report.support is not None:
        tables += support_tables(report.support)
    return tables


def support_tables(support: SupportReport) -> list[Table]:
    surveys = Table(*SURVEY_HEADER, title=survey_title(support), title_justify="left")
    for row in survey_rows(support):
        surveys.add_row(*row)
    against = Table(*OUTCOME_HEADER, title=outcome_title(support), title_justify="left")
    for row in outcome_rows(support):
        against.add_row(*row)
    return [surveys, against]


def as_json(report: OutcomesReport) -> dict[str, Any]:
    return report.model_dump(mode="json")


def check_outputs(html: Path | None, png_dir: Path | None) -> None:
    """Refuse, before anything is read or written, outputs that cannot be written."""
    if html is not None:
        if html.is_dir():
            raise ReportError(f"--html: {html} is a directory; name the report file")
        if not html.parent.is_dir():
            raise ReportError(f"--html: no directory {html.parent}")
    if png_dir is not None and png_dir.exists() and not png_dir.is_dir():
        raise ReportError(f"--png-dir: {png_dir} is a file, not a directory")
