"""The program protocol: every clinical threshold and cadence of a program, loaded from a
TOML file and validated as a whole, so that a broken file is refused at load with the field
and the reason rather than discovered by a patient months later."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinical.assessment import AgeGroup, LocalTime, Weekday
from clinical.counsellors import CounsellingConfig, StaffName
from clinical.identifiers import CaseManagerId, ProgramId, SiteId
from clinical.textfile import FileRefused, read_toml_file

DimensionName = Literal[
    "withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment"
]
ESCALATE = "higher"
"""Placement result meaning: this program cannot serve the patient; refer to a higher level."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgramInfo(_Strict):
    id: ProgramId
    name: str
    level_code_system: str = Field(
        description="code system (and edition) that level codes belong to, e.g. asam-criteria-3"
    )


HOURS_IN_A_WEEK_OF_CARE = 80
"""More hours a week than any outpatient level of care can mean."""


class ClockConfig(_Strict):
    """How long a program day lasts in real seconds. 86400 in a clinic; demos and load
    tests compress it without touching workflow code."""

    # At least 0.05 s: below that a compressed calendar outruns what datetimes can hold
    # within days of real time, and the dev server fires timers at ~1 s anyway.
    seconds_per_day: Annotated[float, Field(ge=0.05, le=86400)] = 86400.0


class HoursBand(_Strict):
    min: Annotated[float, Field(ge=0, le=HOURS_IN_A_WEEK_OF_CARE)]
    max: Annotated[float, Field(gt=0, le=HOURS_IN_A_WEEK_OF_CARE)] | None = None

    def contains(self, hours: float) -> bool:
        return hours >= self.min and (self.max is None or hours <= self.max)

    def describe(self) -> str:
        return f"{self.min:g}+ h" if self.max is None else f"{self.min:g}-{self.max:g} h"


class SessionPattern(_Strict):
    """A week's shape: visits (one per day) of a given length, plus individual time."""

    visits_per_week: Annotated[int, Field(ge=1, le=7)]
    visit_hours: Annotated[float, Field(gt=0, le=8)]
    individual_hours: Annotated[float, Field(ge=0, le=4)] = 0

    @property
    def weekly_hours(self) -> float:
        return self.visits_per_week * self.visit_hours + self.individual_hours


class LevelOfCare(_Strict):
    name: str
    hours: dict[AgeGroup, HoursBand]
    pattern: SessionPattern

    @model_validator(mode="after")
    def _both_age_groups(self) -> LevelOfCare:
        missing = set(AgeGroup) - set(self.hours)
        if missing:
            raise ValueError(f"hours band missing for {', '.join(sorted(missing))}")
        return self


class PlacementRule(_Strict):
    """Place into `level` when any of `when_any` (and all of `when_all`) ratings reach
    their thresholds. Rules are tried in order; the first match wins."""

    level: str
    reason: str
    when_any: dict[DimensionName, Annotated[int, Field(ge=0, le=4)]] = {}
    when_all: dict[DimensionName, Annotated[int, Field(ge=0, le=4)]] = {}

    @model_validator(mode="after")
    def _has_a_condition(self) -> PlacementRule:
        if not self.when_any and not self.when_all:
            raise ValueError(f"rule for level {self.level} has no condition")
        return self


class PlacementConfig(_Strict):
    rules: tuple[PlacementRule, ...]
    default_level: str
    default_reason: str = "no rule matched; lowest level offered"


class SessionSlot(_Strict):
    weekdays: tuple[Weekday, ...] = Field(min_length=1)
    start: time


class ScheduleConfig(_Strict):
    slots: tuple[SessionSlot, ...] = Field(min_length=1)
    group_session_types: tuple[str, ...] = Field(min_length=1)
    individual_session_type: str = "individual_therapy"
    telehealth_distance_km: Annotated[float, Field(gt=0, le=2000)] = 40.0


class IntensiveConfig(_Strict):
    levels: tuple[str, ...] = ("2.1", "2.5")
    min_weeks: Annotated[int, Field(ge=1, le=52)]
    max_weeks: Annotated[int, Field(ge=1, le=52)]
    extra_week_per_rating_at_least: Annotated[int, Field(ge=0, le=4)] = 3
    min_session_days: Annotated[int, Field(ge=1, le=7)] = 3

    @model_validator(mode="after")
    def _weeks_ordered(self) -> IntensiveConfig:
        if self.min_weeks > self.max_weeks:
            raise ValueError("min_weeks is greater than max_weeks")
        return self


