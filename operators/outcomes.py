"""A cohort's outcomes: pure arithmetic over the facts the care-operations store holds.

Nothing here reads the store, the clock or Temporal: `operators.report` reads a cohort's
facts into the models below, `outcomes()` computes every metric, and the tests check the
arithmetic on a cohort built by hand. Each metric says what it counts and over what.

Durations are in program days (a compressed demo clock makes a day last 0.4 s), measured from
the enrolment instant. Medians are over the patients (or referrals) that reached the event."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from clinical.aftercare import CallOutcome
from clinical.attendance import AttendanceSummary, SessionStatus
from clinical.careplan import FAMILY_EDUCATION, FAMILY_SESSION_TYPES
from clinical.identifiers import CaseManagerId, ProgramId, SiteId
from clinical.instruments import BamScore
from clinical.phases import TERMINAL_PHASES, Phase
from clinical.referrals import ReferralOutcome
from operators.rates import Rate
from operators.support import SupportFacts, SupportReport, support_report

DAYS_PER_CHECK_IN_MONTH = 30
"""Check-ins are grouped by aftercare month: day 7 is month 0, day 30 month 1, day 365
month 12 (the day offset over 30, rounded)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- the cohort ------------------------------------------------------------------------


class CohortFilter(_Model):
    """Which patients a report covers: every filter given must hold. Enrolment dates are
    UTC calendar dates, `enrolled_from` inclusive and `enrolled_to` exclusive (as `find`)."""

    site_id: SiteId | None = None
    case_manager_id: CaseManagerId | None = None
    program_id: ProgramId | None = None
    enrolled_from: date | None = None
    enrolled_to: date | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if (
            self.enrolled_from is not None
            and self.enrolled_to is not None
            and self.enrolled_to <= self.enrolled_from
        ):
            raise ValueError(
                f"enrolled_to ({self.enrolled_to}) must be after enrolled_from "
                f"({self.enrolled_from}); enrolled_to is exclusive"
            )
        return self

    def describe(self) -> str:
        parts = [
            f"{label} {value}"
            for label, value in (
                ("site", self.site_id),
                ("case manager", self.case_manager_id),
                ("program", self.program_id),
                ("enrolled from", self.enrolled_from),
                ("enrolled before", self.enrolled_to),
            )
            if value is not None
        ]
        return ", ".join(parts) or "all patients"


class PatientFact(_Model):
    patient_id: str
    site_id: str
    case_manager_id: str
    program_id: str
    enrolled_at: datetime
    phase: Phase
    seconds_per_day: float = 86400.0
    """The program's clock: how long one program day lasts."""

    def days(self, start: datetime, end: datetime) -> float:
        """Program days between two instants, on this patient's program clock."""
        return (end - start).total_seconds() / self.seconds_per_day

    def days_to(self, at: datetime) -> float:
        return self.days(self.enrolled_at, at)


class SessionFact(_Model):
    patient_id: str
    session_id: str
    starts_at: datetime
    """Clinic-calendar time (what the patient's appointment card says)."""
    session_type: str
    status: SessionStatus
    track_id: str | None = None
    """The group track whose session this was (None: the patient's own)."""


class TrackFact(_Model):
    """A group track of one of the cohort's programs."""

    program_id: str
    track_id: str
    site_id: str
    capacity: int
    facilitators: tuple[str, ...]


class PhaseChangeFact(_Model):
    patient_id: str
    phase: Phase
    at: datetime


class CheckInFact(_Model):
    """An aftercare check-in that concluded (all its call attempts are done)."""

    patient_id: str
    call_ref: str
    outcome: CallOutcome


class BamFact(_Model):
    """The Brief Addiction Monitor scored at a reached check-in."""

    patient_id: str
    call_ref: str
    score: BamScore

    @property
    def month(self) -> int:
        found = re.search(r"D(\d+)$", self.call_ref)
        offset = int(found.group(1)) if found else 0
        return round(offset / DAYS_PER_CHECK_IN_MONTH)


class ReferralFact(_Model):
    patient_id: str
    need: str
    requested_at: datetime
    closed_at: datetime | None = None
    outcome: ReferralOutcome | None = None


class TaskFact(_Model):
    patient_id: str
    kind: str
    open: bool


