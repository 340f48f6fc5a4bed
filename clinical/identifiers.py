"""Opaque identifiers. These are the only patient-related values allowed in workflow IDs,
search attributes and logs, so their formats are strict enough that a name cannot pass."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# Crockford base32 (no I, L, O, U): readable over the phone, never spells a name by accident
# often enough to matter, and we additionally require digits.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Matched whole (fullmatch): `$` in `re` also matches before a trailing newline, which once
# let "P-7K2M9Q4D\n" pass as a second patient.
_PATIENT_ID = re.compile(r"P-[0-9A-HJKMNP-TV-Z]{8}")


def _check_patient_id(value: str) -> str:
    if not _PATIENT_ID.fullmatch(value) or sum(c.isdigit() for c in value[2:]) < 2:
        raise ValueError(
            "patient_id must be an opaque identifier like P-7K2M9Q4D "
            "('P-' and 8 characters of 0-9/A-Z without I, L, O, U, at least two digits)"
        )
    return value


def is_patient_id(value: str) -> bool:
    try:
        _check_patient_id(value)
    except ValueError:
        return False
    return True


PatientId = Annotated[str, AfterValidator(_check_patient_id)]
CaseManagerId = Annotated[str, StringConstraints(pattern=r"^CM-[0-9A-Z]{2,12}$")]
SiteId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")]
ProgramId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,47}$")]
# What a case manager names in a request: a session (INT1-W03-S2), an alumni meeting
# (ALUMNI-E1-D016), a task's key (P-7K2M9Q4D/task/outreach/E1-W03). One canonical form each:
# no spaces, no lower case where the engine writes upper, nothing around them.
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{3,31}$")]
MeetingId = Annotated[str, StringConstraints(pattern=r"^ALUMNI-E[0-9]{1,3}-D[0-9]{3}$")]
TaskKey = Annotated[str, StringConstraints(pattern=r"^P-[0-9A-Z]{8}/[A-Za-z0-9/_.-]{1,117}$")]


def new_patient_id() -> str:
    """A fresh random opaque patient identifier."""
    while True:
        body = "".join(secrets.choice(_CROCKFORD) for _ in range(8))
        candidate = f"P-{body}"
        if sum(c.isdigit() for c in body) >= 2:
            return candidate


def journey_workflow_id(patient_id: str) -> str:
    """The journey's workflow ID: one journey per patient, derived from the opaque ID only."""
    return f"journey-{patient_id}"


def referral_workflow_id(patient_id: str, need: str) -> str:
    """One referral per patient and need at a time; the need is a category, never a note."""
    return f"{journey_workflow_id(patient_id)}-REF-{need}"


def is_referral_workflow_id(workflow_id: str) -> bool:
    return workflow_id.startswith("journey-") and "-REF-" in workflow_id


def patient_id_from_workflow_id(workflow_id: str) -> str | None:
    if workflow_id.startswith("journey-") and _PATIENT_ID.fullmatch(workflow_id[len("journey-") :]):
        return workflow_id[len("journey-") :]
    return None