class StepDownCriteria(_Strict):
    """What must hold before a patient leaves the intensive phase."""

    min_intensive_weeks: Annotated[int, Field(ge=1, le=52)] = 6
    min_attendance_rate: Annotated[float, Field(ge=0, le=1)] = 0.7
    clinician_approval: bool = True


class StepDownConfig(_Strict):
    taper_level: str = "2.1"
    taper_weeks: Annotated[int, Field(ge=0, le=4)] = 2
    taper: SessionPattern
    outpatient_level: str = "1"
    outpatient_weeks: Annotated[int, Field(ge=0, le=52)] = 4
    criteria: StepDownCriteria = StepDownCriteria()


class AttendanceConfig(_Strict):
    grace_days: Annotated[float, Field(ge=0, le=14)] = 2.0


class EngagementConfig(_Strict):
    """Attendance is the earliest indicator: when it calls for a case manager's attention."""

    consecutive_misses_for_outreach: Annotated[int, Field(ge=1, le=10)] = 2
    review_window_days: Annotated[int, Field(ge=7, le=56)] = 14
    review_below_rate: Annotated[float, Field(gt=0, le=1)] = 0.6
    review_min_sessions: Annotated[int, Field(ge=1, le=50)] = 4


class RelapseConfig(_Strict):
    found_by_call_relapse_rating: Annotated[int, Field(ge=0, le=4)] = 3


class AftercareConfig(_Strict):
    follow_up_days: tuple[Annotated[int, Field(ge=1, le=730)], ...] = Field(min_length=1)
    duration_days: Annotated[int, Field(ge=1, le=730)]
    call_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    attempt_spacing_days: Annotated[float, Field(gt=0, le=14)] = 2.0
    instruments: tuple[Literal["bam", "phq9"], ...] = ("bam", "phq9")
    """Asked at every reached check-in, besides days of use."""
    lost_after_unreachable: Annotated[int, Field(ge=1, le=10)] = 3
    """Consecutive unreachable check-ins after which the patient is lost to contact."""
    sms_before_retry: bool = True
    """A text message before the second call attempt ("we tried to reach you")."""
    callback_wait_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 30.0
    """How long an attempt waits for the telephony provider's word on the call (real
    minutes, whatever the program's clock) before it counts as unreachable."""
    alumni_every_days: Annotated[int, Field(ge=0, le=90)] = 14
    """Alumni and peer-support meetings during aftercare (0: none); patients are invited."""
    alumni_weekday: Weekday = Weekday.wed
    alumni_start: time = time(19, 0)

    @model_validator(mode="after")
    def _cadence_fits(self) -> AftercareConfig:
        days = self.follow_up_days
        if any(b <= a for a, b in itertools.pairwise(days)):
            raise ValueError("follow_up_days must be strictly increasing")
        if days[-1] > self.duration_days:
            raise ValueError(
                f"last follow-up (day {days[-1]}) is after aftercare ends "
                f"(duration_days = {self.duration_days})"
            )
        return self


class FamilyConfig(_Strict):
    """Family involvement, only with the patient's consent. Family therapy (patient and
    family together) every N weeks of a phase (0: none), next to one of the patient's
    sessions; family education for the family contact alone at a fixed evening slot."""

    intensive_every_weeks: Annotated[int, Field(ge=0, le=8)] = 1
    step_down_every_weeks: Annotated[int, Field(ge=0, le=8)] = 2
    therapy_hours: Annotated[float, Field(gt=0, le=3)] = 1.0
    education_every_weeks: Annotated[int, Field(ge=0, le=12)] = 4
    education_weekday: Weekday = Weekday.thu
    education_start: time = time(18, 30)
    education_hours: Annotated[float, Field(gt=0, le=3)] = 1.5


class ReferralConfig(_Strict):
    """Service levels for case-manager referrals to partner services (program days)."""

    response_days: Annotated[float, Field(gt=0, le=60)] = 5
    """No answer from the partner by then: a reminder to the partner."""
    task_after_reminder_days: Annotated[float, Field(gt=0, le=60)] = 3
    """Still no answer this long after the reminder: a task for the case manager."""
    completion_days: Annotated[float, Field(gt=0, le=365)] = 30
    """Accepted but not completed by then: a follow-up task for the case manager."""
    expire_days: Annotated[float, Field(gt=0, le=730)] = 90
    """A referral not completed this long after it was sent expires."""

    @model_validator(mode="after")
    def _expiry_last(self) -> ReferralConfig:
        if self.expire_days <= self.response_days + self.task_after_reminder_days:
            raise ValueError("expire_days must come after response_days + task_after_reminder_days")
        return self