class Cohort(_Model):
    filter: CohortFilter
    as_of: datetime
    patients: list[PatientFact]
    sessions: list[SessionFact] = []
    phase_changes: list[PhaseChangeFact] = []
    check_ins: list[CheckInFact] = []
    bam: list[BamFact] = []
    referrals: list[ReferralFact] = []
    tasks: list[TaskFact] = []
    tracks: list[TrackFact] = []
    support: SupportFacts = SupportFacts()
    notes: list[str] = []


# --- the report ------------------------------------------------------------------------


class Days(_Model):
    """Days to an event, for those who reached it."""

    values: list[float]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n(self) -> int:
        return len(self.values)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def show(self) -> str:
        return "-" if self.median is None else f"{self.median:.1f} d (n={self.n})"


class WeekAttendance(_Model):
    week: int
    attended: int
    missed: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float | None:
        return AttendanceSummary(
            attended=self.attended, missed=self.missed, excused=0, pending=0, cancelled=0
        ).rate


class ScaleTrend(_Model):
    mean: float
    median: float


class BamMonth(_Model):
    month: int
    n: int
    use: ScaleTrend
    risk: ScaleTrend
    protective: ScaleTrend


class ReferralOutcomes(_Model):
    closed: Rate
    """Loop closure: referrals that reached a final answer / referrals requested."""
    completed: Rate
    """Referrals completed by the partner / referrals closed."""
    by_outcome: dict[str, int]
    """Closed referrals by outcome, and `open` for the ones still waiting."""
    days_to_close: Days
    days_to_close_by_outcome: dict[str, list[float]]


class TaskCounts(_Model):
    opened: int
    still_open: int


class TrackUse(_Model):
    """A group track's sessions held so far: how full they ran and who came."""

    program_id: str
    track_id: str
    site_id: str
    capacity: int
    sessions: int
    """Sessions held: with anyone's attendance on record."""
    mean_roster: float | None
    utilisation: float | None
    """Mean patients booked per held session / capacity."""
    attendance: Rate


class FacilitatorUse(_Model):
    """The group sessions a facilitator led (every session of their tracks) and who came."""

    name: str
    sessions: int
    attendance: Rate


class OutcomesReport(_Model):
    cohort: str
    as_of: datetime
    enrolled: int
    by_phase: dict[str, int]
    """Patients by where they are now (a terminal phase: how the journey ended)."""
    ended: int
    completion: Rate
    days_to_step_down: Days
    days_to_completion: Days
    attendance: Rate
    sessions_excused: int
    sessions_pending: int
    attendance_by_week: list[WeekAttendance]
    referrals: ReferralOutcomes
    check_in_reach: Rate
    check_ins_by_outcome: dict[str, int]
    relapse: Rate
    relapses: int
    days_to_relapse: Days
    bam_by_month: list[BamMonth]
    lost_to_contact: Rate
    tasks: dict[str, TaskCounts]
    groups: list[TrackUse] = []
    facilitators: list[FacilitatorUse] = []
    support: SupportReport | None = None
    """The questionnaire's results and support against outcomes (None: no questionnaire
    sent in this cohort)."""
    notes: list[str]


# --- the metrics -----------------------------------------------------------------------


def patients_by_phase(cohort: Cohort) -> dict[str, int]:
    """Every phase, in the journey's order, with how many patients are in it now."""
    counts = Counter(p.phase for p in cohort.patients)
    return {phase.value: counts[phase] for phase in Phase}


def ended(cohort: Cohort) -> list[PatientFact]:
    """Journeys that ended, however they ended (a terminal phase)."""
    return [p for p in cohort.patients if p.phase in TERMINAL_PHASES]


def completion_rate(cohort: Cohort) -> Rate:
    """Completed / journeys that ended (ongoing journeys are not counted either way)."""
    done = ended(cohort)
    return Rate(numerator=sum(p.phase == Phase.completed for p in done), denominator=len(done))


def lost_to_contact_rate(cohort: Cohort) -> Rate:
    """Ended as lost to contact / journeys that ended."""
    done = ended(cohort)
    return Rate(
        numerator=sum(p.phase == Phase.lost_to_contact for p in done), denominator=len(done)
    )


