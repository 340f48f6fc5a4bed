"""The simulated clinic's telephony: answers from a seeded model of each patient (how
reachable they are, how likely to have used), so a cohort behaves believably and the same
cohort behaves the same way every run. `seeded_answer` is the model, shared by the
in-process provider here and the HTTP provider service (simulation.telephony_provider).
The in-process provider keeps a ledger, as a real provider would, so a retried call is
never placed twice."""

from __future__ import annotations

import random
import re

from activities.telephony import CallPlaced
from clinical.aftercare import CallOutcome, CallReport, CheckIn
from clinical.instruments import (
    BAM_PROTECTIVE_ITEMS,
    BAM_RISK_ITEMS,
    BAM_USE_ITEMS,
    BamAnswers,
    Phq9Answers,
)
from infra.store import CareStore
from simulation.behaviour import seeded as _seeded


class SimulatedTelephony:
    """The in-process provider of the simulated cohorts (what-if, cohort benchmark, workflow
    tests): chosen for speed, it says how a call ended as it places it, where the HTTP
    provider (simulation.telephony_provider, and a real one) calls back later."""

    def __init__(
        self,
        store: CareStore,
        seed: str = "carepath",
        use_risk: float = 0.02,
        reachability: tuple[float, float] = (0.55, 0.95),
    ) -> None:
        """`use_risk`: the highest chance a simulated patient reports use at a check-in;
        `reachability`: the range each patient's chance of answering is drawn from."""
        self.store = store
        self.seed = seed
        self.use_risk = use_risk
        self.reachability = reachability

    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        outcome, check_in = self.store.telephony_call(
            reference,
            patient_id,
            lambda: seeded_answer(
                self.seed, patient_id, reference, instruments, self.use_risk, self.reachability
            ),
        )
        return answered(reference, outcome, check_in)


def answered(reference: str, outcome: CallOutcome, check_in: CheckIn | None) -> CallPlaced:
    """An in-process provider's answer: the call placed, and how it ended."""
    report = CallReport(reference=reference, outcome=outcome, check_in=check_in)
    return CallPlaced(provider_call_id=f"in-process:{reference}", report=report)


def seeded_answer(
    seed: str,
    patient_id: str,
    reference: str,
    instruments: tuple[str, ...],
    use_risk: float = 0.02,
    reachability: tuple[float, float] = (0.55, 0.95),
) -> tuple[CallOutcome, CheckIn | None]:
    """How the seeded patient answers the call `reference`: the same every time."""
    patient = _seeded(seed, patient_id)
    reach = patient.uniform(*reachability)
    risk = patient.uniform(0.1, 1.0) * use_risk
    strain = patient.betavariate(2, 6)  # how hard recovery is for this patient, 0-1
    call = _seeded(seed, reference)
    draw = call.random()
    if draw > reach:
        return CallOutcome.unreachable, None
    if draw > reach - 0.02:
        return CallOutcome.declined, None
    days_of_use = call.randint(1, 8) if call.random() < risk * _early(reference) else 0
    return CallOutcome.reached, CheckIn(
        days_of_use=days_of_use,
        bam=_bam(call, strain, days_of_use) if "bam" in instruments else None,
        phq9=_phq9(call, strain) if "phq9" in instruments else None,
    )


def _early(reference: str) -> float:
    """Relapse is likeliest soon after treatment: the first month's check-ins carry half as
    much risk again, those after month 3 a little over half."""
    found = re.search(r"FU-D(\d+)", reference)
    day = int(found.group(1)) if found else 90
    return 1.5 if day <= 30 else 1.0 if day <= 90 else 0.6


def _likert(rng: random.Random, mean: float, top: int) -> int:
    return max(0, min(top, round(rng.gauss(mean, 0.8))))


def _bam(rng: random.Random, strain: float, days_of_use: int) -> BamAnswers:
    """BAM answers consistent with the reported use and the patient's strain."""
    items = []
    for n in range(1, 18):
        if n in BAM_USE_ITEMS:
            items.append(min(4, (days_of_use + 2) // 3))
        elif n in BAM_RISK_ITEMS:
            items.append(_likert(rng, 4 * strain, 4))
        elif n in BAM_PROTECTIVE_ITEMS:
            items.append(_likert(rng, 3.2 - 2.5 * strain, 4))
        else:
            items.append(_likert(rng, 1.5 * strain, 4))
    return BamAnswers(items=tuple(items))


def _phq9(rng: random.Random, strain: float) -> Phq9Answers:
    items = [_likert(rng, 2 * strain, 3) for _ in range(8)]
    items.append(1 if rng.random() < 0.02 + 0.05 * strain else 0)  # thoughts of self-harm
    return Phq9Answers(items=tuple(items))
