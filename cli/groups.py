"""A group session's sign-in sheet on the command line: list the track's sessions, show one
session's roster, or submit its marks (each patient's journey accepts or refuses its own)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from pydantic import ValidationError

from cli.common import EXIT_REFUSED, CliError, care_store, client_for, console, require_worker
from clinical.group_sheets import GroupSheet, SheetLine, parse_stamp, session_stamp
from clinical.protocol import GroupTrack, ProgramCatalog, describe_validation_error
from infra.settings import Settings
from services.group_sheets import SheetRefused, recent_sessions, roster, submit, track_of


async def cmd_group_sheet(args: argparse.Namespace, settings: Settings) -> int:
    catalog = ProgramCatalog.of(settings.programs_dir)
    try:
        track = track_of(catalog, args.program, args.track)
    except SheetRefused as exc:
        raise CliError(str(exc)) from None
    if args.session is None:
        if args.mark:
            raise CliError("group-sheet: --mark needs the --session it marks")
        return _sessions(settings, args, track)
    try:
        starts_at = parse_stamp(args.session)
    except ValueError as exc:
        raise CliError(f"--session: {exc}") from None
    if not args.mark:
        return _roster(settings, args, catalog, track, starts_at)
    marks = []
    for word in args.mark:
        patient, _, status = word.partition("=")
        marks.append({"patient_id": patient, "status": status})
    try:
        sheet = GroupSheet.model_validate(
            {
                "program_id": args.program,
                "track_id": track.id,
                "starts_at": starts_at,
                "marks": marks,
                "submitted_by": args.case_manager,
            }
        )
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None
    client = await client_for(settings)
    await require_worker(client, settings)
    store = care_store(settings)
    try:
        lines = await submit(client, settings.task_queue, store, catalog, sheet)
    except SheetRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    _print(lines, args.json)
    return EXIT_REFUSED if any(line.outcome == "refused" for line in lines) else 0


def _sessions(settings: Settings, args: argparse.Namespace, track: GroupTrack) -> int:
    store = care_store(settings)
    try:
        starts = recent_sessions(store, args.program, track, datetime.now(UTC))
    finally:
        store.dispose()
    if args.json:
        print(json.dumps([session_stamp(s) for s in starts]))
        return 0
    for s in starts:
        console.print(f"{session_stamp(s)}  {s:%a %d %b %H:%M} UTC")
    if not starts:
        console.print(f"{track.id}: no session booked in the past two weeks or the next")
    return 0


def _roster(
    settings: Settings,
    args: argparse.Namespace,
    catalog: ProgramCatalog,
    track: GroupTrack,
    starts_at: datetime,
) -> int:
    store = care_store(settings)
    try:
        found = roster(store, catalog, args.program, track.id, starts_at)
    except SheetRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    if args.json:
        rows = [
            {"patient_id": r.patient_id, "session_id": r.session_id, "status": r.status}
            for r in found.lines
        ]
        print(json.dumps(rows))
        return 0
    console.print(f"{track.name} ({track.id}), {args.session}:")
    for r in found.lines:
        console.print(f"  {r.patient_id}  {found.names.get(r.patient_id, '?'):24} {r.status}")
    return 0


def _print(lines: list[SheetLine], as_json: bool) -> None:
    if as_json:
        print(json.dumps([line.model_dump(mode="json") for line in lines]))
        return
    for line in lines:
        console.print(line.describe())


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    g = sub.add_parser(
        "group-sheet",
        help="a group session's sign-in sheet: sessions, roster, or submit its marks",
    )
    g.add_argument("track", help="the group track, e.g. north-morning")
    g.add_argument("--program", default="default-iop")
    g.add_argument("--session", help="the session's start, e.g. 20270301T1400Z (UTC)")
    g.add_argument(
        "--mark",
        action="append",
        metavar="PATIENT=STATUS",
        help="attended, missed or excused; once per patient",
    )
    g.add_argument("--case-manager", help="who marked the sheet (default: each patient's)")
    g.add_argument("--json", action="store_true")
