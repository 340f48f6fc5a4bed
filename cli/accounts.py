"""The console from the command line: serve it, manage its local accounts, read and verify
the access log, and record what the command line itself does there (who ran it)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime, time, timedelta

from cli.common import CliError, care_store, console
from infra.settings import Settings
from infra.store.access_log import AccessLog
from infra.store.accounts import IdentityRefused, IdentityStore
from infra.store.api_clients import ApiClientRefused, ApiClients
from infra.webhooks import WebhookRefused, add_sender, load_senders

EXIT_BROKEN_CHAIN = 5


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from web.serve import serve  # uvicorn and the pages load only for this command

    store = care_store(settings)
    console.print(
        f"CarePath console on http://{settings.console_host}:{settings.console_port}/ "
        "(Ctrl-C stops it)"
    )
    try:
        serve(settings, store)
    finally:
        store.dispose()
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise CliError("the two passwords differ")
    return first


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    store = care_store(settings)
    identity = IdentityStore(store.engine)
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            for user, disabled in identity.users():
                where = user.case_manager_id or user.site_id or "-"
                state = " (disabled)" if disabled else ""
                console.print(f"{user.username}  {user.role.value}  {where}{state}")
            return 0
        if not args.username:
            raise CliError(f"users {args.action}: give the username")
        if args.action == "add":
            identity.add_user(
                args.username,
                args.role or "",
                None if args.oidc else _password(args),
                now,
                site_id=args.site,
                case_manager_id=args.case_manager,
            )
        elif args.action == "disable":
            identity.disable(args.username, now)
        else:
            identity.reset_password(args.username, _password(args))
    except IdentityRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    record(settings, f"users {args.action}")
    console.print(f"user {args.username}: {args.action} done")
    return 0


def cmd_api_clients(args: argparse.Namespace, settings: Settings) -> int:
    """Machine identities: `add` prints the token once (only its hash is kept)."""
    store = care_store(settings)
    registry = ApiClients(store.engine)
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            for c in registry.all():
                ended = "expired" if c.expires_at <= now else "expires"
                state = (
                    f"revoked {c.revoked_at:%Y-%m-%d}"
                    if c.revoked_at
                    else f"{ended} {c.expires_at:%Y-%m-%d}"
                )
                console.print(
                    f"{c.name}  {c.site_id}  {','.join(sorted(c.scopes))}  {state}", soft_wrap=True
                )
            return 0
        if not args.name:
            raise CliError(f"api-clients {args.action}: give the client's name")
        if args.action == "add":
            client, token = registry.add(
                args.name, args.scopes or "", args.site or "", now, args.days
            )
        else:
            registry.revoke(args.name, now)
    except ApiClientRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    record(settings, f"api-clients {args.action}")
    if args.action == "add":
        console.print(
            f"client {client.name} ({client.site_id}) until {client.expires_at:%Y-%m-%d}; "
            "its token, shown this once:",
            highlight=False,
        )
        print(token)  # alone on its line, unwrapped: for a script to read
    else:
        console.print(f"client {args.name}: revoked")
    return 0


def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    """Webhook senders: `add` prints the new sender's secret once (it stays in the
    owner-only senders file, which every console process reads at start)."""
    path = settings.webhook_senders_file
    try:
        if args.action == "list":
            for s in load_senders(path).values():
                console.print(f"{s.name}  {s.kind.value}  {s.site_id}", soft_wrap=True)
            return 0
        if not args.name:
            raise CliError("webhooks add: give the sender's name")
        sender = add_sender(path, args.name, args.kind or "", args.site or "")
    except WebhookRefused as exc:
        raise CliError(str(exc)) from None
    record(settings, "webhooks add")
    console.print(
        f"sender {sender.name} ({sender.kind.value}, {sender.site_id}); restart the console "
        f"to take it; POST its events to /api/v1/webhooks/{sender.name}. Its secret:",
        highlight=False,
    )
    print(sender.secret)
    return 0


def _day(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(), UTC)
    except ValueError:
        raise CliError(f"{what}: {text[:20]!r} is not a date (YYYY-MM-DD)") from None


def cmd_access_log(args: argparse.Namespace, settings: Settings) -> int:
    store = care_store(settings)
    log = AccessLog(store.engine)
    try:
        if args.verify:
            check = log.verify()
            if check.intact:
                console.print(f"access log intact: {check.entries} entries chained")
                return 0
            print(
                f"error: access log broken at entry {check.broken_at}: {check.why}",
                file=sys.stderr,
            )
            return EXIT_BROKEN_CHAIN
        until = _day(args.until, "--until")
        found = log.search(
            actor=args.user,
            patient_id=args.patient,
            since=_day(args.since, "--since"),
            until=until + timedelta(days=1) if until else None,
            limit=args.limit,
        )
    finally:
        store.dispose()
    record(settings, "read access log")
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in found], indent=2))
        return 0
    for e in found:
        console.print(
            f"{e.seq:>6} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:<16} {e.action:<32} "
            f"{e.patient_id or '-':<11} {e.outcome:<8} {e.address}"
        )
    return 0


def record(
    settings: Settings, action: str, patient_id: str | None = None, outcome: str = "allowed"
) -> None:
    """The command line's own entry in the access log: who ran it (the operating-system
    account), what, on which patient. Where there is no store yet there is nothing to log."""
    try:
        store = care_store(settings)
    except CliError:
        return
    try:
        log = AccessLog(store.engine)
        log.append(
            datetime.now(UTC),
            f"cli:{getpass.getuser()}",
            "command line",
            action,
            patient_id,
            outcome,
            "local",
        )
    finally:
        store.dispose()
