"""Enrolment: a patient's journey started from an enrolment file (or a generated one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from cli.common import EXIT_REFUSED, CliError, client_for, console
from clinical.assessment import Enrolment
from clinical.identifiers import journey_workflow_id
from clinical.journey import JourneyInput
from clinical.placement import PlacementRefused, place_enrolment
from clinical.protocol import ProgramCatalog, ProtocolError, describe_validation_error
from infra.settings import Settings
from workflows.patient_journey import PatientJourneyWorkflow


def load_enrolment(path: Path) -> Enrolment:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path.name}: not valid JSON ({exc})") from None
    try:
        return Enrolment.model_validate(raw)
    except ValidationError as exc:
        raise CliError(f"{path.name}: {describe_validation_error(exc)}") from None


async def start_journey(
    client: Client, settings: Settings, enrolment: Enrolment
) -> WorkflowHandle[Any, Any]:
    try:
        protocol = ProgramCatalog(settings.programs_dir).load(enrolment.program_id)
    except ProtocolError as exc:
        raise CliError(str(exc)) from None
    try:
        place_enrolment(enrolment, protocol)
    except PlacementRefused as exc:
        raise CliError(str(exc)) from None
    try:
        return await client.start_workflow(
            PatientJourneyWorkflow.run,
            JourneyInput(enrolment=enrolment, protocol=protocol),
            id=journey_workflow_id(enrolment.patient_id),
            task_queue=settings.task_queue,
            # Readmission under the same identifier would share the first admission's
            # idempotency keys in the store (its sessions, phases and tasks would be taken
            # for repeats and dropped): refused until admissions are keyed apart.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        workflow_id = journey_workflow_id(enrolment.patient_id)
        described = await client.get_workflow_handle(workflow_id).describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            raise CliError(
                f"patient {enrolment.patient_id} is already enrolled (journey {workflow_id})",
                EXIT_REFUSED,
            ) from None
        raise CliError(
            f"patient {enrolment.patient_id} was enrolled before and their journey has ended; "
            "readmission under the same identifier is not supported yet: enrol them with a "
            "new patient identifier",
            EXIT_REFUSED,
        ) from None


async def cmd_enrol(args: argparse.Namespace, settings: Settings) -> int:
    if args.generate:
        from demo.cohort import synthetic_enrolment

        try:
            enrolment = synthetic_enrolment(args.case_manager, args.site, args.program)
        except ValidationError as exc:
            raise CliError(describe_validation_error(exc)) from None
    elif args.file:
        enrolment = load_enrolment(Path(args.file))
    else:
        raise CliError("give an enrolment file, or --generate")
    client = await client_for(settings)
    await start_journey(client, settings, enrolment)
    console.print(f"enrolled {enrolment.patient_id} in {enrolment.program_id}")
    return 0
