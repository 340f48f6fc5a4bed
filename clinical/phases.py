"""The phases of a patient's path through the program, and how it can end."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    intake = "intake"
    intensive = "intensive"
    step_down = "step_down"
    aftercare = "aftercare"
    # Terminal phases: the journey has ended, with this outcome.
    completed = "completed"
    discharged = "discharged"
    withdrawn = "withdrawn"
    escalated = "escalated"
    lost_to_contact = "lost_to_contact"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def session_code(self) -> str:
        """Short code used in session identifiers (INT1-W03-S2)."""
        return {"intensive": "INT", "step_down": "STP"}.get(self.value, "GEN")


TERMINAL_PHASES = frozenset(
    {Phase.completed, Phase.discharged, Phase.withdrawn, Phase.escalated, Phase.lost_to_contact}
)
ACTIVE_PHASES = tuple(p for p in Phase if p not in TERMINAL_PHASES)
