"""GET /api/v1/patients: the command line's `find` for API clients, answered from the store
and scoped by the client's site and scopes. Patients are written straight into the store
(as intakes and phase changes record them): no engine needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clinical.assessment import Enrolment
from clinical.phases import Phase
from infra.store import NewPatient, PhaseChangeEntry
from tests.console_support import store_only_console
from tests.support import enrolment_data
from tests.test_api import ALL, _is_problem, bearer
from web.api_security import API

ENROLLED = datetime(2027, 3, 1, 15, tzinfo=UTC)


def intake(store: Any, site: str, cm: str, risk: str, days_later: int) -> str:
    enrolment = Enrolment.model_validate(
        enrolment_data() | {"site_id": site, "case_manager_id": cm}
    )
    store.record_intake(
        NewPatient(
            patient_id=enrolment.patient_id,
            case_manager_id=cm,
            site_id=site,
            program_id="default-iop",
            enrolled_at=ENROLLED + timedelta(days=days_later),
            level="2.1",
            risk=risk,
            contact=enrolment.contact,
            assessment_json=enrolment.assessment.model_dump_json(),
            care_plan_json="{}",
        ),
        [],
        [],
    )
    return enrolment.patient_id


async def test_find_filters_the_clients_site_and_refuses_what_it_may_not_see(
    tmp_path: Path,
) -> None:
    async with store_only_console(tmp_path) as ui:
        store = ui.console.store
        early = intake(store, "north", "CM-01", "moderate", 0)
        late = intake(store, "north", "CM-02", "high", 3)
        ended = intake(store, "north", "CM-01", "moderate", 5)
        south = intake(store, "south", "CM-09", "moderate", 0)
        store.record_phase_change(
            PhaseChangeEntry(
                key=f"{ended}/discharged",
                patient_id=ended,
                phase=Phase.discharged,
                at=ENROLLED + timedelta(days=6),
                reason="withdrew",
            ),
            case_manager_id="CM-01",
            level="2.1",
            risk="moderate",
        )
        clients = ui.console.clients
        now = ui.clock()
        _, token = clients.add("finder", "patients:read", "north", now)
        _, tasks_only = clients.add("tasks-only", "tasks:read", "north", now)
        _, south_token = clients.add("south-finder", ALL, "south", now)
        url = f"{API}/patients"

        async with ui.signed_in(None) as http:

            async def found(**params: Any) -> list[str]:
                answer = await http.get(url, params=params, headers=bearer(token))
                assert answer.status_code == 200, answer.text
                return [r["patient_id"] for r in answer.json()]

            everyone = await found()
            assert sorted(everyone) == sorted([early, late, ended])  # north only
            assert sorted(await found(active="true")) == sorted([early, late])
            assert await found(risk="high") == [late]
            assert sorted(await found(case_manager="CM-01")) == sorted([early, ended])
            assert await found(phase="discharged") == [ended]
            assert sorted(await found(phase="intake", site="north")) == sorted([early, late])
            day = ENROLLED.date()
            assert sorted(await found(enrolled_from=str(day + timedelta(days=1)))) == sorted(
                [late, ended]
            )
            assert await found(enrolled_to=str(day + timedelta(days=1))) == [early]
            assert await found(overdue="true") == []  # no session or task is due
            row = (await http.get(url, params={"risk": "high"}, headers=bearer(token))).json()[0]
            assert set(row) >= {"phase", "case_manager_id", "site_id", "risk", "next_contact_due"}
            assert "Avery" not in str(everyone) and "Quinlan" not in str(row)

            _is_problem(await http.get(url), 401)
            assert _is_problem(await http.get(url, headers=bearer(tasks_only)), 403)[
                "detail"
            ].endswith("(patients:read)")
            other_site = await http.get(url, params={"site": "south"}, headers=bearer(token))
            assert _is_problem(other_site, 403)["detail"] == "client finder reads site north only"
            theirs = await http.get(url, headers=bearer(south_token))
            assert [r["patient_id"] for r in theirs.json()] == [south]
            for bad in (
                {"phase": "nowhere"},
                {"risk": "extreme"},
                {"case_manager": "Avery"},
                {"enrolled_from": "March"},
                {"overdue": "perhaps"},
            ):
                detail = _is_problem(await http.get(url, params=bad, headers=bearer(token)), 422)[
                    "detail"
                ]
                assert next(iter(bad)) in detail and "\n" not in detail, detail
    log = ui.console.access.search()
    assert {("api:finder", "allowed"), ("api:tasks-only", "denied")} <= {
        (e.actor, e.outcome) for e in log
    }
