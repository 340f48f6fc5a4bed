"""What a case manager's console lists: the patients a user may see (one case manager's,
or a site's for a supervisor), each with where they are, and the inbox of tasks. Read from
the store alone, so it answers with no worker running."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from infra.store import CareStore, CaseloadEntry, InboxTask


@dataclass(frozen=True)
class Scope:
    """Whose patients: one case manager's, or a whole site's (a supervisor's)."""

    case_manager_id: str | None = None
    site_id: str | None = None

    def holds(self, case_manager_id: str, site_id: str) -> bool:
        return (self.case_manager_id in (None, case_manager_id)) and (
            self.site_id in (None, site_id)
        )


@dataclass(frozen=True)
class CaseloadRow:
    entry: CaseloadEntry
    name: str  # PHI: shown to those who may see it, logged never


def caseload(store: CareStore, scope: Scope, now: datetime) -> list[CaseloadRow]:
    """Active patients in `scope` with their figures and names."""
    entries = store.caseload(now, case_manager_id=scope.case_manager_id, site_id=scope.site_id)
    names = store.patient_names([e.patient.patient_id for e in entries])
    return [CaseloadRow(e, names.get(e.patient.patient_id, "")) for e in entries]


def overdue(task: InboxTask, now: datetime) -> bool:
    return task.open and task.due_at is not None and task.due_at < now


def inbox(store: CareStore, scope: Scope, now: datetime) -> list[InboxTask]:
    """Open tasks in `scope`: overdue first, then by due date, undated last."""
    found = store.tasks(case_manager_id=scope.case_manager_id, site_id=scope.site_id)
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(found, key=lambda t: (not overdue(t, now), t.due_at or far, t.id))
