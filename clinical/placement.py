"""Level-of-care placement by the program's own configurable rules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from clinical.assessment import Assessment
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

    @property
    def refers_out(self) -> bool:
        return self.level == ESCALATE

    def explain(self) -> str:
        drivers = ", ".join(f"{k}={v}" for k, v in self.drivers.items()) or "none"
        return f"level {self.level} ({self.code_system}): {self.reason} [drivers: {drivers}]"


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
