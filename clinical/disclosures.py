"""Part 2's accounting of disclosures: a patient may ask what was disclosed about them in
the past three years (42 CFR §2.24)."""

from __future__ import annotations

from datetime import datetime

ACCOUNTING_YEARS = 3


def accounting_since(now: datetime) -> datetime:
    """The start of the accounting's period: the same day and time three years before `now`
    (28 February for a 29 February)."""
    year = now.year - ACCOUNTING_YEARS
    try:
        return now.replace(year=year)
    except ValueError:
        return now.replace(year=year, day=28)
