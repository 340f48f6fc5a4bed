"""Every behaviour change made under journeys in flight, by name: what it changed, when it
arrived, and when its old branch may go.

A patch moves through Temporal's lifecycle: `workflow.patched(ID)` while runs from before may
still take the old branch; `workflow.deprecate_patch(ID)` (old branch deleted) once no run
that began before the patch can be running; then the call is removed once no run that began
under `patched` can be running either. The journey decides its patches per run (each phase
begins a run), so "no run from before" comes one longest run after the patch arrived.

Policy for journeys pinned to old code: we patch rather than pin. Worker Versioning's pinned
workflows would keep a months-long journey on a worker build for its whole life (every fix
to a shared activity or rule would need back-porting to each pinned build), while a patch
moves each journey onto new behaviour at its next run. Auto-upgrade versioning is what
patching gives us already, with the replay gate as its proof.

`python -m workflows.patches` lists them with the date each old branch may go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

LONGEST_RUN = timedelta(days=800)
"""The longest a journey run can last: aftercare, the longest phase, is at most 730 days by
the protocol's own bounds, and its last check-in's retries follow."""


@dataclass(frozen=True)
class Patch:
    id: str
    arrived: date
    what: str

    @property
    def old_branch_may_go(self) -> date:
        """From then on no run that began before the patch can still be running."""
        return self.arrived + LONGEST_RUN


def _journey(id: str, arrived: str, what: str) -> Patch:
    return Patch(id, date.fromisoformat(arrived), what)


ENGAGEMENT_ALERTS = "engagement-alerts"
RELAPSE_FROM_CHECK_IN = "relapse-from-check-in"
STEP_DOWN_CRITERIA = "step-down-criteria"
CLOSE_TASKS_AT_END = "close-tasks-at-end"
REFERRALS_AT_INTAKE = "referrals-at-intake"
FAMILY_SESSIONS = "family-sessions"
CHECK_IN_FINDINGS = "check-in-findings"
LOST_TO_CONTACT = "lost-to-contact"
CALL_REMINDERS = "call-reminders"
ALUMNI_INVITATIONS = "alumni-invitations"
PROTOCOL_AT_CHECK_IN = "protocol-at-check-in"
REFERRALS_OWN_WORKFLOWS = "referrals-own-workflows"
WAKE_BY_TIMER_ALWAYS = "wake-by-timer-always"
WEEK_IN_ONE_WRITE = "week-in-one-write"
STORE_WRITES_IN_TASK = "store-writes-in-task"
CLINIC_TIME = "clinic-time"
END_REFERRALS = "end-referrals-with-journey"
REFERRALS_ON_SITE_CLOCK = "referrals-on-site-clock"
GROUP_TRACKS = "group-tracks"
GROUP_NO_FIT_TASK = "group-no-fit-task"
COUNSELLOR_CALENDARS = "counsellor-calendars"
COUNSELLORS_FOLLOW_CLOSURES = "counsellors-follow-closures"
SMS_BEFORE_RETRY = "sms-before-retry"
CALL_OUTCOME_BY_CALLBACK = "call-outcome-by-callback"
CHECK_IN_IN_JOURNEY = "check-in-in-journey"
SUPPORT_SURVEYS = "support-surveys"

JOURNEY = (
    _journey(ENGAGEMENT_ALERTS, "2026-11-24", "outreach and review tasks from attendance"),
    _journey(RELAPSE_FROM_CHECK_IN, "2026-11-24", "use at a check-in re-links to care"),
    _journey(STEP_DOWN_CRITERIA, "2026-11-24", "step-down only when the criteria hold"),
    _journey(CLOSE_TASKS_AT_END, "2026-11-24", "an ended journey closes its open tasks"),
    _journey(REFERRALS_AT_INTAKE, "2026-11-24", "referrals from the intake's social needs"),
    _journey(FAMILY_SESSIONS, "2026-11-24", "family sessions with consent"),
    _journey(CHECK_IN_FINDINGS, "2026-11-24", "tasks from a check-in's BAM and PHQ-9"),
    _journey(LOST_TO_CONTACT, "2026-11-24", "unreachable check-ins in a row end the journey"),
    _journey(CALL_REMINDERS, "2026-11-24", "reminders before check-in calls"),
    _journey(ALUMNI_INVITATIONS, "2026-11-24", "alumni and peer-support invitations"),
    _journey(PROTOCOL_AT_CHECK_IN, "2026-11-24", "program changes reach aftercare at check-ins"),
    _journey(REFERRALS_OWN_WORKFLOWS, "2026-11-25", "a referral is a workflow of its own"),
    _journey(WAKE_BY_TIMER_ALWAYS, "2026-11-25", "a due wake-up still waits a millisecond"),
    _journey(WEEK_IN_ONE_WRITE, "2026-11-25", "a week's attendance and bookings in one write"),
    _journey(STORE_WRITES_IN_TASK, "2026-12-01", "store writes inside the workflow task"),
    _journey(CLINIC_TIME, "2026-12-06", "the site's zone and closures"),
    _journey(END_REFERRALS, "2026-12-06", "an ended journey cancels its open referrals"),
    _journey(REFERRALS_ON_SITE_CLOCK, "2026-12-07", "a referral keeps the journey's clock"),
    _journey(GROUP_TRACKS, "2026-12-07", "seats in the program's group tracks, or a waitlist"),
    _journey(SUPPORT_SURVEYS, "2026-12-07", "satisfaction and support questionnaires by link"),
    _journey(GROUP_NO_FIT_TASK, "2026-12-07", "a task when no group track fits the patient"),
    _journey(COUNSELLOR_CALENDARS, "2026-12-07", "a counsellor for individual/family sessions"),
    _journey(COUNSELLORS_FOLLOW_CLOSURES, "2026-12-07", "closures free and re-staff counsellors"),
    _journey(CHECK_IN_IN_JOURNEY, "2026-12-07", "check-in calls inside the journey, no child"),
)
"""The PatientJourney's patches, oldest first. Runs that write inside the workflow task
(STORE_WRITES_IN_TASK) take every patch before it without asking (see `_since`)."""

CHECK_IN = (
    _journey(SMS_BEFORE_RETRY, "2026-11-24", "a text before the second call attempt"),
    _journey(CALL_OUTCOME_BY_CALLBACK, "2026-12-07", "a call's outcome comes by callback"),
)
"""The FollowUpCall's patches."""

ALL = JOURNEY + CHECK_IN


def due(today: date) -> list[Patch]:
    """The patches whose old branch may go by `today` (the next step of their lifecycle)."""
    return [p for p in ALL if p.old_branch_may_go <= today]


if __name__ == "__main__":  # pragma: no cover - an operator's listing
    for p in ALL:
        print(f"{p.id:28} arrived {p.arrived}  old branch may go {p.old_branch_may_go}  {p.what}")
    print(f"due now: {', '.join(p.id for p in due(date.today())) or 'none'}")
