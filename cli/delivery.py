"""Delivering the outbox and events from the command line: `deliver` (a loop, or one pass
with --once: messages to patients and events to subscribers) and `dead-letters` (messages
that could not be delivered, and putting one back)."""

from __future__ import annotations

import argparse
import json
import signal
import threading

from cli.common import CliError, care_store, console
from clinical.protocol import ProgramCatalog
from clinical.sites import SiteDirectory, SiteError
from infra.channels import channels_from
from infra.settings import Settings, SettingsError
from services.delivery import Deliverer
from services.subscribers import EventSender


def cmd_deliver(args: argparse.Namespace, settings: Settings) -> int:
    """The outbox to patients (on the channels configured) and events to subscribers."""
    try:
        channels = channels_from(settings)
        sites = SiteDirectory.load(settings.sites_file)
    except (SettingsError, SiteError) as exc:
        raise CliError(str(exc)) from None
    store = care_store(settings)
    deliverer = Deliverer(store, channels, sites, ProgramCatalog.of(settings.programs_dir))
    events = EventSender(store)
    try:
        if args.once:
            if channels:
                r = deliverer.deliver_all_due()
                console.print(
                    f"sent {r.sent}, retrying {r.retrying}, dead letters {r.dead}, "
                    f"waiting for a contact window {r.waiting}"
                )
            else:
                console.print("no channel for messages (CAREPATH_SMTP_HOST, CAREPATH_SMS_URL)")
            e = events.send_all_due()
            console.print(
                f"events: sent {e.sent}, retrying {e.retrying}, dead letters {e.dead}, "
                f"withheld (no consent) {e.withheld}"
            )
            return 0
        stop = threading.Event()
        # A stop signal ends the loop between messages, never in the middle of a send.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        console.print(
            f"delivering on {', '.join(sorted(channels)) or 'no channel'}, and events to "
            "subscribers (stop with Ctrl-C)"
        )
        batch = deliverer.policy.batch
        while not stop.is_set():
            busy = deliverer.deliver_due().claimed >= batch if channels else False
            busy = events.send_due().claimed >= batch or busy
            if not busy:
                stop.wait(settings.delivery_interval)
        return 0
    finally:
        store.dispose()


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    store = care_store(settings)
    try:
        if args.retry:
            if not store.requeue(args.retry):
                raise CliError(f"no dead letter has the key {args.retry!r}")
            console.print(f"{args.retry}: back in the outbox")
            return 0
        letters = store.dead_letters()
    finally:
        store.dispose()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "key": d.key,
                        "patient_id": d.patient_id,
                        "channel": d.channel,
                        "kind": d.kind,
                        "status": d.status,
                        "attempts": d.attempts,
                        "error": d.last_error,
                        "created_at": d.created_at.isoformat(),
                    }
                    for d in letters
                ],
                indent=2,
            )
        )
        return 0
    if not letters:
        console.print("no dead letters")
    for d in letters:
        print(
            f"{d.key}  {d.patient_id}  {d.channel}  {d.kind}  {d.status} after "
            f"{d.attempts} tries: {d.last_error or ''}"
        )
    return 0
