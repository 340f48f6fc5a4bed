"""The simulated clinic's patients: who they are (a synthetic cohort, believable, varied and
reproducible) and how they turn up to their sessions."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import date, time, timedelta
from typing import Any

from faker import Faker

from clinical.assessment import Enrolment
from clinical.identifiers import _CROCKFORD

Attendance = Callable[[int], str]
"""A patient's attendance: the fate of their n-th session (from 1), `attended`, `missed` or
`excused` as the case manager marks it, or `none` when it is never entered (the grace period
then counts it missed)."""


def attendance_choice(n: int) -> str:
    """Mostly attended, some missed, every 4th left unrecorded."""
    return "none" if n % 4 == 0 else ("missed" if n % 7 == 0 else "attended")


def steady_attendance(n: int) -> str:
    """About 78% attended: enough for the default program's step-down criteria (70%)."""
    return "none" if n % 10 == 0 else ("missed" if n % 7 == 0 else "attended")


_SUBSTANCES = ["alcohol", "opioids", "cannabis", "stimulants", "benzodiazepines"]
_CONDITIONS = ["depression", "anxiety", "ptsd", "adhd"]
_NEEDS = ["medical", "housing", "parenting", "employment", "legal"]


def _patient_id(rng: random.Random) -> str:
    while True:
        body = "".join(rng.choice(_CROCKFORD) for _ in range(8))
        if sum(c.isdigit() for c in body) >= 2:
            return f"P-{body}"


def _assessment(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    ratings = {
        "withdrawal": rng.choice([0, 1, 1, 2]),
        "biomedical": rng.choice([0, 0, 1, 2]),
        "emotional": rng.choice([1, 2, 2, 3]),
        "readiness": rng.choice([1, 2, 2, 3]),
        "relapse": rng.choice([2, 2, 3, 3]),
        "environment": rng.choice([1, 2, 2, 3]),
    }
    if roll < 0.08:
        ratings["emotional"] = 4  # partial hospitalisation
    commitments: list[dict[str, str]] = []
    if rng.random() < 0.6:
        days = rng.sample(["mon", "tue", "wed", "thu", "fri"], k=rng.choice([2, 3, 5]))
        commitments += [
            {"weekday": d, "start": "08:00", "end": "17:00", "kind": "work"} for d in days
        ]
    if rng.random() < 0.25:
        commitments.append(
            {"weekday": "sat", "start": "09:00", "end": "13:00", "kind": "childcare"}
        )
    start = rng.choice([time(9), time(10), time(12), time(17)])
    return {
        "ratings": ratings,
        "age_group": "adolescent" if rng.random() < 0.1 else "adult",
        "substances": rng.sample(_SUBSTANCES, k=rng.choice([1, 1, 2])),
        "co_occurring": rng.sample(_CONDITIONS, k=rng.choice([0, 1])),
        "social_needs": rng.sample(_NEEDS, k=rng.choice([0, 1, 2])),
        "commitments": commitments,
        "transport_barrier": rng.random() < 0.2,
        "distance_km": round(rng.uniform(1, 60), 1),
        "contact_window": {
            "start": start.isoformat(),
            "end": time(start.hour + 3).isoformat(),
            # Some take their reminders by e-mail (a demo's land in a local mailbox); chosen
            # by the window already drawn, so the seed's cohort is otherwise the same.
            "reminders": "email" if start.hour in (10, 17) else "sms",
        },
        "consents": {"family_involvement": rng.random() < 0.5},
    }


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a common year
        return day.replace(year=day.year - years, day=28)


def synthetic_cohort(
    size: int,
    seed: int,
    program_id: str = "default-iop",
    case_managers: tuple[str, ...] = ("CM-01", "CM-02", "CM-03"),
    sites: tuple[str, ...] = ("north", "south"),
    today: date | None = None,
    arrival_days: Sequence[int] = (),
) -> list[Enrolment]:
    """`today`: the day ages are counted from (the real date unless given); with
    `arrival_days`, each patient's ages are counted from the day they arrive, that many
    days after `today` (a large what-if's cohort arrives over years: an adolescent born
    for today would be an adult by then, and refused as one)."""
    today = today or date.today()
    if arrival_days and len(arrival_days) != size:
        raise ValueError(f"{len(arrival_days)} arrival days for {size} patients")
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    cohort = []
    for i in range(size):
        assessment = _assessment(rng)
        arrives = today + timedelta(days=arrival_days[i]) if arrival_days else today
        # A birth date that fits the age group, with a margin either side of 18 so the
        # enrolment is plausible at every site's date on the day they arrive.
        ages = (13, 16) if assessment["age_group"] == "adolescent" else (19, 70)
        cohort.append(
            Enrolment.model_validate(
                {
                    "patient_id": _patient_id(rng),
                    "case_manager_id": case_managers[i % len(case_managers)],
                    "site_id": sites[i % len(sites)],
                    "program_id": program_id,
                    "contact": {
                        "given_name": fake.first_name(),
                        "family_name": fake.last_name(),
                        "date_of_birth": fake.date_between_dates(
                            _years_before(arrives, ages[1] + 1) + timedelta(days=1),
                            _years_before(arrives, ages[0]),
                        ),
                        "phone": fake.numerify("+1 ### ### ####"),
                        "email": fake.email(),
                    },
                    "assessment": assessment,
                }
            )
        )
    return cohort


def synthetic_enrolment(case_manager_id: str, site_id: str, program_id: str) -> Enrolment:
    """One fresh synthetic patient (a random seed each time)."""
    enrolment = synthetic_cohort(1, random.SystemRandom().randrange(2**31), program_id)[0]
    return Enrolment.model_validate(
        {**enrolment.model_dump(), "case_manager_id": case_manager_id, "site_id": site_id}
    )
