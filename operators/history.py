"""A patient's journey as a story: Temporal's own event histories (every run of the journey,
and its referrals and, for journeys from before check-ins ran inside them, its check-ins'
own workflows) read into one timeline of what happened, when and who did it.

Payloads are opened with the client's data converter (so the codec), and only the fields a
timeline needs are shown: phases and reasons, sessions, attendance, calls, tasks, referrals
and every case manager's request with its actor. Contact details never appear."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from clinical.actors import ENGINE
from clinical.identifiers import journey_workflow_id
from infra.store import CareStore


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str
    what: str
    who: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {**asdict(self), "at": self.at.isoformat()}


# Requests: which fields tell the story (never the contact).
_REQUEST_FIELDS = {
    "record_attendance": ("session_id", "status"),
    "discharge": ("reason",),
    "revise_commitments": (),
    "review_progress": ("decision", "weeks", "level"),
    "report_relapse": (),
    "refer": ("need",),
    "complete_task": ("task_key",),
    "change_family_consent": ("granted",),
    "adjust_check_ins": ("days", "reason"),
    "report_alumni_attendance": ("meeting_id",),
    "partner_response": ("answer",),
    "record_consent": (),
    "cancel": ("reason",),
    "call_outcome": ("outcome",),
}


async def _open(client: Client, payloads: list[Payload]) -> list[Any]:
    opened = (
        await client.data_converter.payload_codec.decode(payloads)
        if (client.data_converter.payload_codec)
        else payloads
    )
    return [json.loads(p.data) if p.data else None for p in opened]


def _fields(value: Any, names: tuple[str, ...]) -> str:
    if not isinstance(value, dict):
        return ""
    return ", ".join(f"{n}={value[n]}" for n in names if value.get(n) is not None)


async def _story_of(client: Client, workflow_id: str, run_id: str | None) -> list[Entry]:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    # A child's name within the journey: E1-FU-D007, REF-housing.
    source = workflow_id.split("-", 3)[-1]
    entries: list[Entry] = []
    for event in history.events:
        entries += await _read(client, source, event)
    return entries


async def _read(client: Client, source: str, event: HistoryEvent) -> list[Entry]:
    at = event.event_time.ToDatetime().replace(tzinfo=UTC)
    kind = event.WhichOneof("attributes")
    if kind == "workflow_execution_started_event_attributes":
        attrs = event.workflow_execution_started_event_attributes
        return [Entry(at, source, f"{attrs.workflow_type.name} run began", ENGINE, "")]
    if kind == "workflow_execution_update_accepted_event_attributes":
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        name = request.input.name
        (arg,) = (await _open(client, list(request.input.args.payloads))) or [None]
        who = (arg or {}).get("case_manager_id") or (arg or {}).get("reported_by") or "?"
        detail = _fields(arg, _REQUEST_FIELDS.get(name, ()))
        if name == "record_attendance_sheet":
            marks = (arg or {}).get("marks", [])
            detail = " ".join(f"{m['session_id']}={m['status']}" for m in marks)
        return [Entry(at, source, name.replace("_", " "), str(who), detail)]
    if kind == "activity_task_scheduled_event_attributes":
        scheduled = event.activity_task_scheduled_event_attributes
        (arg,) = (await _open(client, list(scheduled.input.payloads))) or [None]
        return _activity(at, source, scheduled.activity_type.name, arg)
    if kind == "marker_recorded_event_attributes":
        return await _written_in_task(client, at, source, event)
    if kind == "child_workflow_execution_completed_event_attributes":
        child = event.child_workflow_execution_completed_event_attributes
        (result,) = (await _open(client, list(child.result.payloads))) or [None]
        detail = _fields(result, ("call_id", "outcome", "attempts", "referral_id"))
        return [Entry(at, source, f"{child.workflow_type.name} finished", ENGINE, detail)]
    if kind == "workflow_execution_signaled_event_attributes":
        signal = event.workflow_execution_signaled_event_attributes
        (arg,) = (await _open(client, list(signal.input.payloads))) or [None]
        detail = _fields(arg, ("referral_id", "outcome"))
        return [Entry(at, source, signal.signal_name.replace("_", " "), ENGINE, detail)]
    if kind == "workflow_execution_continued_as_new_event_attributes":
        return [Entry(at, source, "continued as new (next phase or run)", ENGINE, "")]
    if kind == "workflow_execution_completed_event_attributes":
        (result,) = (
            await _open(
                client,
                list(event.workflow_execution_completed_event_attributes.result.payloads),
            )
        ) or [None]
        return [Entry(at, source, "ended", ENGINE, _fields(result, ("outcome", "reason")))]
    return []


async def _workflows_started_by(client: Client, event: HistoryEvent) -> list[str]:
    """Check-ins of journeys from before `check-in-in-journey` are the journey's children
    (later ones are in its own history); referrals are started by an activity (earlier
    journeys started them as children too)."""
    if event.HasField("child_workflow_execution_started_event_attributes"):
        child = event.child_workflow_execution_started_event_attributes
        return [child.workflow_execution.workflow_id]
    scheduled = event.activity_task_scheduled_event_attributes
    if scheduled.activity_type.name == "start_referral_loop":
        (arg,) = (await _open(client, list(scheduled.input.payloads))) or [None]
        return [arg["workflow_id"]] if isinstance(arg, dict) else []
    return []


async def _written_in_task(
    client: Client, at: datetime, source: str, event: HistoryEvent
) -> list[Entry]:
    """A store write made inside the workflow task (a local activity) leaves a marker with
    its type and its result, not its input: those writes return what they recorded, under
    the input's own field names, so one reading serves both."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_local_activity" or "result" not in marker.details:
        return []
    # The SDK core's own marker data is plain JSON, never through the codec.
    data = json.loads(marker.details["data"].payloads[0].data)
    (result,) = (await _open(client, list(marker.details["result"].payloads))) or [None]
    return _activity(at, source, str(data.get("activity_type")), result)