class ReminderConfig(_Strict):
    """How long before a session or a check-in call the patient is reminded (at the latest
    time inside their contact window)."""

    session_hours_before: Annotated[float, Field(ge=1, le=72)] = 24
    call_hours_before: Annotated[float, Field(ge=1, le=72)] = 24


class TaskConfig(_Strict):
    """How many program days a case manager has for each kind of task."""

    due_days: dict[str, Annotated[float, Field(gt=0, le=60)]] = {
        "outreach": 2,
        "unreachable_patient": 3,
        "review": 5,
        "schedule_conflict": 3,
        "step_down_decision": 5,
        "reassessment": 3,
        "escalation_referral": 2,
        "consent_needed": 7,
        "referral_stalled": 3,
        "referral_follow_up": 5,
        "clinical_follow_up": 0.25,  # PHQ-9 item 9: the same day
        "aftercare_support": 3,
    }
    default_due_days: Annotated[float, Field(gt=0, le=60)] = 5

    def days_for(self, kind: str) -> float:
        """Program days a task of this kind has before it is due."""
        return self.due_days.get(kind, self.default_due_days)

    def due_at(self, kind: str, opened: datetime, seconds_per_day: float) -> datetime:
        """When a task of this kind opened at `opened` is due (program days, real time)."""
        return opened + timedelta(seconds=self.days_for(kind) * seconds_per_day)


TrackId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")]


class GroupTrack(_Strict):
    """A recurring shared group at a site: the same patients, facilitator(s) and room (or
    telehealth link) on the same weekdays and time, up to a capacity of seats."""

    id: TrackId
    site: SiteId
    name: Annotated[str, Field(min_length=1, max_length=80)]
    level: str
    weekdays: tuple[Weekday, ...] = Field(min_length=1, max_length=7)
    start: LocalTime
    hours: Annotated[float, Field(gt=0, le=8)]
    session_types: tuple[str, ...] = Field(min_length=1)
    capacity: Annotated[int, Field(ge=1, le=50)]
    facilitators: tuple[StaffName, ...] = Field(min_length=1, max_length=3)
    facilitator_ids: tuple[CaseManagerId, ...] = ()
    """The facilitators' staff IDs, in the order of `facilitators`: a console account with
    the facilitator role and one of these IDs (at the track's site) marks its sheets."""
    room: Annotated[str, Field(min_length=1, max_length=48)] | None = None
    phase: Literal["intensive", "step_down"] = "intensive"
    """Intensive tracks hold the intensive phase's patients at their level; step-down
    tracks hold patients through every step-down stage (a patient moves to one at
    step-down, freeing their intensive seat)."""
    telehealth_link: Annotated[str, Field(pattern=r"^https://[^\s]{4,200}$")] | None = None

    @model_validator(mode="after")
    def _meets_somewhere(self) -> GroupTrack:
        if self.room is None and self.telehealth_link is None:
            raise ValueError(f"track {self.id}: needs a room, a telehealth_link or both")
        if self.facilitator_ids and len(self.facilitator_ids) != len(self.facilitators):
            raise ValueError(
                f"track {self.id}: facilitator_ids names one staff ID per facilitator, "
                "in the same order"
            )
        if len(set(self.facilitator_ids)) != len(self.facilitator_ids):
            raise ValueError(f"track {self.id}: a facilitator ID appears twice")
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError(f"track {self.id}: a weekday appears twice")
        if self.start.hour * 60 + self.start.minute + self.hours * 60 > 24 * 60:
            raise ValueError(f"track {self.id}: a session would end after midnight")
        return self

    @property
    def weekly_hours(self) -> float:
        """Hours a week each of its facilitators spends leading it."""
        return len(self.weekdays) * self.hours


class GroupsConfig(_Strict):
    """The program's group tracks, per site (none: each patient's group sessions are
    their own, as before tracks)."""

    tracks: tuple[GroupTrack, ...] = ()


SurveyItemId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")]
SupportAspect = Literal["care", "group", "family", "peer", "help"]


class SurveyItem(_Strict):
    """One question of the program's own satisfaction and support questionnaire, answered
    on a scale of 1 to len(anchors), each point labelled (published instruments such as
    the CSQ-8 are copyrighted: programs word their own)."""

    id: SurveyItemId
    text: Annotated[str, Field(min_length=3, max_length=200, pattern=r"^[^\n\r\t]+$")]
    aspect: SupportAspect
    """What it measures: satisfaction with care, with the group, family support, peer
    support, or help perceived."""
    anchors: tuple[Annotated[str, Field(min_length=1, max_length=40)], ...] = Field(
        min_length=3, max_length=7
    )
    """The labels of the points 1, 2, ... (lowest first)."""