def days_to_first(cohort: Cohort, phase: Phase) -> Days:
    """Program days from enrolment to the patient's first entry into `phase`, over the
    patients who entered it."""
    patients = {p.patient_id: p for p in cohort.patients}
    first: dict[str, datetime] = {}
    for change in cohort.phase_changes:
        if change.phase == phase and change.patient_id in patients:
            seen = first.get(change.patient_id)
            first[change.patient_id] = change.at if seen is None else min(seen, change.at)
    return Days(values=sorted(_round(patients[pid].days_to(at)) for pid, at in first.items()))


def _patient_sessions(cohort: Cohort) -> list[SessionFact]:
    # Family education is for the family contact alone: not the patient's attendance.
    return [s for s in cohort.sessions if s.session_type != FAMILY_EDUCATION]


def attendance(cohort: Cohort) -> tuple[Rate, AttendanceSummary]:
    """Attended / (attended + missed): the journey's own rule (clinical.attendance). A
    session counts once it has happened and is accounted for: recorded by a case manager,
    or counted missed when the grace period passed without a record. Excused, cancelled
    and not-yet-accounted (pending) sessions are outside the denominator."""
    count = Counter(s.status for s in _patient_sessions(cohort))
    summary = AttendanceSummary(
        attended=count[SessionStatus.attended],
        missed=count[SessionStatus.missed],
        excused=count[SessionStatus.excused],
        pending=count[SessionStatus.scheduled],
        cancelled=count[SessionStatus.cancelled],
    )
    return Rate(numerator=summary.attended, denominator=summary.counted), summary


def treatment_week(first_session: date, starts_at: datetime) -> int:
    """Week 1 is the calendar week (Monday to Sunday) of the patient's first booked session;
    a relapse's new episode keeps counting from there."""
    first_monday = first_session - timedelta(days=first_session.weekday())
    return (starts_at.date() - first_monday).days // 7 + 1


def attendance_by_week(cohort: Cohort) -> list[WeekAttendance]:
    """Attendance (same rule as overall) by treatment week, pooled over the cohort."""
    sessions = _patient_sessions(cohort)
    first: dict[str, date] = {}
    for s in sessions:
        day = s.starts_at.date()
        first[s.patient_id] = min(first.get(s.patient_id, day), day)
    weeks: dict[int, Counter[SessionStatus]] = defaultdict(Counter)
    for s in sessions:
        weeks[treatment_week(first[s.patient_id], s.starts_at)][s.status] += 1
    return [
        WeekAttendance(
            week=week,
            attended=weeks[week][SessionStatus.attended],
            missed=weeks[week][SessionStatus.missed],
        )
        for week in sorted(weeks)
        if weeks[week][SessionStatus.attended] + weeks[week][SessionStatus.missed]
    ]