def _activity(at: datetime, source: str, name: str, arg: Any) -> list[Entry]:
    arg = arg if isinstance(arg, dict) else {}
    if name == "record_phase_change":
        return [Entry(at, source, f"phase {arg.get('phase')}", ENGINE, str(arg.get("reason")))]
    if name == "book_sessions":
        ids = arg.get("session_ids") or [s["session_id"] for s in arg.get("sessions", [])]
        return [Entry(at, source, f"{len(ids)} sessions booked", ENGINE, " ".join(ids))]
    if name == "record_care_events":
        changes = arg.get("session_changes", [])
        detail = " ".join(f"{c['session_id']}={c['status']}" for c in changes)
        return [Entry(at, source, "attendance written", ENGINE, detail)] if changes else []
    if name == "open_case_manager_task":
        return [Entry(at, source, f"task {arg.get('kind')}", ENGINE, str(arg.get("detail")))]
    if name in ("place_call", "place_follow_up_call"):  # the latter: runs from before callbacks
        what = f"call {arg.get('call_id')} attempt {arg.get('attempt')}"
        # Told as the check-in's, whether the journey placed it or its FollowUpCall child.
        check_in = f"E{arg.get('episode', 1)}-{arg.get('call_id')}"
        return [Entry(at, check_in, what, ENGINE, "")]
    if name == "start_referral_loop":
        need = (arg.get("referral") or {}).get("need")
        return [Entry(at, source, f"{need} referral opened", ENGINE, "")]
    if name == "send_referral":
        return [Entry(at, source, f"referral sent to {arg.get('need')} partner", ENGINE, "")]
    if name == "remind_partner":
        return [Entry(at, source, "partner reminded", ENGINE, f"number={arg.get('number')}")]
    return []


async def partner_answers(client: Client, workflow_id: str) -> list[str]:
    """A referral's partner answers so far (accepted, no_show, ...), in order, from its
    latest run's history: the store keeps only where the loop ended, not an acceptance."""
    story = await _story_of(client, workflow_id, None)
    return [e.detail.removeprefix("answer=") for e in story if e.what == "partner response"]


# What only the store's audit trail knows (the rest is in the event histories already).
AUDIT_ONLY = (
    "enrolled",
    "placement_overridden",
    "consent_given",
    "consent_withdrawn",
    "disclosed_to_partner",
    "disclosed_to_family",
    "task_completed",
)


def audit_entries(store: CareStore, patient_id: str) -> list[Entry]:
    """The audit trail's own facts: consents, disclosures, tasks done, who enrolled."""
    entries = []
    for fact in store.audit_trail(patient_id, actions=AUDIT_ONLY):
        shown = ", ".join(f"{k}={v}" for k, v in fact.detail.items() if k != "reason")
        entries.append(Entry(fact.at, "audit", fact.action.replace("_", " "), fact.actor, shown))
    return entries


async def journey_story(
    client: Client, patient_id: str, store: CareStore | None = None
) -> list[Entry]:
    """Every run of the journey (found backwards from the latest), then its children, and
    (with the store) the audit trail's own facts, merged by time."""
    workflow_id = journey_workflow_id(patient_id)
    histories = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            break
    entries: list[Entry] = []
    children: list[str] = []
    for history in reversed(histories):
        for event in history.events:
            entries += await _read(client, "journey", event)
            children += await _workflows_started_by(client, event)
    for child_id in dict.fromkeys(children):
        entries += await _story_of(client, child_id, None)
    if store is not None:
        entries += audit_entries(store, patient_id)
    entries.sort(key=lambda e: e.at)
    return entries
