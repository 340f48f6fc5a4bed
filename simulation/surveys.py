"""Simulated patients answering their questionnaires: each follows the link in the message
the outbox holds for them (the link the text or e-mail carries) through the same service the
survey page uses (`services.surveys`), so a simulated answer passes the same signature,
expiry and single-use checks as a real one.

Seeded: whether a patient answers a given questionnaire, and their answers, are drawn from
the run's seed, the patient and the occasion. How supported they feel follows how they have
been attending (a patient who comes feels more supported, as the literature on engagement
would have it; this is the simulation's assumption, not a finding)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from clinical.surveys import SurveyRefused
from infra.store import CareStore
from infra.store.surveys import SURVEY_MESSAGE
from services.surveys import SurveyDoor

ANSWERS = 0.75
"""The chance a patient answers a questionnaire at all."""


def _rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("/".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class SurveyRespondents:
    """The simulated patients of one run, answering what reached them."""

    store: CareStore
    door: SurveyDoor
    seed: int
    attendance_of: Callable[[str], float | None] = lambda patient_id: None
    """Each patient's attendance rate so far (None: not known)."""
    seen: set[str] = field(default_factory=set)
    answered: int = 0
    declined: int = 0

    def answer_due(self, patient_ids: set[str], now: datetime | None) -> int:
        """Follow every new questionnaire link of these patients once (at `now`; None: each
        the day after it was sent, as a what-if's patients do on its simulated calendar);
        how many answered."""
        before = self.answered
        for patient_id in sorted(patient_ids):
            sent = {s.key: s.issued_at for s in self.store.surveys(patient_id)}
            for message in self.store.outbox(patient_id):
                if message.kind != SURVEY_MESSAGE or message.key in self.seen:
                    continue
                self.seen.add(message.key)
                at = now or sent.get(message.key, message.created_at) + timedelta(days=1)
                self._follow(patient_id, message.key, message.body.rsplit("/", 1)[-1], at)
        return self.answered - before

    def _follow(self, patient_id: str, key: str, link: str, now: datetime) -> None:
        rng = _rng(self.seed, patient_id, key)
        if rng.random() >= ANSWERS:
            self.declined += 1
            return
        try:
            opened = self.door.open(link, now)
        except SurveyRefused:
            return  # answered or expired meanwhile: nothing to do
        rate = self.attendance_of(patient_id)
        level = 1.5 + 3.0 * (rate if rate is not None else rng.random())
        given = {
            item.id: str(min(len(item.anchors), max(1, round(level + rng.gauss(0, 0.8)))))
            for item in opened.config.items
        }
        self.door.answer(link, given, now)
        self.answered += 1