def referral_outcomes(cohort: Cohort) -> ReferralOutcomes:
    """Loop closure rate: referrals closed (completed, declined, cancelled or expired) /
    referrals requested; completed / closed; and program days from request to close over
    the closed ones."""
    patients = {p.patient_id: p for p in cohort.patients}
    days: dict[str, list[float]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for r in cohort.referrals:
        if r.closed_at is None:
            counts["open"] += 1
            continue
        outcome = str(r.outcome or "closed")
        counts[outcome] += 1
        days[outcome].append(_round(patients[r.patient_id].days(r.requested_at, r.closed_at)))
    closed = sum(n for outcome, n in counts.items() if outcome != "open")
    return ReferralOutcomes(
        closed=Rate(numerator=closed, denominator=len(cohort.referrals)),
        completed=Rate(numerator=counts[ReferralOutcome.completed.value], denominator=closed),
        by_outcome=dict(sorted(counts.items())),
        days_to_close=Days(values=sorted(d for ds in days.values() for d in ds)),
        days_to_close_by_outcome={k: sorted(v) for k, v in sorted(days.items())},
    )


def check_in_reach(cohort: Cohort) -> tuple[Rate, dict[str, int]]:
    """Reached / check-ins that concluded (reached, unreachable after every attempt, or
    declined). A check-in still between attempts, or called off because the journey
    ended or the patient was re-linked to care, is not counted."""
    counts = Counter(c.outcome for c in cohort.check_ins)
    return (
        Rate(numerator=counts[CallOutcome.reached], denominator=len(cohort.check_ins)),
        {outcome.value: counts[outcome] for outcome in CallOutcome},
    )


def relapses(cohort: Cohort) -> tuple[Rate, int, Days]:
    """A relapse is a return to intake (the journey re-links the patient to care, whether a
    case manager reported it or a check-in found use). Relapse rate: patients with at least
    one relapse / patients enrolled; also the number of relapses, and program days from
    enrolment to the first relapse over the patients who relapsed."""
    events = [c for c in cohort.phase_changes if c.phase == Phase.intake]
    first = days_to_first(cohort, Phase.intake)
    return (
        Rate(numerator=first.n, denominator=len(cohort.patients)),
        len(events),
        first,
    )


def bam_by_month(cohort: Cohort) -> list[BamMonth]:
    """BAM Use, Risk and Protective scores (mean and median) by aftercare check-in month,
    over the reached check-ins that asked the BAM."""
    months: dict[int, list[BamScore]] = defaultdict(list)
    for b in cohort.bam:
        months[b.month].append(b.score)

    def trend(values: Iterable[int]) -> ScaleTrend:
        vs = list(values)
        return ScaleTrend(mean=_round(statistics.fmean(vs)), median=statistics.median(vs))

    return [
        BamMonth(
            month=month,
            n=len(scores),
            use=trend(s.use for s in scores),
            risk=trend(s.risk for s in scores),
            protective=trend(s.protective for s in scores),
        )
        for month, scores in sorted(months.items())
    ]


def task_counts(cohort: Cohort) -> dict[str, TaskCounts]:
    """Case-manager tasks the cohort's journeys opened, by kind, and how many are open."""
    opened = Counter(t.kind for t in cohort.tasks)
    still_open = Counter(t.kind for t in cohort.tasks if t.open)
    return {
        kind: TaskCounts(opened=n, still_open=still_open[kind])
        for kind, n in sorted(opened.items())
    }


def _held(cohort: Cohort) -> dict[tuple[str, datetime], list[SessionFact]]:
    """The group sessions held, by track and start: their bookings. A session is held once
    anyone's attendance at it is on record (starts are clinic-calendar times, which a
    compressed program clock runs ahead of the real one)."""
    by_session: dict[tuple[str, datetime], list[SessionFact]] = {}
    for s in cohort.sessions:
        if s.track_id is not None and s.status != SessionStatus.cancelled:
            by_session.setdefault((s.track_id, s.starts_at), []).append(s)
    recorded = (SessionStatus.attended, SessionStatus.missed, SessionStatus.excused)
    return {k: v for k, v in by_session.items() if any(s.status in recorded for s in v)}


def _attendance_of(sessions: Iterable[SessionFact]) -> Rate:
    statuses = [s.status for s in sessions]
    attended = statuses.count(SessionStatus.attended)
    return Rate(numerator=attended, denominator=attended + statuses.count(SessionStatus.missed))


def track_use(cohort: Cohort) -> list[TrackUse]:
    """Each of the cohort's programs' tracks: sessions held, how full, attendance."""
    held = _held(cohort)
    program_of = {p.patient_id: p.program_id for p in cohort.patients}
    used = []
    for t in cohort.tracks:
        sessions = [
            bookings
            for (track_id, _), bookings in held.items()
            if track_id == t.track_id and program_of.get(bookings[0].patient_id) == t.program_id
        ]
        roster = statistics.mean(len(b) for b in sessions) if sessions else None
        used.append(
            TrackUse(
                program_id=t.program_id,
                track_id=t.track_id,
                site_id=t.site_id,
                capacity=t.capacity,
                sessions=len(sessions),
                mean_roster=None if roster is None else round(roster, 2),
                utilisation=None if roster is None else round(roster / t.capacity, 3),
                attendance=_attendance_of(s for b in sessions for s in b),
            )
        )
    return used


def facilitator_use(cohort: Cohort) -> list[FacilitatorUse]:
    """Each facilitator's group sessions held and attendance at them, by name."""
    held = _held(cohort)
    program_of = {p.patient_id: p.program_id for p in cohort.patients}
    led: dict[str, list[list[SessionFact]]] = {}
    for t in cohort.tracks:
        for name in t.facilitators:
            led.setdefault(name, [])
        for (track_id, _), bookings in held.items():
            if track_id == t.track_id and program_of.get(bookings[0].patient_id) == t.program_id:
                for name in t.facilitators:
                    led.setdefault(name, []).append(bookings)
    return [
        FacilitatorUse(
            name=name,
            sessions=len(sessions),
            attendance=_attendance_of(s for b in sessions for s in b),
        )
        for name, sessions in sorted(led.items())
    ]


def outcomes(cohort: Cohort) -> OutcomesReport:
    attendance_rate, summary = attendance(cohort)
    reach, by_call_outcome = check_in_reach(cohort)
    relapse_rate, relapse_count, to_relapse = relapses(cohort)
    return OutcomesReport(
        cohort=cohort.filter.describe(),
        as_of=cohort.as_of,
        enrolled=len(cohort.patients),
        by_phase=patients_by_phase(cohort),
        ended=len(ended(cohort)),
        completion=completion_rate(cohort),
        days_to_step_down=days_to_first(cohort, Phase.step_down),
        days_to_completion=days_to_first(cohort, Phase.completed),
        attendance=attendance_rate,
        sessions_excused=summary.excused,
        sessions_pending=summary.pending,
        attendance_by_week=attendance_by_week(cohort),
        referrals=referral_outcomes(cohort),
        check_in_reach=reach,
        check_ins_by_outcome=by_call_outcome,
        relapse=relapse_rate,
        relapses=relapse_count,
        days_to_relapse=to_relapse,
        bam_by_month=bam_by_month(cohort),
        lost_to_contact=lost_to_contact_rate(cohort),
        tasks=task_counts(cohort),
        groups=track_use(cohort),
        facilitators=facilitator_use(cohort),
        support=_support(cohort),
        notes=cohort.notes,
    )


def _support(cohort: Cohort) -> SupportReport | None:
    if not cohort.support.surveys:
        return None
    return support_report(
        phases={p.patient_id: p.phase for p in cohort.patients},
        relapsed={c.patient_id for c in cohort.phase_changes if c.phase == Phase.intake},
        family_attended=Counter(
            s.patient_id
            for s in cohort.sessions
            if s.session_type in FAMILY_SESSION_TYPES and s.status == SessionStatus.attended
        ),
        facts=cohort.support,
    )


def _round(days: float) -> float:
    # Hundredths of a day (about 15 minutes) are more than a clinical lead reads.
    return round(days, 2)


def summary_rows(report: OutcomesReport) -> list[tuple[str, str, str]]:
    """The headline figures as (metric, value, what it counts), for every rendering."""
    referrals = report.referrals
    return [
        ("enrolled", str(report.enrolled), "patients in the cohort"),
        (
            "journeys ended",
            str(report.ended),
            "completed, discharged, withdrawn, escalated or lost",
        ),
        ("completion rate", report.completion.show(), "completed / journeys ended"),
        (
            "median days to step-down",
            report.days_to_step_down.show(),
            "enrolment to first step-down, patients who stepped down",
        ),
        (
            "median days to completion",
            report.days_to_completion.show(),
            "enrolment to completion, patients who completed",
        ),
        (
            "attendance rate",
            report.attendance.show(),
            "attended / (attended + missed) sessions; excused "
            f"({report.sessions_excused}) and not yet accounted ({report.sessions_pending}) "
            "sessions outside",
        ),
        (
            "referral loop closure",
            referrals.closed.show(),
            "referrals closed (any final answer) / referrals requested",
        ),
        ("referrals completed", referrals.completed.show(), "completed / referrals closed"),
        (
            "median days to close a referral",
            referrals.days_to_close.show(),
            "request to close, closed referrals",
        ),
        (
            "check-in reach rate",
            report.check_in_reach.show(),
            "reached / aftercare check-ins concluded (all attempts made)",
        ),
        (
            "relapse rate",
            report.relapse.show(),
            f"patients re-linked to care at least once / enrolled ({report.relapses} relapses)",
        ),
        (
            "median days to first relapse",
            report.days_to_relapse.show(),
            "enrolment to first relapse, patients who relapsed",
        ),
        (
            "lost to contact",
            report.lost_to_contact.show(),
            "ended lost to contact / journeys ended",
        ),
    ]


def percent(rate: float | None) -> str:
    """A rate in a table cell; "-" where there was nothing to count."""
    return "-" if rate is None else f"{rate:.0%}"


def phase_label(phase: str) -> str:
    return phase.replace("_", " ").replace("step down", "step-down")
