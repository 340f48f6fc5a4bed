"""Sites on the command line: announce a site's unplanned closure, list its closures; the
capacity of a program's group tracks."""

from __future__ import annotations

import argparse
import getpass
import json
import re
from datetime import UTC, date, datetime, tzinfo

from pydantic import ValidationError
from rich.table import Table

from cli.common import EXIT_UNREACHABLE, CliError, care_store, client_for, console
from clinical.counsellors import CounsellorLoad, load_view, weeks_at
from clinical.groups import TrackCapacity, capacity_view, facilitator_hours
from clinical.protocol import (
    ProgramCatalog,
    ProgramProtocol,
    ProtocolError,
    describe_validation_error,
)
from clinical.sites import Closure, SiteDirectory, SiteError
from infra.settings import Settings
from services.closures import ClosureRefused, announce_closure


def _operator() -> str:
    """Who announces: the operating-system user running the command (the audit's actor)."""
    try:
        user = getpass.getuser()
    except OSError:
        return "operator"
    return user[:32] if re.fullmatch(r"[A-Za-z0-9._@-]{1,32}", user) else "operator"


def _sites(settings: Settings) -> SiteDirectory:
    try:
        return SiteDirectory.load(settings.sites_file)
    except SiteError as exc:
        raise CliError(str(exc)) from None


async def cmd_closure(args: argparse.Namespace, settings: Settings) -> int:
    sites = _sites(settings)
    try:
        site = sites.get(args.site)
    except SiteError as exc:
        raise CliError(str(exc)) from None
    if args.action == "list":
        return _list(settings, site.site_id, site.zone, sites, args.json)
    if not args.date or not args.reason:
        raise CliError("closure announce: give --date YYYY-MM-DD and --reason")
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        raise CliError(f"date: {args.date!r} is not a date (YYYY-MM-DD)") from None
    try:
        closure = Closure(
            site_id=site.site_id, date=day, reason=args.reason, announced_by=_operator()
        )
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None
    store = care_store(settings)
    try:
        client = await client_for(settings)
        done = await announce_closure(client, store, sites, closure, datetime.now(UTC))
    except ClosureRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    if args.json:
        print(json.dumps(done.__dict__, indent=2, sort_keys=True))
    else:
        said = "announced" if done.new else "announced before; sent again to any patient it missed"
        console.print(f"{site.site_id} closed on {day} ({closure.reason}): {said}")
        console.print(
            f"{len(done.applied)} journey(s) took it now, {len(done.already)} had it already, "
            f"{len(done.not_taken)} did not take it, {len(done.unreachable)} did not answer"
        )
        for patient_id, answer in sorted(done.applied.items()):
            console.print(f"  {patient_id}: {answer}")
        for patient_id, why in sorted(done.not_taken.items()):
            console.print(f"  {patient_id}: not taken: {why}")
    if done.unreachable:
        raise CliError(
            f"{len(done.unreachable)} journey(s) did not answer (is a worker running?); "
            "announce the closure again to reach them",
            EXIT_UNREACHABLE,
        )
    return 0


def _list(settings: Settings, site_id: str, zone: str, sites: SiteDirectory, as_json: bool) -> int:
    store = care_store(settings)
    try:
        found = store.closures(site_id)
    finally:
        store.dispose()
    holidays = sites.get(site_id).holidays
    if as_json:
        print(json.dumps([c.model_dump(mode="json") for c in found], indent=2))
        return 0
    console.print(
        f"{site_id} ({zone}): yearly holidays {', '.join(h.name for h in holidays) or 'none'}"
    )
    for c in found:
        console.print(f"  {c.date} {c.reason} (announced by {c.announced_by})")
    if not found:
        console.print("  no unplanned closure announced")
    return 0


def _program_at(
    args: argparse.Namespace, settings: Settings
) -> tuple[ProgramProtocol, SiteDirectory]:
    """`--program`'s protocol and the sites, `--site` (if given) checked to be one."""
    try:
        protocol = ProgramCatalog.of(settings.programs_dir).load(args.program)
    except ProtocolError as exc:
        raise CliError(str(exc)) from None
    sites = _sites(settings)
    if args.site is not None:
        try:
            sites.get(args.site)
        except SiteError as exc:
            raise CliError(str(exc)) from None
    return protocol, sites


