"""CarePath's typed search attributes: what operators search journeys by. Opaque and
categorical values only, never PHI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("CarePathPhase")
CASE_MANAGER = SearchAttributeKey.for_keyword("CarePathCaseManager")
SITE = SearchAttributeKey.for_keyword("CarePathSite")
PROGRAM = SearchAttributeKey.for_keyword("CarePathProgram")
RISK = SearchAttributeKey.for_keyword("CarePathRisk")
NEXT_CONTACT_DUE = SearchAttributeKey.for_datetime("CarePathNextContactDue")
ENROLLED_AT = SearchAttributeKey.for_datetime("CarePathEnrolledAt")
ATTENDANCE_RATE = SearchAttributeKey.for_float("CarePathAttendanceRate")

ALL_KEYS: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    PHASE,
    CASE_MANAGER,
    SITE,
    PROGRAM,
    RISK,
    NEXT_CONTACT_DUE,
    ENROLLED_AT,
    ATTENDANCE_RATE,
)
