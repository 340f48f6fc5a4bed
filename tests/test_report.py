"""The outcomes report: its arithmetic on a cohort written by hand into a store (every
number known), its HTML and PNG charts, the command line, and agreement with the store after
a real journey on the time-skipping server."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.aftercare import CHECK_IN_CONCLUDED, CallOutcome, CheckIn
from clinical.attendance import SessionStatus
from clinical.careplan import SessionSpec
from clinical.instruments import (
    BAM_PROTECTIVE_ITEMS,
    BAM_RISK_ITEMS,
    BAM_USE_ITEMS,
    BamAnswers,
    score_bam,
)
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from infra.settings import PROJECT_ROOT
from infra.store import (
    AttendanceMark,
    AuditFact,
    CallAttempt,
    CareEventFacts,
    CareStore,
    NewPatient,
    NewReferral,
    NewTask,
    PhaseChangeEntry,
    TaskClosing,
)
from operators.outcomes import CohortFilter
from operators.report import ReportError, cohort_filter, cohort_report, load_cohort
from operators.report_html import CHARTS, render_html, write_pngs
from simulation.patients import steady_attendance
from tests.support import PROGRAMS, clinic, make_enrolment

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
DEMO_DAY = timedelta(seconds=0.4)  # demo-iop's program day
AS_OF = datetime(2027, 6, 1, tzinfo=UTC)


def bam(use: int, risk: int, protective: int) -> BamAnswers:
    """BAM answers with these Use, Risk and Protective scores (items filled up to 4 each)."""
    items = [0] * 17
    for total, numbers in (
        (use, BAM_USE_ITEMS),
        (risk, BAM_RISK_ITEMS),
        (protective, BAM_PROTECTIVE_ITEMS),
    ):
        left = total
        for n in numbers:
            items[n - 1] = min(left, 4)
            left -= items[n - 1]
    answers = BamAnswers(items=tuple(items))
    assert score_bam(answers).model_dump() == {"use": use, "risk": risk, "protective": protective}
    return answers


def fact(pid: str, key: str, action: str, at: datetime = T0, **detail: str | int) -> AuditFact:
    return AuditFact(
        key=key, patient_id=pid, actor="CM-01", action=action, purpose="test", at=at, detail=detail
    )


@dataclass
class CohortWriter:
    """Writes a cohort's facts into a store through its methods, as the activities would."""

    store: CareStore
    counter: dict[str, int] = field(default_factory=dict)

    def _key(self, kind: str) -> str:
        self.counter[kind] = self.counter.get(kind, 0) + 1
        return f"{kind}-{self.counter[kind]}"

    def patient(
        self,
        pid: str,
        enrolled_at: datetime,
        site: str = "north",
        cm: str = "CM-01",
        program: str = "default-iop",
    ) -> None:
        """Enrolled in intake; `phases` moves the patient on."""
        patient = NewPatient(
            patient_id=pid,
            case_manager_id=cm,
            site_id=site,
            program_id=program,
            enrolled_at=enrolled_at,
            level="2.1",
            risk="moderate",
            contact=make_enrolment().contact,
            assessment_json="{}",
            care_plan_json="{}",
        )
        assert self.store.record_intake(patient, audit=[], consents=[])

    def phases(self, pid: str, *changes: tuple[str, datetime]) -> None:
        for i, (phase, at) in enumerate(changes, start=1):
            change = PhaseChangeEntry(
                key=f"{pid}/phase/{i}-{phase}",
                patient_id=pid,
                phase=Phase(phase),
                at=at,
                reason="test",
            )
            self.store.record_phase_change(
                change, case_manager_id="CM-01", level="2.1", risk="moderate"
            )

    def sessions(self, pid: str, *sessions: tuple[str, str, str]) -> None:
        """(clinic-calendar start 'YYYY-MM-DD HH:MM', status, session type)."""
        specs, marks = [], []
        for starts, status, session_type in sessions:
            sid = self._key(f"{pid}-S")
            specs.append(
                SessionSpec(
                    session_id=sid,
                    phase=Phase.intensive,
                    week=1,
                    level="2.1",
                    day=0.0,
                    starts_at=datetime.fromisoformat(starts).replace(tzinfo=UTC),
                    hours=3.0,
                    session_type=session_type,
                    modality="in_person",
                )
            )
            if status != SessionStatus.scheduled:
                marks.append(AttendanceMark(session_id=sid, status=SessionStatus(status)))
        events = CareEventFacts(patient_id=pid, session_changes=marks)
        assert self.store.book_week(pid, specs, events=events) == len(specs)

    def call(
        self, pid: str, call_ref: str, attempt: int, outcome: str, check_in: CheckIn | None = None
    ) -> None:
        placed = CallAttempt(
            key=f"{pid}/{call_ref}/attempt-{attempt}",
            patient_id=pid,
            call_ref=call_ref,
            attempt=attempt,
            due_at=T0,
            placed_at=T0,
            outcome=CallOutcome(outcome),
            check_in=check_in,
        )
        assert self.store.record_call_attempt(placed, concluded=None)

    def check_in_concluded(self, pid: str, episode: int, call_id: str, outcome: str) -> None:
        concluded = fact(
            pid, f"{pid}/E{episode}/{call_id}", CHECK_IN_CONCLUDED,
            call_id=call_id, outcome=outcome, attempts=1,
        )  # fmt: skip
        self.store.record_care_events(CareEventFacts(patient_id=pid, audit=[concluded]))

    def referral(
        self,
        pid: str,
        need: str,
        requested: datetime,
        closed: datetime | None = None,
        outcome: str | None = None,
    ) -> None:
        """Requested and sent at `requested`; closed with `outcome` if `closed`."""
        key = f"{pid}/referral/{need}"
        referral = NewReferral(
            key=key,
            referral_id=f"REF-{need}",
            workflow_id=f"journey-{pid}-REF-{need}",
            patient_id=pid,
            case_manager_id="CM-01",
            need=need,
            requested_at=requested,
        )
        assert self.store.open_referral(referral, fact(pid, f"{key}/requested", "requested"))
        self.store.mark_referral_sent(key, "SIM-1", requested, fact(pid, f"{key}/sent", "sent"))
        if closed is not None and outcome is not None:
            self.store.close_referral(key, outcome, closed, fact(pid, f"{key}/closed", "closed"))

    def task(self, pid: str, kind: str, status: str) -> None:
        key = self._key(f"{pid}/task/{kind}")
        task = NewTask(key=key, patient_id=pid, case_manager_id="CM-01", kind=kind, detail="test")
        assert self.store.open_task(task)
        if status == "done":
            closing = TaskClosing(key=key, by="CM-01", at=T0)
            assert self.store.complete_task(closing, fact(pid, f"{key}/done", "task_completed"))


