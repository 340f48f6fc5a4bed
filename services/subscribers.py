"""Sending events to subscribers: each pass claims the deliveries that are due, sends each
as a signed POST (Standard Webhooks' headers: `webhook-id` is the event ID, the signature an
HMAC-SHA256 over the ID, the timestamp and the body with the subscriber's secret, as CarePath
checks the webhooks it receives) and records how it went. Several senders run side by side
safely: a claimed delivery is theirs alone until its lease ends.

At least once: a delivery is marked sent only after the subscriber answered 2xx, so a sender
that dies in between leaves it to be sent again, with the same event ID, which the receiver
drops as a repeat. A delivery that keeps failing is retried with growing pauses (the outbox's
policy) and then becomes a dead letter; one refused (another 4xx) is a dead letter at once.

Part 2: each event discloses that the patient is in treatment, so it is sent only under a
consent of the patient's that covers the subscriber and its purpose on the day (kind
`events:<subscriber>`, clinical.consents);
otherwise it is withheld, and sent by no one unless an operator puts it back. Each sending is
on the patient's accounting of disclosures, written with the delivery's settlement."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from clinical.consents import subscriber_kind
from infra.channels import SendFailed, SendRefused, post_event
from infra.logging import get_logger
from infra.store import CareStore, DueDelivery, utcnow
from infra.webhooks import signed_headers
from operators.fhir_events import description, event_payload
from services.delivery import DeliveryPolicy, pause_after

log = get_logger("carepath.subscribers")

Post = Callable[[str, dict[str, str], bytes], None]


def _post(url: str, headers: dict[str, str], body: bytes) -> None:
    post_event(url, headers, body, timeout=10.0)


@dataclass
class EventPass:
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    withheld: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retrying + self.dead + self.withheld

    def add(self, other: EventPass) -> None:
        for name in ("sent", "retrying", "dead", "withheld"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class EventSender:
    def __init__(
        self,
        store: CareStore,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        post: Post = _post,
    ) -> None:
        self.store, self.clock, self.post = store, clock, post
        self.policy = policy or DeliveryPolicy()

    def send_due(self) -> EventPass:
        """One pass: claim what is due and settle each delivery."""
        result = EventPass()
        now = self.clock()
        claimed = self.store.claim_deliveries(now, lease=self.policy.lease, limit=self.policy.batch)
        for due in claimed:
            outcome = self._send(due, now)
            setattr(result, outcome, getattr(result, outcome) + 1)
        return result

    def send_all_due(self) -> EventPass:
        """Passes until one finds less than a full batch: everything due now, settled."""
        total = EventPass()
        while True:
            result = self.send_due()
            total.add(result)
            if result.claimed < self.policy.batch:
                return total

    def _send(self, due: DueDelivery, now: datetime) -> str:
        event, sub = due.event, due.subscriber
        why_not = self.store.why_not_consented(
            event.patient_id, subscriber_kind(sub.name), sub.purpose, now
        )
        if why_not is not None:
            self.store.delivery_given_up(due, "withheld", why_not)
            self._log("event_withheld", due, why=why_not)
            return "withheld"
        body = json.dumps(event_payload(event), separators=(",", ":")).encode()
        try:
            self.post(sub.url, signed_headers(sub.secret, event.event_id, now, body), body)
        except SendRefused as exc:
            return self._dead(due, str(exc))
        except SendFailed as exc:
            tries = due.attempts + 1
            if tries >= self.policy.attempts:
                return self._dead(due, f"{exc} (after {tries} tries)")
            self.store.delivery_retry_later(due, str(exc), now + pause_after(tries, self.policy))
            self._log("event_retrying", due, error=str(exc), tries=tries)
            return "retrying"
        if not self.store.delivery_sent(due, self.clock(), description(event)):
            self._log("event_claim_lapsed", due)
        self._log("event_sent", due)
        return "sent"

    def _dead(self, due: DueDelivery, why: str) -> str:
        self.store.delivery_given_up(due, "failed", why)
        self._log("event_dead_letter", due, error=why)
        return "dead"

    @staticmethod
    def _log(name: str, due: DueDelivery, **facts: object) -> None:
        # Opaque identifiers only: never the URL's secret parts, the secret or the body.
        log.info(
            name,
            patient_id=due.event.patient_id,
            subscriber=due.subscriber.name,
            event_id=due.event.event_id,
            kind=due.event.kind,
            **facts,
        )
