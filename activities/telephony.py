"""Telephony: the adapter interface and the simulated provider used for demos and tests.

The simulated provider answers from a seeded model of each patient (how reachable they are,
how likely to have used), so a cohort behaves believably and the same cohort behaves the
same way every run."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Protocol

from sqlalchemy import select

from clinical.aftercare import CallOutcome, CheckIn
from infra.store import CareStore, telephony_ledger, utcnow


class Telephony(Protocol):
    def place_call(
        self, reference: str, patient_id: str, phone: str
    ) -> tuple[CallOutcome, CheckIn | None]:
        """Place one call. A reference seen before returns the earlier result, uncalled."""
        ...


def _seeded(*parts: str) -> random.Random:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class SimulatedTelephony:
    def __init__(self, store: CareStore, seed: str = "carepath", use_risk: float = 0.02) -> None:
        """`use_risk`: the highest chance a simulated patient reports use at a check-in."""
        self.store = store
        self.seed = seed
        self.use_risk = use_risk

    def place_call(
        self, reference: str, patient_id: str, phone: str
    ) -> tuple[CallOutcome, CheckIn | None]:
        with self.store.transaction() as conn:
            row = conn.execute(
                select(telephony_ledger).where(telephony_ledger.c.reference == reference)
            ).first()
            if row is not None:
                answers = json.loads(row.answers_json) if row.answers_json else None
                return CallOutcome(row.outcome), CheckIn(**answers) if answers else None
            outcome, check_in = self._answer(reference, patient_id)
            self.store.insert_once(
                conn,
                telephony_ledger,
                [
                    {
                        "reference": reference,
                        "patient_id": patient_id,
                        "placed_at": utcnow(),
                        "outcome": outcome.value,
                        "answers_json": check_in.model_dump_json() if check_in else None,
                    }
                ],
            )
        return outcome, check_in

    def _answer(self, reference: str, patient_id: str) -> tuple[CallOutcome, CheckIn | None]:
        patient = _seeded(self.seed, patient_id)
        reachability = patient.uniform(0.55, 0.95)
        use_risk = patient.uniform(0.1, 1.0) * self.use_risk
        call = _seeded(self.seed, reference)
        draw = call.random()
        if draw > reachability:
            return CallOutcome.unreachable, None
        if draw > reachability - 0.02:
            return CallOutcome.declined, None
        days_of_use = call.randint(1, 8) if call.random() < use_risk else 0
        return CallOutcome.reached, CheckIn(days_of_use=days_of_use)
