"""CarePath's command line, for case managers and operators.

The parser (its description is this docstring's first line), the table of commands, and
main(), which turns every refusal into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, get_args

from sqlalchemy.exc import OperationalError

from cli.accounts import (
    cmd_access_log,
    cmd_api_clients,
    cmd_console,
    cmd_users,
    cmd_webhooks,
    record,
)
from cli.admin import cmd_codec_server, cmd_demo, cmd_keys, cmd_server
from cli.case_management import (
    cmd_alumni,
    cmd_attendance,
    cmd_cancel_referral,
    cmd_caseload,
    cmd_check_ins,
    cmd_commitments,
    cmd_discharge,
    cmd_done,
    cmd_family_consent,
    cmd_partner_answer,
    cmd_refer,
    cmd_relapse,
    cmd_review,
    cmd_tasks,
)
from cli.common import EXIT_BAD_INPUT, EXIT_UNREACHABLE, CliError
from cli.consents import add_arguments as add_consent_arguments
from cli.consents import cmd_consents, cmd_family_contact
from cli.delivery import cmd_dead_letters, cmd_deliver
from cli.enrolment import cmd_enrol
from cli.groups import add_parser as add_group_sheet
from cli.groups import cmd_group_sheet
from cli.operators import (
    cmd_disclosures,
    cmd_export,
    cmd_history,
    cmd_list,
    cmd_report,
    cmd_status,
)
from cli.simulate import add_arguments as add_simulate_arguments
from cli.simulate import cmd_simulate
from cli.sites import cmd_closure, cmd_counsellors, cmd_tracks
from cli.subscribers import add_arguments as add_subscriber_arguments
from cli.subscribers import cmd_subscribers
from cli.surveys import add_parser as add_survey_answer
from cli.surveys import cmd_survey_answer
from clinical.assessment import DIMENSIONS, SocialNeed
from clinical.consents import NOT_NAMED, PURPOSES, TPO
from clinical.identifiers import is_patient_id
from clinical.phases import Phase
from clinical.referrals import CancelReason, PartnerAnswer
from clinical.requests import DischargeReason
from infra.codec import KeyFileError
from infra.logging import configure_logging
from infra.settings import Settings, SettingsError, load_settings
from infra.store import store_unreachable
from infra.store.api_clients import DEFAULT_DAYS, SCOPES
from infra.store.events import EVENT_KINDS
from infra.webhooks import EventKind

EXPORT_PURPOSES = [
    "treatment",
    "care_coordination",
    "payment",
    "health_care_operations",
    "patient_request",
    "audit",
]


class _OneLineErrors(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem (and exit code 2), like every other
    bad input; `--help` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(prog="starter.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("server", help="start, stop or check the embedded Temporal server")
    s.add_argument("action", choices=["start", "stop", "status"])

    e = sub.add_parser("enrol", help="enrol a patient from a JSON file (or a generated one)")
    e.add_argument("file", nargs="?")
    e.add_argument("--generate", action="store_true", help="enrol a synthetic patient")
    e.add_argument("--case-manager", default="CM-01")
    e.add_argument("--site", default="north")
    e.add_argument("--program", default="default-iop")

    a = sub.add_parser(
        "attendance",
        help="record a session's attendance, or a sheet of several in one request",
    )
    a.add_argument("patient")
    a.add_argument(
        "marks",
        nargs="+",
        metavar="SESSION STATUS",
        help="a session and attended, missed or excused; several pairs make one sheet",
    )
    a.add_argument("--case-manager", required=True)

    d = sub.add_parser("discharge", help="end a patient's journey, with a reason")
    d.add_argument("patient")
    d.add_argument("--reason", required=True, choices=[r.value for r in DischargeReason])
    d.add_argument("--case-manager", required=True)

    r = sub.add_parser("relapse", help="report a relapse with the reassessment's ratings")
    r.add_argument("patient")
    r.add_argument("--ratings", required=True, help=f"six numbers 0-4: {','.join(DIMENSIONS)}")
    r.add_argument("--case-manager", required=True)

    rv = sub.add_parser("review", help="a progress review of the intensive phase")
    rv.add_argument("patient")
    rv.add_argument("decision", choices=["extend", "shorten", "approve-step-down", "change-level"])
    rv.add_argument("--weeks", type=int, help="for extend and shorten")
    rv.add_argument("--level", help="for change-level: a level of the program")
    rv.add_argument("--case-manager", required=True)

    rf = sub.add_parser("refer", help="refer a patient to a partner service for a need")
    rf.add_argument("patient")
    rf.add_argument("--need", required=True, choices=[n.value for n in SocialNeed])
    rf.add_argument("--case-manager", required=True)

    fc = sub.add_parser("family-consent", help="the patient gives or withdraws family consent")
    fc.add_argument("patient")
    fc.add_argument("action", choices=["give", "withdraw"])
    fc.add_argument("--case-manager", required=True)

    cr = sub.add_parser("cancel-referral", help="end a referral that is no longer wanted")
    cr.add_argument("patient")
    cr.add_argument("need", choices=[n.value for n in SocialNeed])
    cr.add_argument("--reason", required=True, choices=list(get_args(CancelReason)))
    cr.add_argument("--case-manager", required=True)

    cm = sub.add_parser(
        "commitments", help="revise when the patient cannot attend (closes a schedule conflict)"
    )
    cm.add_argument("patient")
    cm.add_argument(
        "--commitment",
        action="append",
        metavar="'DAY HH:MM-HH:MM [KIND]'",
        help="e.g. 'tue 08:00-17:00 work'; repeat for each",
    )
    cm.add_argument("--none", action="store_true", help="the patient has no fixed commitments")
    cm.add_argument("--case-manager", required=True)

    pa = sub.add_parser("partner-answer", help="a partner service's answer to a referral")
    pa.add_argument("patient")
    pa.add_argument("need", choices=[n.value for n in SocialNeed])
    pa.add_argument("answer", choices=[a.value for a in PartnerAnswer])
    pa.add_argument("--reported-by", required=True, help="the partner, or the case manager")

    ck = sub.add_parser("check-ins", help="reschedule the aftercare check-ins ahead")
    ck.add_argument("patient")
    ck.add_argument("--days", required=True, help="aftercare days, e.g. 20,45,90")
    ck.add_argument("--reason", required=True, choices=["patient_request", "clinical"])
    ck.add_argument("--case-manager", required=True)

    al = sub.add_parser("alumni", help="a patient went to an alumni or peer-support meeting")
    al.add_argument("patient")
    al.add_argument("meeting", help="the meeting's ID from the invitation, e.g. ALUMNI-E1-D016")
    al.add_argument("--case-manager", required=True)

    sub.add_parser("codec-server", help="let the Web UI open sealed payloads (operators)")
    sub.add_parser("keys", help="make the payload key file if there is none (operators)")

    hs = sub.add_parser("history", help="a patient's whole journey as a timeline (operators)")
    hs.add_argument("patient")
    hs.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="a patient's journey for another system (operators)")
    ex.add_argument("patient")
    ex.add_argument("--fhir", action="store_true", help="as a FHIR R4 Bundle (JSON)")
    ex.add_argument("--out", help="write to this file (default: standard output)")
    ex.add_argument(
        "--recipient",
        default=NOT_NAMED,
        help="who receives it: the patient's consent must cover it (unless the purpose is "
        "patient_request or audit), and it goes on the patient's accounting of disclosures",
    )
    ex.add_argument("--purpose", default="treatment", choices=EXPORT_PURPOSES)

    dc = sub.add_parser("disclosures", help="a patient's disclosures of the past three years")
    dc.add_argument("patient")
    dc.add_argument("--json", action="store_true")

    st = sub.add_parser("status", help="show a patient's journey")
    st.add_argument("patient")
    st.add_argument("--json", action="store_true")

    for name, text in (
        ("list", "list journeys (all filters optional)"),
        ("find", "find patients by phase, case manager, site, risk, overdue contact, enrolment"),
    ):
        ls = sub.add_parser(name, help=text)
        ls.add_argument("--phase", choices=[ph.value for ph in Phase])
        ls.add_argument("--case-manager")
        ls.add_argument("--site")
        ls.add_argument("--risk", choices=["low", "moderate", "high"])
        ls.add_argument("--overdue", action="store_true", help="next contact is past due")
        ls.add_argument("--enrolled-from", help="YYYY-MM-DD")
        ls.add_argument("--enrolled-to", help="YYYY-MM-DD (exclusive)")
        ls.add_argument("--active", action="store_true", help="running journeys only")
        ls.add_argument("--json", action="store_true")

    t = sub.add_parser("tasks", help="the case managers' inbox: open tasks")
    t.add_argument("--case-manager")
    t.add_argument("--patient")
    t.add_argument("--all", action="store_true", help="done tasks too")
    t.add_argument("--json", action="store_true")

    dn = sub.add_parser("done", help="mark a task done (delivered to its workflow)")
    dn.add_argument("task", type=int)
    dn.add_argument("--case-manager", required=True)

    cl = sub.add_parser("caseload", help="a case manager's active patients and open tasks")
    cl.add_argument("case_manager")
    cl.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="outcomes of a cohort or site (tables, HTML, charts)")
    rp.add_argument("--site", help="patients of this site, e.g. north")
    rp.add_argument("--case-manager", help="patients of this case manager, e.g. CM-01")
    rp.add_argument("--program", help="patients of this program, e.g. default-iop")
    rp.add_argument("--enrolled-from", help="enrolled on or after YYYY-MM-DD")
    rp.add_argument("--enrolled-to", help="enrolled before YYYY-MM-DD (exclusive)")
    rp.add_argument("--html", type=Path, metavar="FILE", help="write the report as HTML")
    rp.add_argument("--png-dir", type=Path, metavar="DIR", help="write each chart as a PNG")
    rp.add_argument("--json", action="store_true")

    cl = sub.add_parser("closure", help="announce a site's unplanned closure, or list them")
    cl.add_argument("action", choices=["announce", "list"])
    cl.add_argument("--site", required=True)
    cl.add_argument("--date", help="announce: the site's local date, YYYY-MM-DD")
    cl.add_argument("--reason", help="announce: what staff and patients read, e.g. snow")
    cl.add_argument("--json", action="store_true")

    tr = sub.add_parser("tracks", help="group tracks: seats taken and free, waitlists, hours")
    tr.add_argument("--site", help="tracks of this site, e.g. north")
    tr.add_argument("--program", default="default-iop")
    tr.add_argument("--json", action="store_true")

    co = sub.add_parser("counsellors", help="counsellors: sessions this week and next, capacity")
    co.add_argument("--site", help="counsellors of this site, e.g. north")
    co.add_argument("--program", default="default-iop")
    co.add_argument("--json", action="store_true")

    add_group_sheet(sub)
    add_survey_answer(sub)

    sub.add_parser("console", help="serve the case managers' console in the browser")

    us = sub.add_parser("users", help="the console's local accounts (operators)")
    us.add_argument("action", choices=["add", "disable", "reset", "list"])
    us.add_argument("username", nargs="?")
    us.add_argument(
        "--role", choices=["case_manager", "supervisor", "operator", "auditor", "facilitator"]
    )
    us.add_argument("--site", help="a case manager's, supervisor's or facilitator's site")
    us.add_argument(
        "--case-manager",
        "--staff-id",
        dest="case_manager",
        help="a case manager's ID (CM-01) or a facilitator's staff ID (CM-F01)",
    )
    us.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    us.add_argument(
        "--oidc", action="store_true", help="add: no password; signs in through the OIDC provider"
    )

    ac = sub.add_parser("api-clients", help="the API's machine identities (operators)")
    ac.add_argument("action", choices=["add", "revoke", "list"])
    ac.add_argument("name", nargs="?")
    ac.add_argument("--scopes", help=f"comma-separated: {','.join(SCOPES)}")
    ac.add_argument("--site", help="the one site the client serves, e.g. north")
    ac.add_argument("--days", type=int, default=DEFAULT_DAYS, help="until the token expires")

    wh = sub.add_parser("webhooks", help="who may send CarePath signed events (operators)")
    wh.add_argument("action", choices=["add", "list"])
    wh.add_argument("name", nargs="?")
    wh.add_argument("--kind", choices=[k.value for k in EventKind])
    wh.add_argument(
        "--site", help="the one site the sender's events are for, e.g. north (telephony: *)"
    )

    lg = sub.add_parser("access-log", help="who saw or did what (auditors)")
    lg.add_argument("--user", help="entries of this user (cli:<account> for the command line)")
    lg.add_argument("--patient", help="entries on this patient")
    lg.add_argument("--since", help="from this day, YYYY-MM-DD (UTC)")
    lg.add_argument("--until", help="up to and including this day, YYYY-MM-DD (UTC)")
    lg.add_argument("--limit", type=int, default=500)
    lg.add_argument("--verify", action="store_true", help="check the hash chain (exit 5: broken)")
    lg.add_argument("--json", action="store_true")

    dv = sub.add_parser(
        "deliver", help="send the outbox's due messages (e-mail, texts) and subscribers' events"
    )
    dv.add_argument("--once", action="store_true", help="one pass, then exit")

    dl = sub.add_parser("dead-letters", help="messages that could not be delivered (operators)")
    dl.add_argument("--retry", metavar="KEY", help="put this dead letter back in the outbox")
    dl.add_argument("--json", action="store_true")

    cs = sub.add_parser(
        "consents", help="a patient's consents to disclose (42 CFR Part 2): list, give, revoke"
    )
    add_consent_arguments(cs, (*PURPOSES, TPO))

    fm = sub.add_parser("family-contact", help="whom family-session invitations are sent to")
    fm.add_argument("patient")
    fm.add_argument("--email", help="their e-mail address")
    fm.add_argument("--phone", help="or their phone number, for texts")
    fm.add_argument(
        "--relationship",
        default="relative",
        choices=["partner", "parent", "child", "sibling", "relative", "friend", "other"],
    )
    fm.add_argument("--case-manager", required=True)

    sb = sub.add_parser(
        "subscribers", help="systems that receive CarePath's events, signed (operators)"
    )
    add_subscriber_arguments(sb, PURPOSES, ",".join(EVENT_KINDS))

    dm = sub.add_parser("demo", help="run a synthetic cohort through the whole journey")
    dm.add_argument("--patients", type=int, default=20)
    dm.add_argument("--program", default="demo-iop")
    dm.add_argument("--seed", type=int, default=7)

    sm = sub.add_parser(
        "simulate", help="what if: the same synthetic cohort under each program, side by side"
    )
    add_simulate_arguments(sm)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Any]] = {
    "server": cmd_server,
    "enrol": cmd_enrol,
    "attendance": cmd_attendance,
    "discharge": cmd_discharge,
    "relapse": cmd_relapse,
    "review": cmd_review,
    "refer": cmd_refer,
    "family-consent": cmd_family_consent,
    "partner-answer": cmd_partner_answer,
    "cancel-referral": cmd_cancel_referral,
    "commitments": cmd_commitments,
    "check-ins": cmd_check_ins,
    "alumni": cmd_alumni,
    "codec-server": cmd_codec_server,
    "keys": cmd_keys,
    "history": cmd_history,
    "export": cmd_export,
    "status": cmd_status,
    "list": cmd_list,
    "find": cmd_list,
    "tasks": cmd_tasks,
    "done": cmd_done,
    "caseload": cmd_caseload,
    "report": cmd_report,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "closure": cmd_closure,
    "tracks": cmd_tracks,
    "counsellors": cmd_counsellors,
    "group-sheet": cmd_group_sheet,
    "survey-answer": cmd_survey_answer,
    "console": cmd_console,
    "users": cmd_users,
    "api-clients": cmd_api_clients,
    "webhooks": cmd_webhooks,
    "access-log": cmd_access_log,
    "deliver": cmd_deliver,
    "disclosures": cmd_disclosures,
    "dead-letters": cmd_dead_letters,
    "subscribers": cmd_subscribers,
    "consents": cmd_consents,
    "family-contact": cmd_family_contact,
}

# What the command line does to or reads of a patient, recorded in the access log with the
# account that ran it (the console records its users' own).
RECORDED = frozenset(
    {
        "attendance", "discharge", "relapse", "review", "refer", "family-consent",
        "partner-answer", "cancel-referral", "commitments", "check-ins", "alumni",
        "history", "export", "disclosures", "status", "tasks", "done", "caseload", "enrol",
        "consents", "family-contact",
        "group-sheet", "survey-answer",
    }
)  # fmt: skip


def _record(args: argparse.Namespace, settings: Settings, outcome: str) -> None:
    if args.command not in RECORDED:
        return
    patient = getattr(args, "patient", None)
    valid = isinstance(patient, str) and is_patient_id(patient)
    try:
        record(settings, args.command, patient if valid else None, outcome)
    except OperationalError:
        pass  # the store is unreachable: the command has said so already


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, "warning" if args.command != "demo" else "error")
    try:
        result = COMMANDS[args.command](args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        _record(args, settings, "allowed" if result == 0 else "refused")
        return int(result)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _record(args, settings, "refused")
        return exc.code
    except OperationalError as exc:
        print(f"error: {store_unreachable(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyFileError as exc:  # a sealed value or payload this process has no key for
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
