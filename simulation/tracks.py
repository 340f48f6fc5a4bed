"""Group tracks as a simulated clinic fills them: each track's most seats held and most
patients on its waitlist at once, and how long those who waited waited, from the store's
seats and waitlists sampled once a clock step (a simulated day while anyone is in
treatment). The store keeps only who holds and waits now, so the peaks and waits are the
samples'; a patient who joined a waitlist and was seated between two samples is not seen
waiting."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from clinical.protocol import GroupTrack
from infra.store.groups import GroupPlace

DAY = timedelta(days=1)


@dataclasses.dataclass
class TrackWatch:
    peak_taken: Counter[str] = dataclasses.field(default_factory=Counter)
    peak_waiting: Counter[str] = dataclasses.field(default_factory=Counter)
    joined: dict[tuple[str, str], datetime] = dataclasses.field(default_factory=dict)
    """When each (track, patient) seen waiting joined the waitlist."""
    seated: dict[tuple[str, str], datetime] = dataclasses.field(default_factory=dict)
    """When each (track, patient) seen waiting was then seen seated took the seat."""

    def sample(self, places: list[GroupPlace]) -> None:
        taken: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        for p in places:
            key = (p.track_id, p.patient_id)
            if p.seated:
                taken[p.track_id] += 1
                if key in self.joined and key not in self.seated:
                    self.seated[key] = p.since
            else:
                waiting[p.track_id] += 1
                self.joined.setdefault(key, p.since)
        for track_id, n in taken.items():
            self.peak_taken[track_id] = max(self.peak_taken[track_id], n)
        for track_id, n in waiting.items():
            self.peak_waiting[track_id] = max(self.peak_waiting[track_id], n)

    def tracks(self) -> list[str]:
        return sorted(set(self.peak_taken) | set(self.peak_waiting))

    def waits(self, track_id: str) -> list[float]:
        """Days from joining the track's waitlist to taking its seat, of those seated."""
        return [
            (self.seated[key] - joined) / DAY
            for key, joined in self.joined.items()
            if key[0] == track_id and key in self.seated
        ]

    def figures(self, program: Sequence[GroupTrack]) -> dict[str, float | None]:
        """Each track's figures as flat keys (`track_key`), for a what-if's run: the tracks
        anyone held a seat in or waited for."""
        found: dict[str, float | None] = {}
        capacity = {t.id: t.capacity for t in program}
        # A track that runs takes its facilitators' hours at each of its weekly sessions.
        staffing = {t.id: t.hours * len(t.weekdays) * len(t.facilitators) for t in program}
        for track_id in self.tracks():
            waited = [k for k in self.joined if k[0] == track_id]
            waits = self.waits(track_id)
            found |= {
                track_key(track_id, "capacity"): float(capacity.get(track_id, 0)),
                track_key(track_id, "facilitator_hours"): staffing.get(track_id),
                track_key(track_id, "peak_seats"): float(self.peak_taken[track_id]),
                track_key(track_id, "peak_waitlist"): float(self.peak_waiting[track_id]),
                track_key(track_id, "waited"): float(len(waited)),
                track_key(track_id, "never_seated"): float(len(waited) - len(waits)),
                track_key(track_id, "median_wait_days"): statistics.median(waits)
                if waits
                else None,
            }
        return found


TRACK_FIGURES = (
    ("capacity", "seats in the track"),
    ("facilitator_hours", "facilitator hours a week while it runs"),
    ("peak_seats", "most seats taken at once"),
    ("peak_waitlist", "longest waitlist"),
    ("waited", "patients who waited"),
    ("never_seated", "... who left the waitlist without a seat"),
    ("median_wait_days", "days waited (median of those seated)"),
)
"""A track's figures in a what-if, in the order shown, with their labels."""


def track_key(track_id: str, figure: str) -> str:
    return f"track:{track_id}:{figure}"


def tracks_in(keys: list[str]) -> list[str]:
    """The tracks a run's figures name, in order."""
    return sorted({k.split(":")[1] for k in keys if k.startswith("track:")})
