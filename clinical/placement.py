"""Level-of-care placement by the program's own configurable rules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from clinical.assessment import Assessment, Enrolment
from clinical.protocol import ESCALATE, HoursBand, ProgramProtocol


class Placement(BaseModel):
    """Where the rules place a patient, and why (which ratings drove it)."""

    model_config = ConfigDict(frozen=True)

    level: str
    """A level code of the program's code system, or "higher" (refer out)."""
    code_system: str
    reason: str
    drivers: dict[str, int]
    hours_band: HoursBand | None
    overridden_by: str | None = None
    override_reason: str | None = None
    rules_level: str | None = None
    """Where the rules placed the patient, when a case manager overrode them."""

    @property
    def refers_out(self) -> bool:
        return self.level == ESCALATE

    def explain(self) -> str:
        drivers = ", ".join(f"{k}={v}" for k, v in self.drivers.items()) or "none"
        told = f"level {self.level} ({self.code_system}): {self.reason} [drivers: {drivers}]"
        if self.overridden_by is None:
            return told
        return (
            f"level {self.level} ({self.code_system}), set by {self.overridden_by} over the "
            f"rules' level {self.rules_level} ({self.reason} [drivers: {drivers}]): "
            f"{self.override_reason}"
        )


class PlacementRefused(ValueError):
    """A placement override the program cannot take."""


def place_enrolment(enrolment: Enrolment, protocol: ProgramProtocol) -> Placement:
    """The rules' placement, or the enrolling case manager's override of it."""
    placement = place(enrolment.assessment, protocol)
    override = enrolment.placement_override
    if override is None:
        return placement
    levels = [*protocol.levels, ESCALATE]
    if override.level not in levels:
        raise PlacementRefused(
            f"placement_override.level {override.level!r} is not a level of program "
            f"{protocol.program.id}: use one of {', '.join(levels)}"
        )
    if override.level == placement.level:
        raise PlacementRefused(
            f"the rules already place this patient at level {placement.level}; "
            "an override must name another level"
        )
    chosen = _placement(
        override.level, placement.reason, placement.drivers, enrolment.assessment, protocol
    )
    return chosen.model_copy(
        update={
            "overridden_by": enrolment.case_manager_id,
            "override_reason": override.reason,
            "rules_level": placement.level,
        }
    )


def place(assessment: Assessment, protocol: ProgramProtocol) -> Placement:
    ratings = assessment.ratings.as_dict()
    for rule in protocol.placement.rules:
        any_hits: dict[str, int] = {
            d: ratings[d] for d, at in rule.when_any.items() if ratings[d] >= at
        }
        all_met = all(ratings[d] >= at for d, at in rule.when_all.items())
        if (not rule.when_any or any_hits) and all_met:
            drivers: dict[str, int] = {**any_hits, **{d: ratings[d] for d in rule.when_all}}
            return _placement(rule.level, rule.reason, drivers, assessment, protocol)
    return _placement(
        protocol.placement.default_level,
        protocol.placement.default_reason,
        {},
        assessment,
        protocol,
    )


def _placement(
    level: str,
    reason: str,
    drivers: dict[str, int],
    assessment: Assessment,
    protocol: ProgramProtocol,
) -> Placement:
    band = None if level == ESCALATE else protocol.levels[level].hours[assessment.age_group]
    return Placement(
        level=level,
        code_system=protocol.program.level_code_system,
        reason=reason,
        drivers=dict(sorted(drivers.items())),
        hours_band=band,
    )


def risk_level(assessment: Assessment, protocol: ProgramProtocol) -> str:
    """low / moderate / high from the highest dimension rating."""
    top = max(assessment.ratings.as_dict().values())
    if top >= protocol.risk.high_at:
        return "high"
    if top >= protocol.risk.moderate_at:
        return "moderate"
    return "low"