P1, P2, P3, P4 = "P-1AAAAA11", "P-2BBBBB22", "P-3CCCCC33", "P-4DDDDD44"
P5, P6, P7 = "P-5EEEEE55", "P-6FFFFF66", "P-7GGGGG77"


def write_known_cohort(store: CareStore) -> None:
    """Seven patients whose every number the tests below know (worked out beside each)."""
    w = CohortWriter(store)
    # P1 completed: step-down on day 63, completion on day 470.
    w.patient(P1, T0)
    w.phases(
        P1,
        ("intensive", T0 + 7 * DAY),
        ("step_down", T0 + 63 * DAY),
        ("aftercare", T0 + 105 * DAY),
        ("completed", T0 + 470 * DAY),
    )
    # P2 lost to contact after step-down on day 70.
    w.patient(P2, T0 + DAY)
    w.phases(
        P2,
        ("intensive", T0 + 8 * DAY),
        ("step_down", T0 + 71 * DAY),
        ("aftercare", T0 + 113 * DAY),
        ("lost_to_contact", T0 + 201 * DAY),
    )
    # P3 in intensive again after a relapse on day 30.
    w.patient(P3, T0 + 2 * DAY)
    w.phases(
        P3,
        ("intensive", T0 + 7 * DAY),
        ("intake", T0 + 32 * DAY),
        ("intensive", T0 + 37 * DAY),
    )
    # P4 withdrew.
    w.patient(P4, T0 + 3 * DAY)
    w.phases(P4, ("intensive", T0 + 7 * DAY), ("withdrawn", T0 + 23 * DAY))
    # P5 on the demo clock (0.4 s a day): step-down on program day 70, completion on 480.
    w.patient(P5, T0, program="demo-iop")
    w.phases(
        P5,
        ("intensive", T0 + 7 * DEMO_DAY),
        ("step_down", T0 + 70 * DEMO_DAY),
        ("aftercare", T0 + 112 * DEMO_DAY),
        ("completed", T0 + 480 * DEMO_DAY),
    )
    # P6, another site and case manager, in aftercare again after a relapse on day 100;
    # first step-down on day 60.
    e6 = T0 + 40 * DAY
    w.patient(P6, e6, site="south", cm="CM-02")
    w.phases(
        P6,
        ("intensive", e6 + 2 * DAY),
        ("step_down", e6 + 60 * DAY),
        ("aftercare", e6 + 90 * DAY),
        ("intake", e6 + 100 * DAY),
        ("intensive", e6 + 107 * DAY),
        ("step_down", e6 + 150 * DAY),
        ("aftercare", e6 + 180 * DAY),
    )
    # P7: a program whose file is gone; nothing happened yet but the start of intensive.
    w.patient(P7, T0, site="west", program="retired-iop")
    w.phases(P7, ("intensive", T0 + 7 * DAY))

    # Attendance (family education is the family's, not the patient's):
    #   week 1: P1 A A M E, P3 A M (first session a Wednesday), P6 A A -> 5 attended, 2 missed
    #   week 2: P1 A A M + family therapy A, P3 A, pending, cancelled  -> 4 attended, 1 missed
    #   week 5: P3 A (the relapse's new episode)                      -> 1 attended
    w.sessions(
        P1,
        ("2026-01-12 09:00", "attended", "group_therapy"),
        ("2026-01-13 09:00", "attended", "group_therapy"),
        ("2026-01-14 09:00", "missed", "relapse_prevention"),
        ("2026-01-15 09:00", "excused", "individual_therapy"),
        ("2026-01-19 09:00", "attended", "group_therapy"),
        ("2026-01-20 09:00", "attended", "group_therapy"),
        ("2026-01-21 09:00", "missed", "addiction_education"),
        ("2026-01-21 12:00", "attended", "family_therapy"),
        ("2026-01-22 18:30", "attended", "family_education"),
    )
    w.sessions(
        P3,
        ("2026-01-14 18:00", "attended", "group_therapy"),
        ("2026-01-16 18:00", "missed", "group_therapy"),
        ("2026-01-21 18:00", "attended", "group_therapy"),
        ("2026-01-23 18:00", "scheduled", "group_therapy"),
        ("2026-01-24 10:00", "cancelled", "group_therapy"),
        ("2026-02-11 09:00", "attended", "group_therapy"),
    )
    w.sessions(
        P6,
        ("2026-02-16 09:00", "attended", "group_therapy"),
        ("2026-02-17 09:00", "attended", "group_therapy"),
    )

    # Check-in attempts (BAM scores Use/Risk/Protective) and concluded check-ins.
    w.call(P1, "FU-D007", 1, "reached", CheckIn(days_of_use=0, bam=bam(0, 6, 18)))
    w.call(P1, "FU-D030", 1, "reached", CheckIn(days_of_use=0, bam=bam(0, 4, 20)))
    for attempt in (1, 2, 3):
        w.call(P1, "FU-D060", attempt, "unreachable")
    w.call(P2, "FU-D007", 1, "declined")
    w.call(P5, "FU-D007", 1, "reached", CheckIn(days_of_use=0))  # no BAM asked
    w.call(P5, "FU-D030", 1, "unreachable")
    w.call(P5, "FU-D030", 2, "reached", CheckIn(days_of_use=0, bam=bam(0, 3, 24)))
    w.call(P6, "FU-D007", 1, "reached", CheckIn(days_of_use=2, bam=bam(2, 12, 10)))
    w.call(P6, "E2-FU-D030", 1, "reached", CheckIn(days_of_use=0, bam=bam(0, 8, 16)))
    w.call(P6, "E2-FU-D060", 1, "unreachable")  # still between attempts: not concluded
    for pid, episode, call_id, outcome in (
        (P1, 1, "FU-D007", "reached"),
        (P1, 1, "FU-D030", "reached"),
        (P1, 1, "FU-D060", "unreachable"),
        (P2, 1, "FU-D007", "declined"),
        (P2, 1, "FU-D030", "unreachable"),
        (P2, 1, "FU-D060", "unreachable"),
        (P2, 1, "FU-D090", "unreachable"),
        (P5, 1, "FU-D007", "reached"),
        (P5, 1, "FU-D030", "reached"),
        (P6, 1, "FU-D007", "reached"),
        (P6, 2, "FU-D030", "reached"),
    ):
        w.check_in_concluded(pid, episode, call_id, outcome)

    # Referrals: closed after 12, 30, 90 and (demo clock) 8 program days; one open.
    w.referral(P1, "housing", T0, T0 + 12 * DAY, "completed")
    w.referral(P1, "employment", T0, T0 + 30 * DAY, "declined")
    w.referral(P2, "legal", T0 + DAY)
    w.referral(P3, "medical", T0 + 2 * DAY, T0 + 92 * DAY, "expired")
    w.referral(P5, "parenting", T0 + DEMO_DAY, T0 + 9 * DEMO_DAY, "completed")

    w.task(P1, "step_down_decision", "done")
    w.task(P2, "unreachable_patient", "open")
    w.task(P2, "unreachable_patient", "open")
    w.task(P3, "reassessment", "open")
    w.task(P6, "reassessment", "done")


