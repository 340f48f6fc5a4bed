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
from clinical.protocol import describe_validation_error
from infra.settings import Settings
from services.enrolment import EnrolmentRefused, enrol, journey_input


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
        store = care_store(settings)
    except CliError:
        store = None  # no store (of this version) yet: no closure can have been announced
    try:
        journey = journey_input(enrolment, settings, store)
        return await enrol(client, settings.task_queue, journey)
    except EnrolmentRefused as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_REFUSED) from None
    finally:
        if store is not None:
            store.dispose()


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
