"""Family sessions: only with the patient's consent, at the program's cadence, invitations to
the family contact, and a withdrawal that cancels what is still ahead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.attendance import SessionStatus
from clinical.careplan import (
    FAMILY_EDUCATION,
    FAMILY_THERAPY,
    treatment_week_id,
    treatment_week_of,
    week_sessions,
    weeks_over,
)
from clinical.journey import start_journey
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from clinical.requests import FamilyConsentChange
from tests.support import PROGRAMS, clinic, drive_journey, enrolment_data, in_intensive_week
from workflows.patient_journey import PatientJourneyWorkflow

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")


def family_enrolment(consented: bool = True, **overrides: object) -> Enrolment:
    return Enrolment.model_validate(
        enrolment_data(consents={"family_involvement": consented}, **overrides)
    )


def test_family_sessions_follow_the_cadence_and_the_patients_commitments() -> None:
    evenings = [
        {"weekday": d, "start": "06:00", "end": "09:00", "kind": "childcare"}
        for d in ("mon", "tue", "wed", "thu", "fri")
    ]
    enrolment = family_enrolment(commitments=evenings)
    state = start_journey(enrolment, PROTOCOL, datetime(2026, 3, 2, tzinfo=UTC))

    def week(phase: Phase, n: int) -> list[str]:
        specs = week_sessions(
            state.plan, phase, 1, n, 7 * n, state.clock, PROTOCOL, family_of=state.assessment
        )
        return [s.session_type for s in specs if s.session_type.startswith("family")]

    # Weekly family therapy in intensive, education every 4th week; every other week later.
    assert [week(Phase.intensive, n) for n in (1, 2, 5)] == [
        [FAMILY_THERAPY, FAMILY_EDUCATION],
        [FAMILY_THERAPY],
        [FAMILY_THERAPY, FAMILY_EDUCATION],
    ]
    assert [week(Phase.step_down, n) for n in (1, 2, 3)] == [
        [FAMILY_THERAPY, FAMILY_EDUCATION],
        [],
        [FAMILY_THERAPY],
    ]
    specs = week_sessions(
        state.plan, Phase.intensive, 1, 1, 7, state.clock, PROTOCOL, family_of=state.assessment
    )
    therapy = next(s for s in specs if s.session_type == FAMILY_THERAPY)
    patient_days = {int(s.day) for s in specs if not s.session_type.startswith("family")}
    assert int(therapy.day) in patient_days  # next to one of the patient's own sessions
    minutes = round((therapy.day % 1) * 24 * 60)
    assert minutes >= 9 * 60  # after the morning childcare
    education = next(s for s in specs if s.session_type == FAMILY_EDUCATION)
    assert education.attendee == "family" and therapy.attendee == "patient"
    # Without consent, none.
    plain = week_sessions(state.plan, Phase.intensive, 1, 1, 7, state.clock, PROTOCOL)
    assert not [s for s in plain if s.session_type.startswith("family")]


async def test_withdrawn_consent_cancels_family_sessions_ahead(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = family_enrolment()
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, first, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(1))
            with pytest.raises(WorkflowUpdateFailedError) as already:
                await handle.execute_update(
                    PatientJourneyWorkflow.change_family_consent,
                    FamilyConsentChange(case_manager_id="CM-01", granted=True),
                )
            withdrawn = await handle.execute_update(
                PatientJourneyWorkflow.change_family_consent,
                FamilyConsentChange(case_manager_id="CM-01", granted=False),
            )
            later, _ = await drive_journey(env, handle, until=in_intensive_week(3))
        booked = {r.session_id: r for r in c.store.appointments(pid)}
        invites = c.store.outbox(pid, channel="family")
        given = c.store.consents(pid, kind="family_involvement")
        audit = [a.action for a in c.store.audit_trail(pid)]

    family_first = [s for s in first.sessions if s.session_type.startswith("family")]
    assert {s.session_type for s in family_first} == {FAMILY_THERAPY, FAMILY_EDUCATION}
    assert "already given" in str(already.value.cause)
    ahead = [s for s in family_first if s.day > first.program_day]
    assert ahead, "the consent is withdrawn while family sessions are still ahead"
    assert withdrawn == f"family consent withdrawn: {len(ahead)} family session(s) cancelled"
    for s in ahead:
        assert booked[s.session_id].status == SessionStatus.cancelled
    # Weeks booked after the withdrawal have no family sessions.
    assert not [s for s in later.sessions if s.week >= 2 and s.session_type.startswith("family")]
    assert sorted(i.kind for i in invites) == sorted(
        f"invite_{s.session_type}" for s in family_first
    )
    assert all(pid not in i.body and "Avery" not in i.body for i in invites)
    assert [g.granted for g in sorted(given, key=lambda g: g.recorded_at)] == [True, False]
    assert "consent_withdrawn" in audit
    assert audit.count("disclosed_to_family") == len(invites)
    # Family education is the family's attendance, not the patient's.
    patient_sessions = [s for s in later.sessions if s.attendee == "patient"]
    summary = later.attendance
    assert (
        summary.attended + summary.missed + summary.excused + summary.pending + summary.cancelled
        == len(patient_sessions)
    )


def test_every_session_names_its_treatment_week_family_sessions_too() -> None:
    # An attendance sheet covers one treatment week: `treatment_week_of` must find it in
    # every session ID `week_sessions` makes, episode and phase included.
    state = start_journey(family_enrolment(), PROTOCOL, datetime(2026, 3, 2, tzinfo=UTC))
    for phase, episode, week in ((Phase.intensive, 1, 5), (Phase.step_down, 2, 3)):
        specs = week_sessions(
            state.plan, phase, episode, week, 7 * week, state.clock, PROTOCOL, state.assessment
        )
        assert any(s.session_type.startswith("family") for s in specs)
        wanted = treatment_week_id(phase, episode, week)
        assert {treatment_week_of(s.session_id) for s in specs} == {wanted}
    assert treatment_week_id(Phase.step_down, 2, 11) == "STP2-W11"


def test_a_week_is_ready_for_its_sheet_once_every_session_has_happened() -> None:
    state = start_journey(family_enrolment(), PROTOCOL, datetime(2026, 3, 2, tzinfo=UTC))
    one, two = (
        week_sessions(
            state.plan, Phase.intensive, 1, n, 7 * n, state.clock, PROTOCOL, state.assessment
        )
        for n in (1, 2)
    )
    last_of_one = max(s.day for s in one)
    # Given out of order: week one comes back whole, by day; week two is not over.
    (ready,) = weeks_over([*reversed(one), *two], last_of_one)
    assert ready == sorted(one, key=lambda s: s.day)
    assert weeks_over(one, last_of_one - 0.01) == []
