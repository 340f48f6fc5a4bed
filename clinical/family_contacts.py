"""The patient's family contact: whom family-session invitations go to, on which channel.
Only an address and a relationship, no name: an invitation is addressed to no one by name
and names no patient."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from clinical.assessment import EMAIL_MAX, PHONE_MAX

_PHONE = re.compile(r"\+?[0-9 ()\-.]{7,20}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ADDRESS_MAX = max(EMAIL_MAX, PHONE_MAX)


class FamilyContact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["sms", "email"]
    address: str
    relationship: Literal["partner", "parent", "child", "sibling", "relative", "friend", "other"]

    @model_validator(mode="after")
    def _address_fits_channel(self) -> FamilyContact:
        pattern, longest = (_PHONE, PHONE_MAX) if self.channel == "sms" else (_EMAIL, EMAIL_MAX)
        if len(self.address) > longest or not pattern.fullmatch(self.address):
            what = "a phone number" if self.channel == "sms" else "an e-mail address"
            raise ValueError(f"address: not {what}")
        return self

    def __repr__(self) -> str:  # the address is PHI: never in a log line or traceback
        return f"FamilyContact(channel={self.channel!r}, relationship={self.relationship!r})"

    __str__ = __repr__
