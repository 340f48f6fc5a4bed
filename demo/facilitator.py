"""A group's facilitator at work in the demo: once a group session of the demo program has
happened, its facilitator signs in to the console the demo serves (real HTTP, the same
application `starter.py console` runs), opens the session's sign-in sheet from the groups
page and submits it, everyone marked attended. The demo's summary prints what the journeys
made of the marks; the simulated case managers still enter the week's attendance after."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from clinical.group_sheets import parse_stamp
from clinical.protocol import GroupTrack

SHEET_LINK = re.compile(r'href="(/groups/[a-z0-9-]+/([a-z0-9-]+)/(\d{8}T\d{4}Z))"')
MARK = re.compile(r'name="mark:(P-[0-9A-Z]{8})"')
OUTCOME = re.compile(r"(attended|missed|excused), (accepted|unchanged|refused)")


def facilitator_username(name: str) -> str:
    """The demo's account name for a facilitator: `Dana Reyes` signs in as dana.reyes."""
    return re.sub(r"[^a-z0-9.]", "", name.lower().replace(" ", "."))[:32]


@dataclass(frozen=True)
class Facilitator:
    staff_id: str
    name: str
    site: str

    @property
    def username(self) -> str:
        return facilitator_username(self.name)


def facilitators_of(tracks: Sequence[GroupTrack], sites: set[str]) -> list[Facilitator]:
    """Each facilitator the program's tracks name by staff ID, at the cohort's sites."""
    found: dict[str, Facilitator] = {}
    for track in tracks:
        if track.site not in sites:
            continue
        for staff_id, name in zip(track.facilitator_ids, track.facilitators, strict=False):
            found.setdefault(staff_id, Facilitator(staff_id, name, track.site))
    return sorted(found.values(), key=lambda f: f.staff_id)


async def _sign_in(http: httpx.AsyncClient, username: str, password: str) -> str:
    """The session's form token, from the groups page the sign-in lands on."""
    answer = await http.post("/sign-in", data={"username": username, "password": password})
    if answer.status_code != 303:
        raise RuntimeError(f"the console refused {username}'s sign-in ({answer.status_code})")
    page = await http.get("/groups")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    if page.status_code != 200 or token is None:
        raise RuntimeError(f"{username} could not open the groups page ({page.status_code})")
    return token[1]


async def _a_past_session(
    http: httpx.AsyncClient, now: datetime | None
) -> tuple[str, str, datetime] | None:
    """The latest session on the facilitator's groups page that has begun by the clinic's
    `now` (the program's compressed calendar, not the wall clock)."""
    if now is None:
        return None
    page = await http.get("/groups")
    begun = [
        (path, track_id, parse_stamp(stamp))
        for path, track_id, stamp in SHEET_LINK.findall(page.text)
        if parse_stamp(stamp) < now
    ]
    return max(begun, key=lambda s: s[2]) if begun else None


async def facilitator_submits_a_sheet(
    console_url: str,
    facilitator: Facilitator,
    password: str,
    poll_seconds: float,
    clinic_now: Callable[[], datetime | None],
) -> str:
    """Waits for a session of one of the facilitator's tracks to happen, then marks its
    sheet through the console: one line for the demo's summary."""
    async with httpx.AsyncClient(base_url=console_url, timeout=30) as http:
        csrf = await _sign_in(http, facilitator.username, password)
        while (found := await _a_past_session(http, clinic_now())) is None:
            await asyncio.sleep(poll_seconds)
        path, track_id, starts_at = found
        sheet = await http.get(path)
        patients = MARK.findall(sheet.text)
        marks = {f"mark:{p}": "attended" for p in patients}
        answer = await http.post(path, data={"csrf": csrf, **marks})
        await http.post("/sign-out", data={"csrf": csrf})
    outcomes = Counter(outcome for _, outcome in OUTCOME.findall(answer.text))
    told = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "nothing recorded"
    return (
        f"{facilitator.username} ({facilitator.staff_id}) signed in to the console and "
        f"submitted {track_id}'s sheet of {starts_at:%Y-%m-%d %H:%M} UTC: "
        f"{len(patients)} patient(s), {told} (HTTP {answer.status_code})"
    )