class SurveyConfig(_Strict):
    """The questionnaire sent at step-down, at completion or discharge, and in aftercare
    (a program without one sends none)."""

    items: tuple[SurveyItem, ...] = Field(min_length=1, max_length=12)
    link_days: Annotated[int, Field(ge=1, le=60)] = 14
    """How long the link stays open, in real days (a person follows it, not the program)."""
    aftercare_day: Annotated[int, Field(ge=1, le=730)] = 90
    """The aftercare day on or after which the aftercare questionnaire goes (month 3)."""

    @model_validator(mode="after")
    def _items_distinct(self) -> SurveyConfig:
        ids = [i.id for i in self.items]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"item id(s) {', '.join(twice)} used twice")
        return self


class RiskConfig(_Strict):
    moderate_at: Annotated[int, Field(ge=1, le=4)] = 2
    high_at: Annotated[int, Field(ge=1, le=4)] = 3


class ProgramProtocol(_Strict):
    program: ProgramInfo
    clock: ClockConfig = ClockConfig()
    levels: dict[str, LevelOfCare]
    placement: PlacementConfig
    schedule: ScheduleConfig
    intensive: IntensiveConfig
    step_down: StepDownConfig
    attendance: AttendanceConfig = AttendanceConfig()
    engagement: EngagementConfig = EngagementConfig()
    relapse: RelapseConfig = RelapseConfig()
    aftercare: AftercareConfig
    referrals: ReferralConfig = ReferralConfig()
    family: FamilyConfig = FamilyConfig()
    tasks: TaskConfig = TaskConfig()
    reminders: ReminderConfig = ReminderConfig()
    risk: RiskConfig = RiskConfig()
    groups: GroupsConfig = GroupsConfig()
    survey: SurveyConfig | None = None
    counselling: CounsellingConfig = CounsellingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ProgramProtocol:
        known = set(self.levels)
        for i, rule in enumerate(self.placement.rules):
            if rule.level != ESCALATE and rule.level not in known:
                raise ValueError(f"placement.rules[{i}]: unknown level {rule.level!r}")
        for name, code in (
            ("placement.default_level", self.placement.default_level),
            ("step_down.taper_level", self.step_down.taper_level),
            ("step_down.outpatient_level", self.step_down.outpatient_level),
            *((f"intensive.levels[{i}]", c) for i, c in enumerate(self.intensive.levels)),
        ):
            if code not in known:
                raise ValueError(f"{name}: unknown level {code!r}")
        slot_days = {d for slot in self.schedule.slots for d in slot.weekdays}
        for code, level in self.levels.items():
            for group, band in level.hours.items():
                if not band.contains(level.pattern.weekly_hours):
                    raise ValueError(
                        f"levels.{code}.pattern gives {level.pattern.weekly_hours:g} h/week, "
                        f"outside the {group.value} band {band.describe()}"
                    )
            if level.pattern.visits_per_week > len(slot_days):
                raise ValueError(
                    f"levels.{code}.pattern needs {level.pattern.visits_per_week} session days "
                    f"but schedule.slots offer only {len(slot_days)}"
                )
        for code in self.intensive.levels:
            if self.levels[code].pattern.visits_per_week < self.intensive.min_session_days:
                raise ValueError(
                    f"levels.{code}.pattern has fewer session days than "
                    f"intensive.min_session_days ({self.intensive.min_session_days})"
                )
        if self.step_down.criteria.min_intensive_weeks > self.intensive.max_weeks:
            raise ValueError("step_down.criteria.min_intensive_weeks is above intensive.max_weeks")
        if self.risk.moderate_at > self.risk.high_at:
            raise ValueError("risk.moderate_at is above risk.high_at")
        self._tracks_consistent()
        known_types = {self.schedule.individual_session_type, "family_therapy"}
        unknown = set(self.counselling.session_types) - known_types
        if unknown:
            raise ValueError(
                f"counselling.session_types: {', '.join(map(repr, sorted(unknown)))} not among "
                f"{', '.join(map(repr, sorted(known_types)))}"
            )
        return self

    def _tracks_consistent(self) -> None:
        seen: set[str] = set()
        for i, track in enumerate(self.groups.tracks):
            where = f"groups.tracks[{i}]"
            if track.id in seen:
                raise ValueError(f"{where}: track id {track.id!r} is used twice")
            seen.add(track.id)
            if track.level not in self.levels:
                raise ValueError(f"{where}: unknown level {track.level!r}")
            unknown = set(track.session_types) - set(self.schedule.group_session_types)
            if unknown:
                raise ValueError(
                    f"{where}: session type(s) {', '.join(map(repr, sorted(unknown)))} are not in "
                    "schedule.group_session_types"
                )
            for level, pattern in self._patterns_of(track):
                if len(track.weekdays) < pattern.visits_per_week:
                    raise ValueError(
                        f"{where}: meets {len(track.weekdays)} day(s) a week; "
                        f"level {level} needs {pattern.visits_per_week}"
                    )

    def _patterns_of(self, track: GroupTrack) -> list[tuple[str, SessionPattern]]:
        """The weekly patterns a track's patients follow: its level's in the intensive
        phase, the step-down stages' in step-down."""
        if track.phase == "intensive":
            return [(track.level, self.levels[track.level].pattern)]
        sd = self.step_down
        return [
            (sd.taper_level, sd.taper),
            (sd.outpatient_level, self.levels[sd.outpatient_level].pattern),
        ]

    def day_seconds(self, days: float) -> float:
        return days * self.clock.seconds_per_day


