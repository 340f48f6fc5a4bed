"""Several Appointments in one EHR webhook: a FHIR Bundle, as a subscription's notification
carries its focus resources (R4B's `history`, R5's `subscription-notification`) or as a
`batch` or `collection`. Each Appointment is an event of its own, checked and signalled as
a single one would be, under an event ID derived from the webhook's (the sender's retry of
the notification gives each the same ID, so a journey applies it once). The answer says
what became of each entry, in order, as a FHIR batch-response would: a refusal (4xx) is for
the sender to read, not to retry. If Temporal did not take one of them, the whole
notification is answered 503 and its ID freed: the retry sends them all again, and the
journeys drop those they took the first time.

One HTTP request, one signature check, one idempotency claim and one access-log
transaction for up to `BUNDLE_ENTRIES` events: what a single-event webhook spends per event
(BENCHMARKS.md, "Webhook ingestion")."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from infra.store.access_log import Touch
from infra.webhooks import WebhookSender
from web.api import Answer, signal_to
from web.api_security import Problem
from web.context import Console

BUNDLE_ENTRIES = 100
"""Appointments in one notification at most (an EHR batches a clinic's morning: tens)."""

BUNDLE_TYPES = ("history", "subscription-notification", "batch", "collection")
# A notification's own status entry, which carries no event.
NOTIFICATION_STATUS = ("SubscriptionStatus", "Parameters")


class SignalledEvent(Protocol):
    """An entry's event (web.webhooks.Event): a signal to the patient's workflow."""

    @property
    def patient_id(self) -> str: ...
    @property
    def signal(self) -> Any: ...
    @property
    def payload(self) -> BaseModel | None: ...
    @property
    def workflow_id(self) -> str | None: ...
    @property
    def accepted(self) -> str: ...


Resource = Callable[[Console, WebhookSender, Any, str], SignalledEvent]


class EntryAnswer(BaseModel):
    """What became of one entry of the Bundle (`entry`: its index there)."""

    entry: int
    status: int
    detail: str


def is_bundle(resource: Any) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == "Bundle"


def entry_event_id(event_id: str, index: int) -> str:
    """An entry's event ID: the webhook's (shortened to a digest when long) and the entry's
    index (up to five digits, however many status entries come first), at most 64
    characters, the same for every retry of the notification."""
    base = event_id if len(event_id) <= 58 else hashlib.sha256(event_id.encode()).hexdigest()[:58]
    return f"{base}:{index}"


def appointments_of(bundle: dict[str, Any]) -> list[tuple[int, Any]]:
    """The Bundle's entries that are events (by index), its shape checked in one line."""
    if bundle.get("type") not in BUNDLE_TYPES:
        raise Problem(422, f"type: a Bundle of type {', '.join(BUNDLE_TYPES)}")
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        raise Problem(422, "entry: the Bundle's entries, a list")
    events = [
        (n, e.get("resource") if isinstance(e, dict) else None)
        for n, e in enumerate(entries)
        if not (
            isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") in NOTIFICATION_STATUS
        )
    ]
    if not events:
        raise Problem(422, "entry: no Appointment in the Bundle")
    if len(events) > BUNDLE_ENTRIES:
        raise Problem(
            422, f"entry: at most {BUNDLE_ENTRIES} Appointments in one Bundle ({len(events)} sent)"
        )
    return events


async def take_bundle(
    console: Console,
    sender: WebhookSender,
    bundle: dict[str, Any],
    event_id: str,
    appointment: Resource,
) -> tuple[int, Answer, list[Touch]]:
    """Each Appointment checked, then the accepted ones signalled: the answer's
    status (202 if any was accepted, else 200: taken, nothing to apply), its body, and the
    patients touched for the access log, in the entries' order."""
    answers: dict[int, EntryAnswer] = {}
    touched: dict[int, Touch] = {}
    events: list[tuple[int, SignalledEvent]] = []
    for n, resource in appointments_of(bundle):
        try:
            events.append((n, appointment(console, sender, resource, entry_event_id(event_id, n))))
        except Problem as refused:
            answers[n] = EntryAnswer(entry=n, status=refused.status, detail=refused.detail)
            touched[n] = Touch(None, "refused")
    # Each workflow's events in the Bundle's order (a session fulfilled, then corrected),
    # the workflows' at once.
    by_workflow: dict[str, list[tuple[int, SignalledEvent]]] = {}
    for n, event in events:
        by_workflow.setdefault(event.workflow_id or event.patient_id, []).append((n, event))
    sent = dict(
        pair
        for group in await asyncio.gather(*(_in_order(console, g) for g in by_workflow.values()))
        for pair in group
    )
    for n, event in events:
        problem = sent[n]
        if problem is None:
            answers[n] = EntryAnswer(entry=n, status=202, detail=event.accepted)
            touched[n] = Touch(event.patient_id)
        elif problem.status < 500:
            answers[n] = EntryAnswer(entry=n, status=problem.status, detail=problem.detail)
            touched[n] = Touch(event.patient_id, "refused")
        else:  # not taken: the sender retries the notification
            raise Problem(503, f"entry {n}: {problem.detail}")
    accepted = sum(a.status == 202 for a in answers.values())
    message = f"accepted {accepted} of {len(answers)} events" + (
        f"; {len(answers) - accepted} refused (see result.entries)"
        if accepted < len(answers)
        else ""
    )
    entries = [answers[n].model_dump() for n in sorted(answers)]
    return (
        202 if accepted else 200,
        Answer(message=message, result={"entries": entries}),
        [touched[n] for n in sorted(touched)],
    )


async def _in_order(
    console: Console, events: list[tuple[int, SignalledEvent]]
) -> list[tuple[int, Problem | None]]:
    """One workflow's events signalled one after the other: each entry's refusal, if any."""
    sent: list[tuple[int, Problem | None]] = []
    for n, e in events:
        try:
            await signal_to(console, e.patient_id, e.signal, e.payload, e.workflow_id)
            sent.append((n, None))
        except Problem as refused:
            sent.append((n, refused))
    return sent
