"""A rate with its counts, shared by the outcomes report and its support section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, computed_field


class Rate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    numerator: int
    denominator: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float | None:
        return None if self.denominator == 0 else self.numerator / self.denominator

    def show(self) -> str:
        if self.rate is None:
            return f"- (0 of {self.denominator})"
        return f"{self.rate:.0%} ({self.numerator} of {self.denominator})"
