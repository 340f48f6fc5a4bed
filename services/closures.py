"""Announcing an unplanned closure (snow, an outage): recorded once for the site, then handed
to every active journey of the site, each of which takes it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from clinical.identifiers import journey_workflow_id
from clinical.sites import Closure, SiteDirectory, SiteError
from infra.store import CareStore
from workflows.patient_journey import PatientJourneyWorkflow

ANSWER_TIMEOUT = timedelta(seconds=15)


class ClosureRefused(ValueError):
    """A closure that cannot be announced (unknown site, a date already past): one line."""


@dataclass
class ClosureAnnouncement:
    """What announcing a closure did: whether it was new for the site, and each active
    patient's journey's answer."""

    new: bool
    applied: dict[str, str] = field(default_factory=dict)
    """Patients whose journey took it now, with its answer."""
    already: list[str] = field(default_factory=list)
    """Patients whose journey had it from an earlier announcement."""
    not_taken: dict[str, str] = field(default_factory=dict)
    """Patients whose journey refused it (ended, on the old UTC calendar), with why."""
    unreachable: list[str] = field(default_factory=list)
    """Patients whose journey did not answer (no worker): announce again to reach them."""


def check_closure(closure: Closure, sites: SiteDirectory, now: datetime) -> None:
    try:
        site = sites.get(closure.site_id)
    except SiteError as exc:
        raise ClosureRefused(str(exc)) from None
    today = now.astimezone(site.zone_info).date()
    if closure.date < today:
        raise ClosureRefused(
            f"date: {closure.date} has passed at site {site.site_id} (today is {today} there)"
        )


async def announce_closure(
    client: Client, store: CareStore, sites: SiteDirectory, closure: Closure, now: datetime
) -> ClosureAnnouncement:
    check_closure(closure, sites, now)
    result = ClosureAnnouncement(new=store.record_closure(closure, now))
    # Every active patient, also on a repeat: a journey that has it answers ClosureKnown
    # before anything reaches its history, so only the ones missed before take it.
    for patient_id in store.active_patients_at(closure.site_id):
        handle = client.get_workflow_handle(journey_workflow_id(patient_id))
        try:
            answer = await handle.execute_update(
                PatientJourneyWorkflow.announce_closure, closure, rpc_timeout=ANSWER_TIMEOUT
            )
            result.applied[patient_id] = str(answer)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if getattr(cause, "type", None) == "ClosureKnown":
                result.already.append(patient_id)
            else:
                result.not_taken[patient_id] = getattr(cause, "message", None) or str(exc)
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            result.unreachable.append(patient_id)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                result.not_taken[patient_id] = "the journey has ended"
            else:
                result.unreachable.append(patient_id)
    return result
