"""A group's facilitator at work in the demo: once a group session of the demo program has
happened, its facilitator signs in to the console the demo serves (real HTTP, the same
application `starter.py console` runs), opens their groups page and the session's sign-in
sheet, and submits it, everyone marked attended. The demo's summary prints what the journeys
made of the marks; the simulated case managers still enter the week's attendance after."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from clinical.group_sheets import session_stamp
from clinical.protocol import GroupTrack
from infra.store import CareStore

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
    """The session's form token, from the groups page the sign-in lands on (a facilitator's
    home)."""
    answer = await http.post("/sign-in", data={"username": username, "password": password})
    if answer.status_code != 303:
        raise RuntimeError(f"the console refused {username}'s sign-in ({answer.status_code})")
    page = await http.get("/groups")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    if page.status_code != 200 or token is None:
        raise RuntimeError(f"{username} could not open the groups page ({page.status_code})")
    return token[1]


def _a_past_session(
    store: CareStore, program_id: str, tracks: Sequence[GroupTrack], now: datetime | None
) -> tuple[str, str, datetime] | None:
    """The latest session of the facilitator's tracks that has begun by the clinic's `now`
    (the program's compressed calendar, not the wall clock) and has patients booked. Found
    in the store: the console's groups page lists sessions around the wall clock's now."""
    if now is None:
        return None
    begun = [
        (track.id, start)
        for track in tracks
        for start in store.group_sessions(program_id, track.id, now - timedelta(days=7), now)
        if start < now and store.group_session_roster(program_id, track.id, start)
    ]
    if not begun:
        return None
    track_id, start = max(begun, key=lambda s: s[1])
    return f"/groups/{program_id}/{track_id}/{session_stamp(start)}", track_id, start


async def facilitator_submits_a_sheet(
    console_url: str,
    leaders: Sequence[Facilitator],
    password: str,
    store: CareStore,
    program_id: str,
    tracks: Sequence[GroupTrack],
    clinic_now: Callable[[], datetime | None],
) -> str:
    """Waits for a session of a track one of `leaders` facilitates to happen, then that
    facilitator marks its sheet through the console: one line for the demo's summary."""
    by_id = {f.staff_id: f for f in leaders}
    led = [t for t in tracks if set(t.facilitator_ids) & set(by_id)]
    while (found := _a_past_session(store, program_id, led, clinic_now())) is None:
        await asyncio.sleep(1.0)
    path, track_id, starts_at = found
    (track,) = [t for t in led if t.id == track_id]
    facilitator = next(by_id[i] for i in track.facilitator_ids if i in by_id)
    async with httpx.AsyncClient(base_url=console_url, timeout=30) as http:
        csrf = await _sign_in(http, facilitator.username, password)
        sheet = await http.get(path)
        if sheet.status_code != 200:
            raise RuntimeError(f"the console answered {sheet.status_code} for {path}")
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
