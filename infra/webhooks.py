"""Who may send CarePath events (an EHR's appointment updates, a partner portal's referral
answers): webhook senders, each with the kind of event it sends, the one site it serves and
a shared secret. Signatures follow the Standard Webhooks scheme: HMAC-SHA256 over
`{event id}.{timestamp}.{body}`, base64, sent as `v1,<signature>` in `webhook-signature`
with `webhook-id` and `webhook-timestamp`.

The secrets must be readable to check a signature, so they are not in the database beside
the data they would let a sender change: they live in an owner-only file (like the payload
keys), made and extended by `starter.py webhooks add`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from clinical.identifiers import SiteId
from infra.files import write_private

REPLAY_WINDOW = timedelta(minutes=5)  # Standard Webhooks' recommendation
NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
SECRET_PREFIX = "whsec_"


class EventKind(StrEnum):
    ehr_appointments = "ehr-appointments"  # FHIR Appointment: fulfilled or noshow
    partner_referrals = "partner-referrals"  # a partner's answer to a referral
    telephony_calls = "telephony-calls"  # the telephony provider: how a check-in call ended


ANY_SITE = "*"
"""The site of a sender serving every site: the clinic's one telephony provider."""


@dataclass(frozen=True)
class WebhookSender:
    name: str
    kind: EventKind
    site_id: str
    secret: str


class WebhookRefused(ValueError):
    """A refused sender or event, in one line."""


def load_senders(path: Path) -> dict[str, WebhookSender]:
    """The senders of `path` (none if it does not exist)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: WebhookSender(name, EventKind(s["kind"]), s["site_id"], s["secret"])
            for name, s in raw.items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRefused(f"{path.name}: not a webhook senders file ({exc})") from None


def add_sender(path: Path, name: str, kind: str, site_id: str) -> WebhookSender:
    """A new sender with a new secret, written to `path` (owner-only)."""
    if not NAME.fullmatch(name):
        raise WebhookRefused(
            f"name {name[:40]!r}: 2-32 of a-z, 0-9, '.', '_', '-', starting with a letter"
        )
    try:
        event_kind = EventKind(kind)
        if not (site_id == ANY_SITE and event_kind is EventKind.telephony_calls):
            TypeAdapter(SiteId).validate_python(site_id)
    except (ValueError, ValidationError):
        raise WebhookRefused(
            f"a sender sends one of {', '.join(k.value for k in EventKind)} for a site (like "
            f"north; the telephony provider may serve every site: {ANY_SITE})"
        ) from None
    senders = load_senders(path)
    if name in senders:
        raise WebhookRefused(f"sender {name} exists already")
    sender = WebhookSender(name, event_kind, site_id, SECRET_PREFIX + secrets.token_urlsafe(32))
    senders[name] = sender
    text = json.dumps({n: asdict(s) for n, s in senders.items()}, indent=2)
    write_private(path, text + "\n")
    return sender


def signature(secret: str, event_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, event_id: str, sent: datetime, body: bytes) -> dict[str, str]:
    """The headers of an event CarePath sends, signed as it checks the events it receives."""
    timestamp = str(int(sent.timestamp()))
    return {
        "webhook-id": event_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(secret, event_id, timestamp, body),
    }


def check_signed(
    sender: WebhookSender,
    event_id: str,
    timestamp: str,
    offered: str,
    body: bytes,
    now: datetime,
) -> None:
    """WebhookRefused unless the event is signed with the sender's secret and sent within
    the replay window (either side of `now`: clocks differ)."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRefused("webhook-timestamp: seconds since the epoch")
    sent = datetime.fromtimestamp(int(timestamp), now.tzinfo)
    if abs(now - sent) > REPLAY_WINDOW:
        raise WebhookRefused(
            f"webhook-timestamp is {abs(now - sent).total_seconds():.0f} s from now "
            f"(at most {REPLAY_WINDOW.seconds} s): a replay, or a clock to set"
        )
    expected = signature(sender.secret, event_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in offered.split()):
        raise WebhookRefused("webhook-signature does not match the body")
