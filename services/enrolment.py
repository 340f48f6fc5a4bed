"""The one enrolment service: validate an enrolment against its program and site, start the
patient's journey, and refuse a patient enrolled before."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from clinical.assessment import Enrolment, check_plausible
from clinical.identifiers import journey_workflow_id
from clinical.journey import JourneyInput
from clinical.placement import PlacementRefused, place_enrolment
from clinical.protocol import ProgramCatalog, ProtocolError
from clinical.sites import SiteDirectory, SiteError
from infra.settings import Settings
from infra.store import CareStore
from workflows.patient_journey import PatientJourneyWorkflow

REQUEST_KEY = "request_key"  # the memo's field: which request started the journey


class EnrolmentRefused(Exception):
    """An enrolment that cannot start: one line; `bad_input` (the request is wrong) or a
    refusal (the patient is enrolled already)."""

    def __init__(self, message: str, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def journey_input(
    enrolment: Enrolment,
    settings: Settings,
    store: CareStore | None = None,
    now: datetime | None = None,
) -> JourneyInput:
    """The journey's first input: the enrolment, its program and its site, with the site's
    unplanned closures (from `store`, where given). Refused, in one line, if the program or
    site is unknown, the placement impossible, or the data cannot be true at the site's
    date (`now`, the real time unless given)."""
    try:
        protocol = ProgramCatalog.of(settings.programs_dir).load(enrolment.program_id)
        site = SiteDirectory.load(settings.sites_file).get(enrolment.site_id)
        today = (now or datetime.now(UTC)).astimezone(site.zone_info).date()
        check_plausible(enrolment, today)
        place_enrolment(enrolment, protocol)
    except (ProtocolError, SiteError, PlacementRefused, ValueError) as exc:
        raise EnrolmentRefused(str(exc)) from None
    closures = () if store is None else tuple(store.closures(site.site_id))
    return JourneyInput(enrolment=enrolment, protocol=protocol, site=site, closures=closures)


async def enrol(
    client: Client,
    task_queue: str,
    journey: JourneyInput,
    request_key: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start the journey; a patient enrolled before is refused (not a second journey),
    unless by this same request: a retried request with its `request_key` (kept in the
    journey's memo) finds the journey it started."""
    assert journey.enrolment is not None
    patient_id = journey.enrolment.patient_id
    workflow_id = journey_workflow_id(patient_id)
    try:
        return await client.start_workflow(
            PatientJourneyWorkflow.run,
            journey,
            id=workflow_id,
            task_queue=task_queue,
            # Readmission under the same identifier would share the first admission's
            # idempotency keys in the store (its sessions, phases and tasks would be taken
            # for repeats and dropped): refused until admissions are keyed apart.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={REQUEST_KEY: request_key} if request_key else None,
        )
    except WorkflowAlreadyStartedError:
        # The raw description: the SDK's would also decode the search attributes, which
        # the time-skipping test server returns in a form it cannot read (a datetime).
        info = (
            await client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(
                    namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
                )
            )
        ).workflow_execution_info
        if request_key and REQUEST_KEY in info.memo.fields:
            (started_by,) = await client.data_converter.decode([info.memo.fields[REQUEST_KEY]])
            if started_by == request_key:
                return client.get_workflow_handle(workflow_id)
        if WorkflowExecutionStatus(info.status) == WorkflowExecutionStatus.RUNNING:
            raise EnrolmentRefused(
                f"patient {patient_id} is already enrolled (journey {workflow_id})",
                bad_input=False,
            ) from None
        raise EnrolmentRefused(
            f"patient {patient_id} was enrolled before and their journey has ended; "
            "readmission under the same identifier is not supported yet: enrol them with a "
            "new patient identifier",
            bad_input=False,
        ) from None
