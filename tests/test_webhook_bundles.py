"""An EHR's Bundle of Appointments, taken apart without Temporal (the whole path, signed
and signalled, is in test_webhooks.py): its shape checked in one line, an event ID for each
entry, each workflow's events signalled in the Bundle's order while different workflows'
go at once, an entry's refusal answered for that entry alone, and a signal Temporal did not
take turning the whole notification into a 503."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, cast

import pytest

from infra.webhooks import EventKind, WebhookSender
from web.api_security import Problem
from web.context import Console
from web.webhook_bundles import (
    BUNDLE_ENTRIES,
    appointments_of,
    entry_event_id,
    take_bundle,
)

EHR = WebhookSender("ehr-north", EventKind.ehr_appointments, "north", "whsec_x")
CONSOLE = cast(Console, object())  # the stand-ins below never look at it


@dataclass(frozen=True)
class Signalled:
    patient_id: str
    payload: Any
    signal: Any = "attendance_event"
    workflow_id: str | None = None
    accepted: str = "accepted"


def stand_in(console: Console, sender: WebhookSender, resource: Any, event_id: str) -> Signalled:
    """An entry as web.webhooks reads it: {"patient", "mark"}, or refused as the store
    would refuse an unknown patient."""
    if resource.get("patient") == "P-UNKNOWN":
        raise Problem(404, "no patient P-UNKNOWN at site north")
    return Signalled(resource["patient"], (event_id, resource["mark"]), accepted=resource["mark"])


def notification(*resources: dict[str, Any]) -> dict[str, Any]:
    status = {"resourceType": "SubscriptionStatus"}
    entries = [{"resource": r} for r in (status, *resources)]
    return {"resourceType": "Bundle", "type": "subscription-notification", "entry": entries}


def test_an_entry_s_event_id_is_the_notification_s_and_its_index() -> None:
    assert entry_event_id("msg_2Kq", 3) == "msg_2Kq:3"
    long = "x" * 64
    derived = entry_event_id(long, 99)
    assert len(derived) <= 64 and derived.endswith(":99")
    assert len(entry_event_id(long, 99_999)) == 64
    assert derived == entry_event_id(long, 99) != entry_event_id("y" * 64, 99)


@pytest.mark.parametrize(
    ("bundle", "detail"),
    [
        ({"type": "transaction", "entry": []}, "type: a Bundle of type history, "),
        ({"type": "batch", "entry": {}}, "entry: the Bundle's entries, a list"),
        (notification(), "entry: no Appointment in the Bundle"),
        (
            {"type": "batch", "entry": [{"resource": {}}] * (BUNDLE_ENTRIES + 1)},
            f"entry: at most {BUNDLE_ENTRIES} Appointments in one Bundle (101 sent)",
        ),
    ],
)
def test_a_bundle_s_shape_is_refused_in_one_line(bundle: dict[str, Any], detail: str) -> None:
    with pytest.raises(Problem) as refused:
        appointments_of(bundle)
    assert refused.value.status == 422 and refused.value.detail.startswith(detail)


async def test_each_workflow_s_events_in_order_and_the_workflows_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arrived: list[tuple[str, str]] = []
    in_flight, most = 0, 0
    rng = random.Random(7)

    async def signal(console: Console, patient_id: str, signal: Any, event: Any, wid: Any) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(rng.random() / 100)  # the server answers in its own time
        in_flight -= 1
        if patient_id == "P-ENDED":
            raise Problem(409, "refused: the journey has ended (completed)")
        arrived.append((patient_id, event[1]))

    monkeypatch.setattr("web.webhook_bundles.signal_to", signal)
    marks = ["fulfilled", "noshow", "fulfilled", "noshow", "fulfilled"]
    resources = [{"patient": p, "mark": m} for m in marks for p in ("P-A", "P-B", "P-C")]
    resources += [{"patient": "P-UNKNOWN", "mark": "noshow"}, {"patient": "P-ENDED", "mark": "x"}]
    status, answer, touched = await take_bundle(
        CONSOLE, EHR, notification(*resources), "n-1", stand_in
    )
    assert status == 202
    assert answer.message == "accepted 15 of 17 events; 2 refused (see result.entries)"
    entries = answer.result["entries"]
    assert [e["entry"] for e in entries] == list(range(1, 18))
    assert [e["status"] for e in entries[-2:]] == [404, 409]
    for patient in ("P-A", "P-B", "P-C"):
        assert [m for p, m in arrived if p == patient] == marks
    assert most >= 3  # the three patients' journeys were signalled at once
    assert [(t.patient_id, t.outcome) for t in touched[-2:]] == [
        (None, "refused"),
        ("P-ENDED", "refused"),
    ]
    assert len(touched) == 17


async def test_a_signal_not_taken_makes_the_notification_a_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def signal(console: Console, patient_id: str, *args: Any) -> None:
        if patient_id == "P-B":
            raise Problem(503, "the Temporal server did not take the event: down")

    monkeypatch.setattr("web.webhook_bundles.signal_to", signal)
    resources = [{"patient": p, "mark": "fulfilled"} for p in ("P-A", "P-B")]
    with pytest.raises(Problem) as failed:
        await take_bundle(CONSOLE, EHR, notification(*resources), "n-2", stand_in)
    assert failed.value.status == 503
    assert failed.value.detail == "entry 2: the Temporal server did not take the event: down"


async def test_nothing_accepted_is_answered_200() -> None:
    resources = [{"patient": "P-UNKNOWN", "mark": "noshow"}]
    status, answer, touched = await take_bundle(
        CONSOLE, EHR, notification(*resources), "n-3", stand_in
    )
    assert (status, answer.message) == (
        200,
        "accepted 0 of 1 events; 1 refused (see result.entries)",
    )
    assert [(t.patient_id, t.outcome) for t in touched] == [(None, "refused")]
