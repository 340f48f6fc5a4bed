"""The simulated patients' behaviour model, with its parameters in `behaviour.toml` (where
each figure comes from is written there). Draws are seeded by the run's seed, the patient
and the session's number, so a patient behaves the same under every program compared: a
longer program only gives them more sessions to miss or to drop out at."""

from __future__ import annotations

import hashlib
import math
import random
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from simulation.patients import Attendance

BEHAVIOUR_FILE = Path(__file__).with_name("behaviour.toml")

_Probability = Field(ge=0, le=1)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttendanceModel(_Section):
    propensity_alpha: float = Field(gt=0)
    propensity_beta: float = Field(gt=0)
    unrecorded: float = _Probability


class DropoutModel(_Section):
    per_session: float = Field(ge=0, lt=1)
    discharge_after_missed: int = Field(ge=1)


class AftercareModel(_Section):
    use_risk: float = _Probability
    reachability_low: float = _Probability
    reachability_high: float = _Probability


class Behaviour(_Section):
    attendance: AttendanceModel
    dropout: DropoutModel
    aftercare: AftercareModel

    def attendance_of(self, seed: int, patient_id: str) -> Attendance:
        """The patient's sessions' fates: with their own propensity to attend, until the
        session at which they stop coming (if they do), then missed."""
        patient = seeded(str(seed), patient_id)
        propensity = patient.betavariate(
            self.attendance.propensity_alpha, self.attendance.propensity_beta
        )
        stops_at = _first_success(patient.random(), self.dropout.per_session)

        def fate(n: int) -> str:
            if n >= stops_at:
                return "missed"
            draw = seeded(str(seed), patient_id, str(n)).random()
            if draw < self.attendance.unrecorded:
                return "none"
            kept = self.attendance.unrecorded
            return "attended" if draw < kept + (1 - kept) * propensity else "missed"

        return fate


def _first_success(draw: float, chance: float) -> float:
    """The trial (from 1) of the first success at `chance` a trial, from one uniform draw
    (the geometric distribution's inverse); never for a chance of 0."""
    if chance <= 0:
        return math.inf
    return math.floor(math.log(1 - draw) / math.log(1 - chance)) + 1


def seeded(*parts: str) -> random.Random:
    """A generator for these parts alone (stable across processes, unlike hash())."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def load_behaviour(path: Path = BEHAVIOUR_FILE) -> Behaviour:
    with path.open("rb") as f:
        return Behaviour.model_validate(tomllib.load(f))
