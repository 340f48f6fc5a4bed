"""The journey's searchable state for operators (phase, case manager, site, risk, next
contact due; never PHI), upserted from workflow code."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from clinical.journey import JourneyState
    from clinical.status import next_contact_day
    from infra import visibility


class SearchAttributes:
    """Upserts only the attributes whose value changed (each upsert is a history event)."""

    def __init__(self) -> None:
        self._shown: dict[str, Any] = {}

    def show(self, st: JourneyState, today: float) -> None:
        due = next_contact_day(st, today)
        wanted: dict[str, Any] = {
            visibility.PHASE.name: st.phase.value,
            visibility.CASE_MANAGER.name: st.case_manager_id,
            visibility.SITE.name: st.site_id,
            visibility.PROGRAM.name: st.program_id,
            visibility.RISK.name: st.risk,
            visibility.ENROLLED_AT.name: st.enrolled_at,
            visibility.NEXT_CONTACT_DUE.name: None if due is None else st.clock.instant(due),
            visibility.ATTENDANCE_RATE.name: st.summary().rate,
        }
        keys = {k.name: k for k in visibility.ALL_KEYS}
        updates: list[SearchAttributeUpdate[Any]] = []
        for name, value in wanted.items():
            if name in self._shown and self._shown[name] == value:
                continue
            key = keys[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))
            self._shown[name] = value
        if updates:
            workflow.upsert_search_attributes(updates)
