"""Intake: the assessment a case manager records, and the enrolment that carries it."""

from __future__ import annotations

import re
from datetime import date, time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from clinical.clock import ZoneName
from clinical.identifiers import CaseManagerId, PatientId, ProgramId, SiteId

Rating = Annotated[int, Field(ge=0, le=4, description="0 = no risk … 4 = severe")]


def _clinic_local(value: time) -> time:
    # A number or "10:00Z" parses to a time with a zone, which cannot be compared with the
    # clinic-local times beside it.
    if value.tzinfo is not None:
        raise ValueError("a clinic-local time (HH:MM), without a time zone")
    return value


LocalTime = Annotated[time, AfterValidator(_clinic_local)]


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"

    @property
    def number(self) -> int:
        """Monday = 0 … Sunday = 6."""
        return _WEEKDAY_NUMBER[self]


# A lookup, not the enum's index: planning a week asks it thousands of times.
_WEEKDAY_NUMBER = {day: i for i, day in enumerate(Weekday)}


class SocialNeed(StrEnum):
    medical = "medical"
    housing = "housing"
    parenting = "parenting"
    employment = "employment"
    legal = "legal"


class AgeGroup(StrEnum):
    adult = "adult"
    adolescent = "adolescent"


def _sorted_unique(values: tuple[SocialNeed, ...]) -> tuple[SocialNeed, ...]:
    # Sets serialise in hash order, which differs between processes; a sorted tuple keeps
    # payloads byte-identical wherever they are encoded.
    return tuple(sorted(set(values)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DimensionRatings(_Strict):
    """The six assessment dimensions (ASAM 3rd edition), each rated 0-4."""

    withdrawal: Rating
    biomedical: Rating
    emotional: Rating
    readiness: Rating
    relapse: Rating
    environment: Rating

    def as_dict(self) -> dict[str, int]:
        return self.model_dump()


class Commitment(_Strict):
    """A recurring time the patient cannot attend (work, school, childcare)."""

    weekday: Weekday
    start: LocalTime
    end: LocalTime
    kind: Literal["work", "school", "childcare", "other"] = "other"

    @model_validator(mode="after")
    def _ends_after_start(self) -> Commitment:
        if self.end <= self.start:
            raise ValueError(f"commitment on {self.weekday.value} ends before it starts")
        return self


class ContactWindow(_Strict):
    """When the patient prefers to be called or messaged (clinic-local time); outside it
    are their quiet hours. `reminders`: how they want reminders, if at all."""

    start: LocalTime = time(10, 0)
    end: LocalTime = time(18, 0)
    reminders: Literal["sms", "email", "none"] = "sms"
    zone: ZoneName | None = None
    """The patient's own time zone when it is not the site's (IANA, e.g. America/Chicago):
    calls and reminders then come inside the window at the patient's local time."""

    @model_validator(mode="after")
    def _ends_after_start(self) -> ContactWindow:
        if self.end <= self.start:
            raise ValueError("contact window ends before it starts")
        return self


_COMMITMENT_TEXT = re.compile(
    r"(?P<weekday>mon|tue|wed|thu|fri|sat|sun) (?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)"
    r"(?: (?P<kind>work|school|childcare|other))?"
)


def parse_commitment(text: str) -> dict[str, str]:
    """`tue 08:00-17:00 work` as a commitment's fields (the kind may be left out), as the
    command line and the console take them; ValueError in one line otherwise."""
    found = _COMMITMENT_TEXT.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(
            f"commitment: {text[:40]!r} is not like 'tue 08:00-17:00 work' "
            "(weekday, start-end, and work, school, childcare or other)"
        )
    return {k: v for k, v in found.groupdict().items() if v is not None}


class Consents(_Strict):
    """What the patient has consented to (42 CFR Part 2 needs explicit consent)."""

    family_involvement: bool = False
    partner_disclosure: tuple[SocialNeed, ...] = ()

    _sorted = field_validator("partner_disclosure")(classmethod(lambda cls, v: _sorted_unique(v)))


DIMENSIONS: tuple[str, ...] = tuple(DimensionRatings.model_fields)
"""The six dimensions in the order forms and the command line take them."""

# Limits of what an enrolment holds. The store's columns are sized from these (infra.store),
# so what the door accepts the store can hold: one source for both.
MAX_SUBSTANCES = 12
MAX_CONDITIONS = 12
MAX_COMMITMENTS = 21
"""Three a day: more is not a week anyone lives."""
NAME_MAX = 80
PHONE_MAX = 21
EMAIL_MAX = 120


class Assessment(_Strict):
    ratings: DimensionRatings
    age_group: AgeGroup
    substances: tuple[Annotated[str, Field(min_length=2, max_length=40)], ...] = Field(
        min_length=1, max_length=MAX_SUBSTANCES
    )
    co_occurring: tuple[Annotated[str, Field(min_length=2, max_length=60)], ...] = Field(
        default=(), max_length=MAX_CONDITIONS
    )
    social_needs: tuple[SocialNeed, ...] = ()
    commitments: tuple[Commitment, ...] = Field(default=(), max_length=MAX_COMMITMENTS)
    transport_barrier: bool = False
    distance_km: Annotated[float, Field(ge=0, le=2000)] | None = None
    contact_window: ContactWindow = ContactWindow()
    consents: Consents = Consents()

    _sorted = field_validator("social_needs")(classmethod(lambda cls, v: _sorted_unique(v)))

    @field_validator("commitments")
    @classmethod
    def _each_commitment_once(cls, value: tuple[Commitment, ...]) -> tuple[Commitment, ...]:
        seen: set[Commitment] = set()
        for c in value:
            if c in seen:
                raise ValueError(
                    f"the commitment on {c.weekday.value} {c.start:%H:%M}-{c.end:%H:%M} "
                    "is listed twice"
                )
            seen.add(c)
        return value


ADOLESCENT_AGES = (10, 17)
OLDEST = 110


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def check_plausible(enrolment: Enrolment, today: date) -> None:
    """What cannot be true on `today` (the site's date at enrolment): a birth date ahead, an
    age no one reaches, an age group the birth date contradicts. Checked at the door, not in
    the model: a journey re-reads its enrolment for months, and replays it."""
    born = enrolment.contact.date_of_birth
    if born > today:
        raise ValueError(f"contact.date_of_birth: {born} is in the future")
    age = age_on(born, today)
    if age > OLDEST:
        raise ValueError(f"contact.date_of_birth: {born} makes the patient {age}")
    group = enrolment.assessment.age_group
    youngest, oldest = ADOLESCENT_AGES
    if group == AgeGroup.adolescent and not youngest <= age <= oldest:
        raise ValueError(
            f"assessment.age_group: adolescent, but contact.date_of_birth {born} makes the "
            f"patient {age} ({youngest}-{oldest} is adolescent)"
        )
    if group == AgeGroup.adult and age < youngest + 8:
        raise ValueError(
            f"assessment.age_group: adult, but contact.date_of_birth {born} makes the patient {age}"
        )


_ONE_LINE = r"^[^\x00-\x1f\x7f]+$"
"""No control characters (a newline, a NUL) in a name."""


class PatientContact(_Strict):
    """Protected health information. Travels only inside (encrypted) payloads and the
    care-operations store; never in IDs, search attributes or logs."""

    given_name: Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=_ONE_LINE)]
    family_name: Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=_ONE_LINE)]
    date_of_birth: date
    phone: Annotated[str, Field(max_length=PHONE_MAX, pattern=r"^\+?[0-9 ()\-.]{7,20}$")]
    email: (
        Annotated[str, Field(max_length=EMAIL_MAX, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None
    ) = None

    @field_validator("date_of_birth")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if value.year < 1900:
            raise ValueError("date_of_birth is before 1900")
        return value


class PlacementOverride(_Strict):
    """The enrolling case manager's clinical judgement over the rules' placement: a level
    of the program (or "higher" to refer out) and why, which is kept in the audit trail."""

    level: Annotated[str, Field(min_length=1, max_length=16)]
    reason: Annotated[str, Field(min_length=10, max_length=500)]

    @field_validator("reason", mode="before")
    @classmethod
    def _meaningful_reason(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value


class Enrolment(_Strict):
    """What a case manager submits to enrol a patient in a program."""

    patient_id: PatientId
    case_manager_id: CaseManagerId
    site_id: SiteId
    program_id: ProgramId = "default-iop"
    contact: PatientContact
    assessment: Assessment
    placement_override: PlacementOverride | None = None
