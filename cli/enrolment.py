"""Enrolment: a patient's journey started from an enrolment file (or a generated one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle

from cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, CliError, care_store, client_for, console
from clinical.assessment import Enrolment
from clinical.journey import JourneyInput
from clinical.protocol import describe_validation_error
from clinical.textfile import FileRefused, read_text_file
from infra.settings import Settings
from services.enrolment import EnrolmentRefused, enrol, journey_input

ENROLMENT_FILE_BYTES = 64 * 1024
"""An enrolment is a few kilobytes: anything larger is not one."""


def load_enrolment(path: Path) -> Enrolment:
    try:
        raw = json.loads(read_text_file(path, "an enrolment", ENROLMENT_FILE_BYTES))
    except FileRefused as exc:
        raise CliError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path.name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CliError(f"{path.name}: nested too deeply to be an enrolment") from None
    try:
        return Enrolment.model_validate(raw)
    except ValidationError as exc:
        raise CliError(f"{path.name}: {describe_validation_error(exc)}") from None


def prepare_journey(settings: Settings, enrolment: Enrolment) -> JourneyInput:
    """Everything about the enrolment checked (program, site, what cannot be true,
    placement) before anything is started: a bad one never reaches Temporal."""
    try:
        store = care_store(settings)
    except CliError:
        store = None  # no store (of this version) yet: no closure can have been announced
    try:
        return journey_input(enrolment, settings, store)
    except EnrolmentRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        if store is not None:
            store.dispose()


async def start_journey(
    client: Client, settings: Settings, enrolment: Enrolment
) -> WorkflowHandle[Any, Any]:
    return await _start(client, settings, prepare_journey(settings, enrolment))


async def _start(
    client: Client, settings: Settings, journey: JourneyInput
) -> WorkflowHandle[Any, Any]:
    try:
        return await enrol(client, settings.task_queue, journey)
    except EnrolmentRefused as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_REFUSED) from None


async def cmd_enrol(args: argparse.Namespace, settings: Settings) -> int:
    if args.generate:
        from simulation.patients import synthetic_enrolment

        try:
            enrolment = synthetic_enrolment(args.case_manager, args.site, args.program)
        except ValidationError as exc:
            raise CliError(describe_validation_error(exc)) from None
    elif args.file:
        enrolment = load_enrolment(Path(args.file))
    else:
        raise CliError("give an enrolment file, or --generate")
    journey = prepare_journey(settings, enrolment)
    await _start(await client_for(settings), settings, journey)
    console.print(f"enrolled {enrolment.patient_id} in {enrolment.program_id}")
    return 0