@pytest.fixture
def known_store(database_url: str) -> Any:
    """The known cohort, on SQLite and on PostgreSQL: the report's reads are the store's."""
    store = CareStore(database_url)
    store.migrate()
    write_known_cohort(store)
    yield store
    store.dispose()


def report_of(store: CareStore, **filters: Any) -> Any:
    return cohort_report(store, ProgramCatalog(PROGRAMS), CohortFilter(**filters), AS_OF)


def test_every_metric_of_a_known_cohort(known_store: CareStore) -> None:
    r = report_of(known_store)
    assert r.enrolled == 7
    assert r.by_phase == {
        "intake": 0,
        "intensive": 2,
        "step_down": 0,
        "aftercare": 1,
        "completed": 2,
        "discharged": 0,
        "withdrawn": 1,
        "escalated": 0,
        "lost_to_contact": 1,
    }
    assert r.ended == 4
    assert (r.completion.numerator, r.completion.denominator, r.completion.rate) == (2, 4, 0.5)
    assert (r.lost_to_contact.numerator, r.lost_to_contact.denominator) == (1, 4)
    # First step-down only (P6 stepped down twice); P5 counted in its program's days.
    assert r.days_to_step_down.values == [60.0, 63.0, 70.0, 70.0]
    assert r.days_to_step_down.median == 66.5
    assert r.days_to_completion.values == [470.0, 480.0]
    assert r.days_to_completion.median == 475.0

    assert (r.attendance.numerator, r.attendance.denominator) == (10, 13)
    assert r.attendance.rate == pytest.approx(10 / 13)
    assert (r.sessions_excused, r.sessions_pending) == (1, 1)
    assert [(w.week, w.attended, w.missed) for w in r.attendance_by_week] == [
        (1, 5, 2),
        (2, 4, 1),
        (5, 1, 0),
    ]
    assert [w.rate for w in r.attendance_by_week] == [pytest.approx(5 / 7), 0.8, 1.0]

    assert (r.check_in_reach.numerator, r.check_in_reach.denominator) == (6, 11)
    assert r.check_ins_by_outcome == {"reached": 6, "unreachable": 4, "declined": 1}

    assert (r.relapse.numerator, r.relapse.denominator) == (2, 7)
    assert r.relapses == 2
    assert r.days_to_relapse.values == [30.0, 100.0]
    assert r.days_to_relapse.median == 65.0

    # Month 0 (day 7): P1 (0, 6, 18) and P6 (2, 12, 10); month 1 (day 30): P1 (0, 4, 20),
    # P5 (0, 3, 24) and P6's second episode (0, 8, 16).
    months = [
        (m.month, m.n, *((t.mean, t.median) for t in (m.use, m.risk, m.protective)))
        for m in r.bam_by_month
    ]
    assert months == [
        (0, 2, (1.0, 1.0), (9.0, 9.0), (14.0, 14.0)),
        (1, 3, (0.0, 0), (5.0, 4), (20.0, 20)),
    ]

    loops = r.referrals
    assert (loops.closed.numerator, loops.closed.denominator) == (4, 5)
    assert (loops.completed.numerator, loops.completed.denominator) == (2, 4)
    assert loops.by_outcome == {"completed": 2, "declined": 1, "expired": 1, "open": 1}
    assert loops.days_to_close.values == [8.0, 12.0, 30.0, 90.0]
    assert loops.days_to_close.median == 21.0
    assert loops.days_to_close_by_outcome == {
        "completed": [8.0, 12.0],
        "declined": [30.0],
        "expired": [90.0],
    }

    assert {k: (t.opened, t.still_open) for k, t in r.tasks.items()} == {
        "reassessment": (2, 1),
        "step_down_decision": (1, 0),
        "unreachable_patient": (2, 2),
    }
    assert len(r.notes) == 1 and "retired-iop" in r.notes[0] and "calendar days" in r.notes[0]


