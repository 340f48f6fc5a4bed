"""The demo's console accounts: a case manager for each of the cohort's caseloads, a
supervisor for each site, a facilitator for each group leader the program's tracks name by
staff ID (`dana.reyes` for Dana Reyes, CM-F01), an operator and an auditor, all with one
password made for this run (printed once, and kept in the data directory readable by its
owner alone)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from demo.facilitator import Facilitator
from infra.files import write_private
from infra.store.accounts import IdentityRefused, IdentityStore


def demo_accounts(
    case_managers: dict[str, str], sites: set[str], facilitators: Sequence[Facilitator] = ()
) -> list[tuple[str, str, str | None, str | None]]:
    """(username, role, site, staff ID): `case_managers` maps an ID to its site."""
    accounts: list[tuple[str, str, str | None, str | None]] = [
        (cm.lower().replace("-", ""), "case_manager", site, cm)
        for cm, site in sorted(case_managers.items())
    ]
    accounts += [(f"supervisor-{s}", "supervisor", s, None) for s in sorted(sites)]
    accounts += [(f.username, "facilitator", f.site, f.staff_id) for f in facilitators]
    accounts += [("operator", "operator", None, None), ("auditor", "auditor", None, None)]
    return accounts


def create_demo_users(
    identity: IdentityStore,
    case_managers: dict[str, str],
    sites: set[str],
    data_dir: Path,
    facilitators: Sequence[Facilitator] = (),
) -> tuple[list[str], Path]:
    """The accounts (made, or their password reset when a demo ran before) and the file
    holding this run's password."""
    password = secrets.token_urlsafe(12)
    names = []
    for username, role, site, cm in demo_accounts(case_managers, sites, facilitators):
        try:
            identity.add_user(username, role, password, datetime.now(UTC), site, cm)
        except IdentityRefused:
            identity.reset_password(username, password)
        names.append(username)
    path = data_dir / "demo-console-password"
    write_private(path, password + "\n")
    return names, path
