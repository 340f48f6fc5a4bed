"""Engagement rules: outreach after consecutive misses, a review when attendance is low."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.testing import WorkflowEnvironment

from clinical.attendance import SessionRecord, SessionStatus
from clinical.careplan import week_sessions
from clinical.engagement import engagement_alerts
from clinical.journey import start_journey
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from tests.support import PROGRAMS, clinic, in_intensive_week, make_enrolment

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")


def _ledger(statuses: list[str]) -> list[SessionRecord]:
    st = start_journey(make_enrolment(), PROTOCOL, datetime(2026, 11, 24, 12, tzinfo=UTC))
    specs = [
        spec
        for week in (1, 2, 3)
        for spec in week_sessions(
            st.plan, Phase.intensive, 1, week, 6 + 7 * (week - 1), st.clock, PROTOCOL
        )
    ]
    return [
        SessionRecord.booked(spec).model_copy(update={"status": SessionStatus(status)})
        for spec, status in zip(specs, statuses, strict=False)
    ]


def test_outreach_once_per_streak_of_misses() -> None:
    ledger = _ledger(["attended", "missed", "missed", "missed", "attended", "missed", "missed"])
    alerts = engagement_alerts(ledger, ledger[-1].day + 1, PROTOCOL.engagement)
    outreach = [a for a in alerts if a.kind == "outreach"]
    assert [a.key for a in outreach] == [
        f"outreach-{ledger[2].session_id}",
        f"outreach-{ledger[6].session_id}",
    ]


def test_review_when_the_window_rate_is_low_and_not_again_within_the_window() -> None:
    ledger = _ledger(["attended", "missed", "attended", "missed", "missed", "attended"])
    now = ledger[-1].day + 0.5
    review = [a for a in engagement_alerts(ledger, now, PROTOCOL.engagement) if a.kind == "review"]
    assert len(review) == 1 and "below 60%" in review[0].detail
    assert not [
        a
        for a in engagement_alerts(ledger, now, PROTOCOL.engagement, last_review_day=now - 3)
        if a.kind == "review"
    ]
    good = _ledger(["attended", "attended", "missed", "attended", "attended"])
    assert not engagement_alerts(good, good[-1].day + 0.5, PROTOCOL.engagement)


async def test_two_misses_in_a_row_open_one_outreach_task(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            # Sessions 4 and 5 missed (reported), everything else attended: 3 of 5 attended
            # is not below 60%, so no review.
            await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "missed" if n in (4, 5) else "attended",
                until=in_intensive_week(3),
            )
        opened = c.store.tasks(patient_id=enrolment.patient_id, include_done=True)
        assert [t.kind for t in opened] == ["outreach"], [t.detail for t in opened]
        assert "2 sessions missed in a row" in opened[0].detail


async def test_low_attendance_opens_a_review_at_most_once_per_window(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            # Attended, missed, attended, missed ...: 50% and never two misses in a row.
            _, _, reported = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "attended" if n % 2 else "missed",
                until=in_intensive_week(4),
            )
        kinds = [t.kind for t in c.store.tasks(patient_id=enrolment.patient_id, include_done=True)]
    misses = sum(1 for v in reported.values() if v == "missed")
    assert misses >= 6 and "outreach" not in kinds
    # Three weeks of low attendance: a review, then at most one more after 14 days,
    # although every one of the misses re-evaluated the rules.
    assert 1 <= kinds.count("review") <= 2