class ProtocolError(ValueError):
    """A program file that cannot be used, with the file, field and reason in one line."""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(
    path: Path, seen: tuple[Path, ...] = (), read: list[Path] | None = None
) -> dict[str, Any]:
    """A program file merged over the files it extends; `read` collects every file read."""
    if read is not None:
        read.append(path)
    if path in seen:
        raise ProtocolError(f"{path.name}: 'extends' loops back to itself")
    try:
        data = read_toml_file(path, "a program file")
    except FileRefused as exc:
        raise ProtocolError(str(exc)) from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ProtocolError(f"{path.name}: extends must be a file name")
    return _deep_merge(_read_toml(path.parent / parent, (*seen, path), read), data)


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as `field.path: reason`, one line (a value
    quoted in it may hold a line break: every run of white space becomes one space)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    text = f"{where}: {message}" + (f" (and {more} more problem(s))" if more else "")
    return " ".join(text.split())


def load_protocol(path: Path, read: list[Path] | None = None) -> ProgramProtocol:
    data = _read_toml(path, read=read)
    try:
        return ProgramProtocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"{path.name}: {describe_validation_error(exc)}") from None


class ProgramCatalog:
    """The programs a clinic runs: one TOML file per program in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Every journey reloads its program at each phase and check-in: a parsed protocol
        # is kept until one of the files it was read from changes (size or mtime).
        self._loaded: dict[str, tuple[list[tuple[Path, int, int]], ProgramProtocol]] = {}

    @classmethod
    def of(cls, directory: Path) -> ProgramCatalog:
        """The process's one catalog of `directory`: a console's requests and a simulated
        clinic's enrolments then parse a program once (again when its files change), not
        once a call (a fresh catalog parses on its first load)."""
        catalog = _SHARED.get(directory)
        if catalog is None:
            catalog = _SHARED.setdefault(directory, cls(directory))
        return catalog

    def path_of(self, program_id: str) -> Path:
        return self.directory / f"{program_id}.toml"

    def load(self, program_id: str) -> ProgramProtocol:
        path = self.path_of(program_id)
        if not path.exists():
            known = ", ".join(self.program_ids()) or "none"
            raise ProtocolError(f"unknown program {program_id!r} (known programs: {known})")
        kept = self._loaded.get(program_id)
        if kept is not None and kept[0] == _stamps(p for p, _, _ in kept[0]):
            return kept[1]
        read: list[Path] = []
        protocol = load_protocol(path, read)
        if protocol.program.id != program_id:
            raise ProtocolError(
                f"{path.name}: program.id is {protocol.program.id!r}, expected {program_id!r}"
            )
        self._loaded[program_id] = (_stamps(read), protocol)
        return protocol

    def program_ids(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.toml"))

    def programs(self) -> list[ProgramProtocol]:
        """Every program the directory holds, in ID order; a file that is no program (the
        sites file shares the directory) or does not load is left out, for views over
        them all."""
        loaded = []
        for program_id in self.program_ids():
            try:
                loaded.append(self.load(program_id))
            except ProtocolError:
                continue
        return loaded


_SHARED: dict[Path, ProgramCatalog] = {}


def _stamps(paths: Iterable[Path]) -> list[tuple[Path, int, int]]:
    """What tells a changed file: its size and modification time (a file gone has none)."""
    stamps = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            stamps.append((p, -1, -1))
            continue
        stamps.append((p, st.st_mtime_ns, st.st_size))
    return stamps