def test_filters_choose_the_cohort(known_store: CareStore) -> None:
    south = report_of(known_store, site_id="south")
    assert south.enrolled == 1 and south.by_phase["aftercare"] == 1
    assert south.days_to_step_down.values == [60.0]
    assert (south.attendance.numerator, south.attendance.denominator) == (2, 2)
    assert report_of(known_store, case_manager_id="CM-02").enrolled == 1
    demo = report_of(known_store, program_id="demo-iop")
    assert demo.enrolled == 1 and demo.days_to_completion.values == [480.0]
    assert demo.notes == []  # the retired program's patient is not in this cohort
    # Enrolled 6 and 7 January (P2, P3); P4 enrolled on the 8th, the exclusive end.
    window = report_of(
        known_store,
        enrolled_from=datetime(2026, 1, 6).date(),
        enrolled_to=datetime(2026, 1, 8).date(),
    )
    assert window.enrolled == 2
    assert window.by_phase["lost_to_contact"] == 1 and window.by_phase["intensive"] == 1
    assert window.relapses == 1
    assert (window.referrals.closed.numerator, window.referrals.closed.denominator) == (1, 2)
    nobody = report_of(known_store, site_id="nowhere")
    assert nobody.enrolled == 0 and nobody.completion.rate is None


def test_the_cohort_read_leaves_contact_details_in_the_store(known_store: CareStore) -> None:
    cohort = load_cohort(known_store, ProgramCatalog(PROGRAMS), CohortFilter(), AS_OF)
    dumped = cohort.model_dump_json() + report_of(known_store).model_dump_json()
    for phi in ("Avery", "Quinlan", "1988-04-02", "555 010"):
        assert phi not in dumped


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"enrolled_from": "2026-13-01"}, "--enrolled-from: '2026-13-01' is not a date"),
        ({"enrolled_to": "soon"}, "--enrolled-to: 'soon' is not a date"),
        (
            {"enrolled_from": "2026-02-01", "enrolled_to": "2026-01-01"},
            "--enrolled-to (2026-01-01) must be after --enrolled-from (2026-02-01)",
        ),
        ({"site": "North Side"}, "--site: 'North Side' is not a site identifier"),
        ({"case_manager": "bob"}, "--case-manager: 'bob' is not a case manager identifier"),
        ({"program": "IOP!"}, "--program: 'IOP!' is not a program identifier"),
    ],
)
def test_bad_filters_are_refused_in_one_line(filters: dict[str, str], message: str) -> None:
    with pytest.raises(ReportError) as refused:
        cohort_filter(**filters)
    assert str(refused.value).startswith(message), str(refused.value)
    assert "\n" not in str(refused.value)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_html_has_every_section_and_its_charts(known_store: CareStore, tmp_path: Path) -> None:
    r = report_of(known_store)
    page = render_html(r)
    for section in (
        "summary",
        "phases",
        "milestones",
        "attendance",
        "check-ins",
        "bam",
        "relapse",
        "referrals",
        "lost",
        "tasks",
    ):
        assert f'<section id="{section}">' in page, section
    images = page.count('src="data:image/png;base64,')
    assert images == len(CHARTS)
    assert "77% (10 of 13)" in page  # attendance
    assert "55% (6 of 11)" in page  # check-in reach
    assert "66.5 d (n=4)" in page  # median days to step-down
    assert "<script" not in page and "http" not in page.split("<body>", 1)[1]  # self-contained
    for phi in ("Avery", "Quinlan", P1):
        assert phi not in page

    written = write_pngs(r, tmp_path / "charts")
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in CHARTS)
    for path in written:
        data = path.read_bytes()
        width, height = _png_size(data)
        assert width >= 600 and height >= 300, (path.name, width, height)
        assert len(data) > 15_000, (path.name, len(data))


