"""Signed survey links: `<token>.<expires>.<key id>.<signature>`, an HMAC-SHA256 over the
opaque token and its expiry. The token names nothing of the patient (the store maps it to
the survey); the signature lets the page refuse a forged or altered link before any read,
and the expiry is checked from the signed value. Single use is the store's (answered once).

The signing keys derive from the payload key ring (one HMAC key per ring key, so rotating
the ring rotates them and links signed with a key still listed keep working); with
encryption off, from a ring of their own beside the data (`link-keys.json`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from infra.codec import KeyRing
from infra.settings import Settings, SettingsError
from infra.temporal import keys_for

SURVEY_PATH = "/survey"
_PURPOSE = b"carepath survey link v1"
_LINK = re.compile(
    r"(?P<token>[A-Za-z0-9_-]{16,64})\.(?P<exp>\d{1,12})"
    r"\.(?P<kid>[A-Za-z0-9_-]{1,32})\.(?P<sig>[0-9a-f]{64})"
)


class LinkRefused(ValueError):
    """A link that is not one of ours, altered, or expired: the message is for the page."""


def new_token() -> str:
    """An opaque survey token: random, 32 characters, nothing derived from the patient."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class LinkSigner:
    active: str
    keys: dict[str, bytes]
    origin: str
    """Where the console answers (the link's scheme and host)."""

    @classmethod
    def from_ring(cls, ring: KeyRing, origin: str) -> LinkSigner:
        derived = {
            kid: hmac.new(k, _PURPOSE, hashlib.sha256).digest() for kid, k in ring.keys.items()
        }
        return cls(active=ring.active, keys=derived, origin=origin.rstrip("/"))

    @classmethod
    def ephemeral(cls, origin: str = "http://127.0.0.1:8000") -> LinkSigner:
        """A signer with a key of its own: its links verify in this process only."""
        return cls.from_ring(KeyRing.create_new(), origin)

    def sign(self, token: str, expires: datetime) -> str:
        exp = int(expires.timestamp())
        return f"{token}.{exp}.{self.active}.{self._mac(self.active, token, exp)}"

    def url(self, token: str, expires: datetime) -> str:
        return f"{self.origin}{SURVEY_PATH}/{self.sign(token, expires)}"

    def token_of(self, link: str, now: datetime) -> str:
        """The token of a link that is ours, unaltered and not expired; LinkRefused if not."""
        found = _LINK.fullmatch(link)
        if found is None or found["kid"] not in self.keys:
            raise LinkRefused("this link is not valid")
        exp = int(found["exp"])
        expected = self._mac(found["kid"], found["token"], exp)
        if not hmac.compare_digest(expected, found["sig"]):
            raise LinkRefused("this link is not valid")
        if now >= datetime.fromtimestamp(exp, UTC):
            raise LinkRefused("this link has expired")
        return found["token"]

    def _mac(self, kid: str, token: str, exp: int) -> str:
        return hmac.new(self.keys[kid], f"{token}.{exp}".encode(), hashlib.sha256).hexdigest()


def link_signer(settings: Settings, make_keys: bool = False) -> LinkSigner:
    """The signer of the clinic's survey links, from its key ring (or, with encryption off,
    the links' own ring, made on first use by those that may: a worker)."""
    ring = keys_for(settings, make_keys=make_keys)
    if ring is None:
        path = settings.data_dir / "link-keys.json"
        if make_keys:
            ring = KeyRing.load_or_create(path)
        elif path.exists():
            ring = KeyRing.load(path)
        else:
            raise SettingsError(
                f"no survey link key file at {path}: start a worker (which makes it)"
            )
    return LinkSigner.from_ring(ring, settings.console_origin)
