"""Delivering the outbox to patients: each pass claims the messages that are due, sends each
through its channel and records how it went. Several senders run side by side safely: a
claimed message is theirs alone until its lease ends.

At least once: a message is marked sent only after the server or provider accepted it, so a
sender that dies in between leaves it to be sent again when its lease ends (with the same
reference, which the provider de-duplicates on). Never twice otherwise: a sent message is
never claimed again.

A message goes out only on the channel the patient chose, inside their contact window (a
message due outside it waits for the window), in words that name no diagnosis, session type
or program (clinical.messages). One the clinic cannot send (no address, a channel the patient
did not choose) is a dead letter at once; one refused for good bounces; one that keeps
failing is retried with growing pauses and then becomes a dead letter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from clinical.clock import DEFAULT_ZONE
from clinical.consents import FAMILY
from clinical.messages import channel_chosen, patient_text, sending_time, too_late
from clinical.protocol import ProgramCatalog, ProgramProtocol, ProtocolError, ReminderConfig
from clinical.sites import SiteDirectory
from infra.channels import Channel, Outgoing, SendFailed, SendRefused, reference_of
from infra.logging import get_logger
from infra.store import CareStore, DeliveryContact, DueMessage, utcnow

log = get_logger("carepath.delivery")

REAL_DAY = 86400.0


def reminders(protocol: ProgramProtocol | None) -> ReminderConfig:
    return ReminderConfig() if protocol is None else protocol.reminders


@dataclass(frozen=True)
class DeliveryPolicy:
    lease: timedelta = timedelta(minutes=5)
    """How long a claimed message is one sender's: longer than any one send can take."""
    attempts: int = 6
    """Tries before a message that keeps failing is a dead letter."""
    first_pause: timedelta = timedelta(minutes=1)
    longest_pause: timedelta = timedelta(hours=1)
    batch: int = 50


def pause_after(tries: int, policy: DeliveryPolicy) -> timedelta:
    """The wait before the next try after `tries` failed ones: doubling, up to the longest."""
    pause: timedelta = policy.first_pause * 2 ** (tries - 1)
    return min(pause, policy.longest_pause)


@dataclass
class PassResult:
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    waiting: int = 0
    """Due, but outside the patient's contact window."""

    @property
    def claimed(self) -> int:
        return self.sent + self.retrying + self.dead + self.waiting


class Deliverer:
    def __init__(
        self,
        store: CareStore,
        channels: Mapping[str, Channel],
        sites: SiteDirectory,
        catalog: ProgramCatalog,
        policy: DeliveryPolicy = DeliveryPolicy(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`channels`: the configured ones by name (sms, email); messages on others wait."""
        self.store, self.channels, self.sites, self.catalog = store, channels, sites, catalog
        self.policy, self.clock = policy, clock

    def deliver_due(self) -> PassResult:
        """One pass: claim what is due and settle each message."""
        result = PassResult()
        if not self.channels:
            return result
        now = self.clock()
        # Family invitations go on the family contact's own channel, known once claimed.
        claimed = self.store.claim_due(
            [*self.channels, "family"], now, lease=self.policy.lease, limit=self.policy.batch
        )
        for message in claimed:
            outcome = self._deliver(message, now)
            setattr(result, outcome, getattr(result, outcome) + 1)
        return result

    def deliver_all_due(self) -> PassResult:
        """Passes until one finds less than a full batch: everything due now, settled."""
        total = PassResult()
        while True:
            result = self.deliver_due()
            for name in ("sent", "retrying", "dead", "waiting"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            if result.claimed < self.policy.batch:
                return total

    def _deliver(self, message: DueMessage, now: datetime) -> str:
        if message.channel == "family":
            return self._deliver_to_family(message, now)
        contact = self.store.delivery_contact(message.patient_id)
        if contact is None:
            return self._dead(message, "failed", "no such patient")
        if not channel_chosen(message.kind, message.channel, contact.window):
            return self._dead(message, "failed", "not a channel the patient chose")
        address = contact.phone if message.channel == "sms" else contact.email
        if not address:
            return self._dead(message, "failed", f"no {message.channel} address on file")
        text = patient_text(message.kind, message.body)
        if text is None:
            return self._dead(message, "failed", "no wording safe to send for this message")
        protocol = self._protocol(contact)
        # A compressed clock (a demo) runs its own calendar: real time's windows and
        # lateness say nothing about it.
        real_time = protocol is None or protocol.clock.seconds_per_day == REAL_DAY
        if real_time and too_late(message.kind, message.deliver_at, now, reminders(protocol)):
            return self._dead(message, "failed", "too late: its event may be over")
        at = sending_time(now, contact.window, self._zone(contact)) if real_time else now
        if at > now:
            self.store.postpone(message, at)
            return "waiting"
        return self._send(message, self.channels[message.channel], address, text, now)

    def _deliver_to_family(self, message: DueMessage, now: datetime) -> str:
        """An invitation to the family contact on file, on their channel, only under the
        patient's family consent in force (its disclosure was accounted as it was posted)."""
        family = self.store.family_contact(message.patient_id)
        if family is None:
            return self._dead(message, "failed", "no family contact on file")
        why_not = self.store.why_not_consented(message.patient_id, FAMILY, "treatment", now)
        if why_not is not None:
            return self._dead(message, "failed", f"family consent: {why_not}")
        text = patient_text(message.kind, message.body)
        if text is None:
            return self._dead(message, "failed", "no wording safe to send for this message")
        channel = self.channels.get(family.channel)
        if channel is None:  # not configured here: left for a sender that has it
            self.store.postpone(message, now + self.policy.longest_pause)
            return "waiting"
        return self._send(message, channel, family.address, text, now)

    def _send(
        self, message: DueMessage, channel: Channel, address: str, text: str, now: datetime
    ) -> str:
        try:
            channel.send(Outgoing(reference=reference_of(message.key), to=address, text=text))
        except SendRefused as exc:
            return self._dead(message, "bounced", str(exc))
        except SendFailed as exc:
            tries = message.attempts + 1
            if tries >= self.policy.attempts:
                return self._dead(message, "failed", f"{exc} (after {tries} tries)")
            self.store.retry_later(message, str(exc), now + pause_after(tries, self.policy))
            self._log("delivery_retrying", message, error=str(exc), tries=tries)
            return "retrying"
        if not self.store.mark_sent(message, self.clock()):
            # Sent, but another sender took the message over after this one's lease ended:
            # it may send it again (with the same reference).
            self._log("delivery_claim_lapsed", message)
        self._log("delivered", message)
        return "sent"

    def _dead(self, message: DueMessage, status: str, why: str) -> str:
        self.store.give_up(message, status, why)
        self._log("delivery_dead_letter", message, status=status, error=why)
        return "dead"

    def _zone(self, contact: DeliveryContact) -> str:
        site = self.sites.sites.get(contact.site_id)
        return DEFAULT_ZONE if site is None else site.zone

    def _protocol(self, contact: DeliveryContact) -> ProgramProtocol | None:
        """The patient's program (None: since removed; its patients live in real time)."""
        try:
            return self.catalog.load(contact.program_id)
        except ProtocolError:
            return None

    @staticmethod
    def _log(event: str, message: DueMessage, **facts: object) -> None:
        # Opaque identifiers only: never the address or the text.
        log.info(
            event,
            patient_id=message.patient_id,
            message=message.key,
            kind=message.kind,
            channel=message.channel,
            **facts,
        )