def test_charts_of_an_empty_history_still_draw(tmp_path: Path) -> None:
    """A cohort just enrolled: nothing to plot yet, and every chart says so."""
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    CohortWriter(store).patient(P1, T0)
    r = report_of(store)
    store.dispose()
    assert r.enrolled == 1 and r.attendance.rate is None and r.bam_by_month == []
    written = write_pngs(r, tmp_path / "charts")
    assert len(written) == len(CHARTS)
    assert all(_png_size(p.read_bytes())[0] >= 600 for p in written)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "starter.py"), "report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )


@pytest.mark.slow
def test_the_cli_renders_from_the_store(known_store: CareStore, tmp_path: Path) -> None:
    """No Temporal server runs here: the report reads the store only."""
    import os

    env = {
        **os.environ,
        "CAREPATH_DATA_DIR": str(tmp_path / "data"),
        "CAREPATH_DATABASE_URL": str(known_store.engine.url),
        "CAREPATH_SERVER_PORT": "1",  # nothing listens there: a connection attempt would fail
    }
    html = tmp_path / "outcomes.html"
    shown = _cli(env, "--html", str(html), "--png-dir", str(tmp_path / "png"))
    assert shown.returncode == 0, shown.stderr
    for text in ("completion rate", "50% (2 of 4)", "Attendance by treatment week", "BAM"):
        assert text in shown.stdout, text
    assert f"wrote {html}" in shown.stderr
    assert html.read_text().count("data:image/png;base64,") == len(CHARTS)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(
        f"{n}.png" for n in CHARTS
    )

    machine = _cli(env, "--json", "--site", "south")
    assert machine.returncode == 0, machine.stderr
    data = json.loads(machine.stdout)
    assert data["enrolled"] == 1 and data["attendance"]["rate"] == 1.0
    assert data["days_to_step_down"] == {"values": [60.0], "n": 1, "median": 60.0}

    empty = _cli(env, "--site", "nowhere")
    assert empty.returncode == 0, empty.stderr
    assert empty.stderr.strip() == "no patients match (site nowhere): nothing to report"

    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in (
        (("--enrolled-from", "2026-02-30"), "error: --enrolled-from: '2026-02-30' is not a date"),
        (
            ("--enrolled-from", "2026-02-01", "--enrolled-to", "2026-01-01"),
            "error: --enrolled-to (2026-01-01) must be after",
        ),
        (("--html", str(tmp_path / "no" / "such" / "r.html")), "error: --html: no directory"),
    ):
        refused = _cli(env, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert refused.stderr.startswith(message), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


async def test_the_report_agrees_with_a_real_journey(env: WorkflowEnvironment, tmp_path) -> None:
    """Through intensive and step-down on the time-skipping server, then the report over
    the store the journey wrote: its attendance and sessions are the journey's own."""
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            _, status, reported = await c.enrol_and_drive(
                env, enrolment, choose=steady_attendance, until=lambda s: s.phase == Phase.aftercare
            )
        r = report_of(c.store)
        booked = c.store.appointments(enrolment.patient_id)

    assert r.enrolled == 1 and r.by_phase["aftercare"] == 1
    summary = status.attendance
    assert (r.attendance.numerator, r.attendance.denominator) == (
        summary.attended,
        summary.attended + summary.missed,
    )
    assert r.attendance.numerator == sum(1 for b in booked if b.status == "attended")
    assert r.attendance.denominator == sum(1 for b in booked if b.status in ("attended", "missed"))
    assert r.attendance.numerator == sum(1 for v in reported.values() if v == "attended")
    # Every booked week appears, in order, and the weeks add up to the whole.
    weeks = len({(s.phase, s.week) for s in status.sessions})
    assert [w.week for w in r.attendance_by_week] == list(range(1, weeks + 1))
    assert sum(w.attended for w in r.attendance_by_week) == summary.attended
    assert sum(w.missed for w in r.attendance_by_week) == summary.missed
    # Step-down: the journey's own phase history, in days from enrolment.
    stepped = next(p for p in status.phase_history if p.phase == Phase.step_down)
    enrolled = status.phase_history[0]
    assert enrolled.phase == Phase.intake
    assert r.days_to_step_down.values == [pytest.approx(stepped.day - enrolled.day, abs=0.01)]


def test_the_cli_reads_only_a_store_the_workers_made(tmp_path: Path) -> None:
    """A mistyped database never answers with an empty caseload, and is never created."""
    import os

    missing = tmp_path / "nowhere" / "carepath.db"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    answers = {}
    for name, db in (("missing", missing), ("empty", empty)):
        env = {**os.environ, "CAREPATH_DATABASE_URL": f"sqlite:///{db}"}
        answers[name] = _cli(env)
    assert answers["missing"].returncode == 2
    assert answers["missing"].stderr.strip() == f"error: no care-operations store at {missing} yet"
    assert not missing.parent.exists()
    assert answers["empty"].returncode == 2
    assert "holds no CarePath schema" in answers["empty"].stderr
    assert len(answers["empty"].stderr.strip().splitlines()) == 1
