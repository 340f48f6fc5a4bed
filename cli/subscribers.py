"""Subscribers from the command line (operators): `subscribers add|list|disable|replay|
dead-letters`. The secret is printed once, at `add`: the subscriber's receiver needs it to
check each delivery's signature; CarePath keeps it sealed."""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime, time, timedelta

from cli.accounts import record
from cli.common import CliError, care_store, console
from infra.settings import Settings
from infra.store import CareStore, SubscriberRefused


def _day(text: str | None, flag: str) -> datetime:
    if not text:
        raise CliError(f"subscribers replay: give {flag} YYYY-MM-DD")
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise CliError(f"{flag} {text[:20]!r}: a day, YYYY-MM-DD (UTC)") from None
    return datetime.combine(day, time(), UTC)


def cmd_subscribers(args: argparse.Namespace, settings: Settings) -> int:
    store = care_store(settings)
    try:
        if args.action in ("add", "disable") and not args.name:
            raise CliError(f"subscribers {args.action}: give the subscriber's name")
        return _ACTIONS[args.action](args, settings, store)
    except SubscriberRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()


def _add(args: argparse.Namespace, settings: Settings, store: CareStore) -> int:
    if store.engine.dialect.carepath_keys is None:  # type: ignore[attr-defined]
        raise CliError(
            f"no key file at {settings.key_file}: a subscriber's secret is sealed with the "
            "workers' keys (start a worker, or run `starter.py keys`, first)"
        )
    if not args.url or not args.site:
        raise CliError("subscribers add: give --url and --site")
    sub = store.add_subscriber(
        args.name,
        args.url,
        args.site,
        purpose=args.purpose,
        kinds=args.kinds,
        by=f"cli:{getpass.getuser()}",
        at=datetime.now(UTC),
    )
    record(settings, "subscribers add")
    console.print(f"subscriber {sub.name}: {', '.join(sub.kinds)} of site {sub.site_id}")
    console.print("its secret (shown once; the receiver checks each signature with it):")
    print(sub.secret)
    return 0


def _list(args: argparse.Namespace, settings: Settings, store: CareStore) -> int:
    found = store.subscribers()
    if args.json:
        print(json.dumps([s.as_json() for s in found], indent=2))
        return 0
    if not found:
        console.print("no subscribers")
    for s in found:
        state = f" (disabled {s.disabled_at:%Y-%m-%d})" if s.disabled_at else ""
        print(f"{s.name}  {s.site_id}  {s.purpose}  {s.url}  {','.join(s.kinds)}{state}")
    return 0


def _disable(args: argparse.Namespace, settings: Settings, store: CareStore) -> int:
    store.disable_subscriber(args.name, datetime.now(UTC))
    record(settings, "subscribers disable")
    console.print(f"subscriber {args.name}: disabled (nothing more is sent to it)")
    return 0


def _replay(args: argparse.Namespace, settings: Settings, store: CareStore) -> int:
    since = _day(args.since, "--from")
    until = _day(args.until, "--to") + timedelta(days=1)  # up to and including that day
    if until <= since:
        raise CliError("--to is before --from")
    if args.name and store.subscriber(args.name) is None:
        raise CliError(f"no subscriber {args.name}")
    queued = store.replay(since, until, args.name)
    record(settings, "subscribers replay")
    console.print(
        f"{queued} event deliveries queued again ({args.since} to {args.until}); "
        "`starter.py deliver` sends them, under their first event IDs"
    )
    return 0


def _dead_letters(args: argparse.Namespace, settings: Settings, store: CareStore) -> int:
    if args.retry:
        if not store.requeue_delivery(args.retry):
            raise CliError(f"no dead letter or withheld delivery has the key {args.retry!r}")
        console.print(f"{args.retry}: queued again")
        return 0
    found = store.undelivered(("failed", "withheld") if args.withheld else ("failed",))
    if args.json:
        print(json.dumps([d.as_json() for d in found], indent=2))
        return 0
    if not found:
        console.print("no dead letters")
    for d in found:
        print(
            f"{d.key}  {d.patient_id}  {d.kind}  {d.status} after {d.attempts} tries: "
            f"{d.last_error or ''}"
        )
    return 0


_ACTIONS = {
    "add": _add,
    "list": _list,
    "disable": _disable,
    "replay": _replay,
    "dead-letters": _dead_letters,
}


def add_arguments(p: argparse.ArgumentParser, purposes: tuple[str, ...], kinds: str) -> None:
    p.add_argument("action", choices=list(_ACTIONS))
    p.add_argument("name", nargs="?", help="the subscriber (add, disable; replay: only it)")
    p.add_argument("--url", help="add: where events are POSTed (https, or http to localhost)")
    p.add_argument("--site", help="add: the one site whose patients it hears of, e.g. north")
    p.add_argument("--purpose", default="treatment", choices=purposes)
    p.add_argument("--kinds", help=f"add: comma-separated, of {kinds} (default: all)")
    p.add_argument("--from", dest="since", help="replay: from this day, YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="until", help="replay: up to and including this day")
    p.add_argument("--retry", metavar="KEY", help="dead-letters: queue this delivery again")
    p.add_argument("--withheld", action="store_true", help="dead-letters: withheld ones too")
    p.add_argument("--json", action="store_true")