def cmd_tracks(args: argparse.Namespace, settings: Settings) -> int:
    """Each group track's seats taken and free, its waitlist and how long the first has
    waited, and each facilitator's hours a week."""
    protocol, _ = _program_at(args, settings)
    tracks = [t for t in protocol.groups.tracks if args.site in (None, t.site)]
    store = care_store(settings)
    try:
        loads = store.track_loads(args.program)
    finally:
        store.dispose()
    view = capacity_view(tracks, loads, datetime.now(UTC))
    hours = facilitator_hours(tracks)
    if args.json:
        print(json.dumps({"tracks": [_track_json(c) for c in view], "facilitator_hours": hours}))
        return 0
    where = f" at {args.site}" if args.site else ""
    if not view:
        console.print(f"{args.program} has no group tracks{where}")
        return 0
    table = Table(
        "track",
        "site",
        "level",
        "meets",
        "taken",
        "free",
        "waiting",
        "longest wait",
        "facilitators",
        "where",
        title=f"{args.program}: group tracks{where}",
    )
    for c in view:
        t = c.track
        table.add_row(
            t.id,
            t.site,
            t.level,
            f"{' '.join(d.value for d in t.weekdays)} {t.start:%H:%M} ({t.hours:g} h)",
            f"{c.taken}/{t.capacity}",
            str(c.free),
            str(c.waiting),
            "-" if c.longest_wait_days is None else f"{c.longest_wait_days:.1f} days",
            ", ".join(t.facilitators),
            " + ".join(x for x in (t.room, "telehealth" if t.telehealth_link else None) if x),
        )
    console.print(table)
    console.print(
        "facilitator hours a week: " + ", ".join(f"{name} {h:g} h" for name, h in hours.items())
    )
    return 0


def _track_json(c: TrackCapacity) -> dict[str, object]:
    return {
        **c.track.model_dump(mode="json"),
        "taken": c.taken,
        "free": c.free,
        "waiting": c.waiting,
        "longest_wait_days": c.longest_wait_days,
        "weekly_hours": c.track.weekly_hours,
    }


def cmd_counsellors(args: argparse.Namespace, settings: Settings) -> int:
    """Each counsellor's sessions this week and next against their capacity, and their
    hours available a week."""
    protocol, sites = _program_at(args, settings)
    counsellors = [c for c in protocol.counselling.counsellors if args.site in (None, c.site)]
    now = datetime.now(UTC)
    weeks = {c.site: weeks_at(now, _zone_of(sites, c.site)) for c in counsellors}
    store = care_store(settings)
    try:
        loads = store.counsellor_loads(sorted({w for pair in weeks.values() for w in pair}))
    finally:
        store.dispose()
    view = load_view(counsellors, loads, weeks)
    if args.json:
        print(json.dumps([_counsellor_json(v) for v in view]))
        return 0
    where = f" at {args.site}" if args.site else ""
    if not view:
        console.print(f"{args.program} has no counsellors{where}")
        return 0
    table = Table(
        "counsellor",
        "site",
        "this week",
        "next week",
        "hours available",
        title=f"{args.program}: counsellors{where} (sessions booked / a week's capacity)",
    )
    for v in view:
        c = v.counsellor
        cap = c.sessions_per_week
        table.add_row(
            f"{c.id} {c.name}",
            c.site,
            f"{v.this_week}/{cap}",
            f"{v.next_week}/{cap}",
            f"{c.weekly_hours:g} h",
        )
    console.print(table)
    return 0


def _zone_of(sites: SiteDirectory, site_id: str) -> tzinfo:
    site = sites.sites.get(site_id)
    return UTC if site is None else site.zone_info


def _counsellor_json(v: CounsellorLoad) -> dict[str, object]:
    return {
        **v.counsellor.model_dump(mode="json"),
        "this_week": v.this_week,
        "next_week": v.next_week,
        "weekly_hours": v.counsellor.weekly_hours,
    }
