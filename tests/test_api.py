"""/api/v1 over HTTP (in-process, on the test's event loop): machine identities and their
scopes and site on every route, the journey driven through the API, problem details,
idempotency keys (also after a process died mid-request), size and rate limits."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.consents import api_client_kind
from clinical.requests import AttendanceMark, AttendanceSheet
from infra.store import ConsentEntry
from infra.store.api_clients import SCOPES, ApiClientRefused, ApiClients
from infra.store.audit import AuditFact
from tests.console_support import api_routes, concrete, make_console, store_only_console
from tests.support import clinic, drive_journey, enrolment_data
from web.api_security import API, API_BYTES, GRANTS, OPEN, PROBLEM, SIGNED
from web.openapi import KEPT, document_text
from web.security import RateLimit
from workflows.patient_journey import PatientJourneyWorkflow

ALL = ",".join(SCOPES)

# A valid body for each POST, so that what answers is the check under test, not the body's.
BODIES: dict[str, Any] = {
    "api_enrol": None,  # filled per test: an enrolment at north
    "api_attendance": {"marks": [{"session_id": "E1-W1-S1", "status": "attended"}]},
    "api_discharge": {"reason": "withdrew"},
    "api_review": {"decision": "extend", "weeks": 2},
    "api_relapse": {"ratings": dict.fromkeys(
        ("withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment"), 1
    )},
    "api_family_consent": {"granted": True},
    "api_check_ins": {"days": [20, 45], "reason": "clinical"},
    "api_refer": {"need": "housing"},
    "api_cancel_referral": {"reason": "no_longer_needed"},
    "api_partner_answer": {"answer": "accepted"},
    "api_task_done": None,
    "api_subscribe": {"name": "feed", "url": "https://feed.example.org/events"},
    "api_replay": {"from": "2026-11-01", "to": "2026-11-30"},
    "api_group_sheet": {"marks": [{"patient_id": "P-0000000A", "status": "attended"}]},
    "api_give_consent": {"to": "County EHR", "information": "the journey's sessions",
                         "expires": "2099-12-31"},
    "api_revoke_consent": {"to": "County EHR"},
    "api_survey_answers": {"answers": {"care": 4}},
}  # fmt: skip
GROUP_ROUTES = {"api_group_roster", "api_group_sheet"}
"""Routes of a site's group track: another site's client finds no such track (404)."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _is_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["detail"] and "Traceback" not in answer.text
    return body


async def test_every_api_route_has_a_grant_and_checks_token_scope_and_site(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Enumerates /api's routes: a route without a grant, or one that lets through a call
    without a token, without its scope, or for another site's patient, fails here."""
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment = Enrolment.model_validate(enrolment_data(social_needs=["housing"]))
            handle = await c.enrol(enrolment)
            await drive_journey(env, handle, until=lambda s: s.program_day >= 2)
        pid = enrolment.patient_id
        ui = make_console(c.settings, c.store, c.client)
        clients = ui.console.clients
        now = ui.clock()
        _, south = clients.add("south-ehr", ALL, "south", now)
        lacking = {
            scope: clients.add(f"without-{scope.replace(':', '-')}", other, "north", now)[1]
            for scope in SCOPES
            if (other := ",".join(s for s in SCOPES if s != scope))
        }
        (task,) = c.store.tasks(patient_id=pid)
        c.store.add_subscriber(
            "ehr-feed", "https://ehr.example.org/in", "north", purpose="treatment",
            kinds=None, by="test", at=now,
        )  # fmt: skip
        values = {
            "patient_id": pid, "need": "housing", "task_id": str(task.id), "name": "ehr-feed",
            "program_id": "default-iop", "track_id": "north-morning", "stamp": "20270301T1400Z",
            "occasion": "step_down",
        }  # fmt: skip
        routes = [
            r
            for r in api_routes(ui.app)
            if r[1].startswith(API) and r[2].__name__ not in OPEN | SIGNED
        ]
        assert {endpoint.__name__ for _, _, endpoint in routes} <= set(GRANTS)
        bodies = BODIES | {"api_enrol": enrolment_data()}
        checked = 0
        async with ui.signed_in(None) as http:
            for method, path, endpoint in routes:
                name = endpoint.__name__
                url = concrete(path, values)
                body = bodies.get(name)
                for headers in ({}, bearer("cpk_not-a-token"), {"Authorization": "Basic eA=="}):
                    answer = await http.request(method, url, json=body, headers=headers)
                    _is_problem(answer, 401)
                    assert answer.headers["www-authenticate"].startswith("Bearer")
                answer = await http.request(
                    method, url, json=body, headers=bearer(lacking[GRANTS[name].scope])
                )
                assert _is_problem(answer, 403)["detail"].endswith(f"({GRANTS[name].scope})")
                answer = await http.request(method, url, json=body, headers=bearer(south))
                if GRANTS[name].patient:
                    assert _is_problem(answer, 404)["detail"] == f"no patient {pid} at site south"
                elif name == "api_enrol":
                    _is_problem(answer, 403)  # a client enrols at its own site only
                elif "{name}" in path:  # another site's subscription looks like none
                    assert (
                        _is_problem(answer, 404)["detail"] == "no subscriber ehr-feed at site south"
                    )
                elif name == "api_subscribe":
                    assert answer.status_code == 201 and answer.json()["site_id"] == "south"
                elif name in GROUP_ROUTES:
                    assert "at site south" in _is_problem(answer, 404)["detail"]
                else:
                    assert answer.status_code == 200 and pid not in answer.text, name
                checked += 1
    assert checked == len(routes) > 12
    log = ui.console.access.search(patient_id=pid)
    assert log and all(e.outcome == "denied" for e in log)
    assert {"api:south-ehr", "-"} <= {e.actor for e in ui.console.access.search()}
    assert ui.console.access.verify().intact


async def test_an_ehr_drives_a_journey_through_the_api(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Enrolment, a week's attendance sheet the status then shows, a refusal, bad input, a
    retried POST answered once, a key whose process died mid-request, and discharge."""
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            ui = make_console(c.settings, c.store, c.client)
            _, token = ui.console.clients.add("ehr", ALL, "north", ui.clock())
            auth = bearer(token)
            enrolment = enrolment_data()
            pid = enrolment["patient_id"]
            async with ui.signed_in(None) as http:
                first = await http.post(
                    f"{API}/patients", json=enrolment, headers=auth | {"Idempotency-Key": "e-1"}
                )
                retried = await http.post(
                    f"{API}/patients", json=enrolment, headers=auth | {"Idempotency-Key": "e-1"}
                )
                twice = await http.post(f"{API}/patients", json=enrolment, headers=auth)
                other_body = await http.post(
                    f"{API}/patients",
                    json=enrolment | {"program_id": "other-program"},
                    headers=auth | {"Idempotency-Key": "e-1"},
                )
                handle = c.client.get_workflow_handle(f"journey-{pid}")
                c.started.append(handle)
                # A week goes by; the clinic's EHR has the attendance, CarePath not yet.
                driven, _ = await drive_journey(
                    env, handle, until=lambda s: s.program_day >= 9, choose=lambda n: "none"
                )
                before = (await http.get(f"{API}/patients/{pid}", headers=auth)).json()
                week = [
                    s["session_id"] for s in before["sessions"] if s["day"] <= driven.program_day
                ]
                marks = [{"session_id": s, "status": "attended"} for s in week]
                sheet = await http.post(
                    f"{API}/patients/{pid}/attendance",
                    json={"marks": marks[1:]},
                    headers=auth | {"Idempotency-Key": "sheet-1"},
                )
                sheet_again = await http.post(
                    f"{API}/patients/{pid}/attendance",
                    json={"marks": marks[1:]},
                    headers=auth | {"Idempotency-Key": "sheet-1"},
                )
                # The process that took key sheet-2 died after handing the update to the
                # journey and before recording the answer: the key is recorded, the update
                # done under the key's ID. The client retries.
                body = json.dumps({"marks": marks[:1]}).encode()
                path = f"{API}/patients/{pid}/attendance"
                claim = ui.console.clients.claim(
                    "api:ehr",
                    "sheet-2",
                    hashlib.sha256(f"POST {path}\n".encode() + body).hexdigest(),
                    ui.clock(),
                )
                assert type(claim).__name__ == "Claimed"
                died = await handle.execute_update(
                    PatientJourneyWorkflow.record_attendance_sheet,
                    AttendanceSheet(
                        case_manager_id="CM-01",
                        marks=[AttendanceMark(session_id=week[0], status="attended")],
                    ),
                    id="api:ehr:sheet-2",
                )
                after_death = await http.post(
                    path,
                    content=body,
                    headers=auth
                    | {"Idempotency-Key": "sheet-2", "Content-Type": "application/json"},
                )
                after = (await http.get(f"{API}/patients/{pid}", headers=auth)).json()
                refused = await http.post(
                    f"{API}/patients/{pid}/attendance",
                    json={"marks": [{"session_id": "NO-SUCH-SESSION", "status": "attended"}]},
                    headers=auth,
                )
                bad = await http.post(
                    f"{API}/patients/{pid}/attendance",
                    json={"marks": [{"session_id": week[0], "status": "maybe"}]},
                    headers=auth,
                )
                tasks = await http.get(f"{API}/tasks", headers=auth, params={"patient": pid})
                caseload = await http.get(f"{API}/caseload", headers=auth)
                unconsented = await http.get(f"{API}/patients/{pid}/fhir", headers=auth)
                # The patient consents to the EHR's copy (§2.31), and the export is made.
                kind, now = api_client_kind("ehr"), ui.clock()
                c.store.record_consent(
                    ConsentEntry(f"{pid}/{kind}", pid, kind, True, "CM-01", now),
                    AuditFact(f"{pid}/{kind}", pid, "CM-01", "consent_given", "consent", now),
                )
                fhir = await http.get(f"{API}/patients/{pid}/fhir", headers=auth)
                disclosed = await http.get(f"{API}/patients/{pid}/disclosures", headers=auth)
                outcomes = await http.get(f"{API}/reports/outcomes", headers=auth)
                discharged = await http.post(
                    f"{API}/patients/{pid}/discharge", json={"reason": "withdrew"}, headers=auth
                )
                again = await http.post(
                    f"{API}/patients/{pid}/discharge", json={"reason": "withdrew"}, headers=auth
                )
    assert first.status_code == 201, first.text
    assert first.json()["message"] == f"enrolled {pid} in default-iop"
    assert retried.status_code == 201 and retried.headers["idempotent-replayed"] == "true"
    assert retried.content == first.content
    assert _is_problem(twice, 409)["detail"].startswith(f"patient {pid} is already enrolled")
    assert "another request" in _is_problem(other_body, 422)["detail"]
    assert before["source"] == "journey" and len(week) >= 2
    assert sheet.status_code == 200, sheet.text
    assert sheet.json()["message"].startswith(f"recorded (attended {len(week) - 1},")
    assert sheet_again.content == sheet.content and "idempotent-replayed" in sheet_again.headers
    assert after_death.status_code == 200, after_death.text
    assert after_death.json()["result"] == died.model_dump(mode="json")
    recorded = {s["session_id"]: s["status"] for s in after["sessions"]}
    assert all(recorded[s] == "attended" for s in week)
    assert after["attendance"]["attended"] == len(week)  # each mark once
    assert _is_problem(refused, 409)["detail"].startswith("refused:")
    assert _is_problem(bad, 422)["detail"].startswith("marks.0.status:")
    assert tasks.status_code == 200 and isinstance(tasks.json(), list)
    assert caseload.status_code == 200 and [r["patient_id"] for r in caseload.json()] == [pid]
    assert "Quinlan" not in caseload.text  # IDs only
    assert _is_problem(unconsented, 409)["detail"].startswith(
        f"refused: no consent of {pid}'s covers disclosure to API client ehr for treatment"
    )
    assert fhir.status_code == 200 and fhir.json()["resourceType"] == "Bundle"
    # The bundle went to the calling system: a disclosure on the patient's accounting.
    assert disclosed.status_code == 200, disclosed.text
    (export,) = [d for d in disclosed.json() if d["by"] == "api:ehr"]
    assert export["recipient"].startswith("API client ehr") and export["purpose"] == "treatment"
    assert outcomes.status_code == 200 and outcomes.json()
    assert discharged.status_code == 200 and "journey ended" in discharged.json()["message"]
    assert (
        _is_problem(again, 409)["detail"] == f"the journey of patient {pid} has ended (completed)"
    )
    actions = {(e.actor, e.action, e.outcome) for e in ui.console.access.search(patient_id=pid)}
    assert ("api:ehr", "POST api/patients/{patient_id}/attendance", "allowed") in actions
    assert ("api:ehr", "POST api/patients/{patient_id}/attendance", "refused") in actions
    assert ("api:ehr", "GET api/patients/{patient_id}/fhir", "allowed") in actions
    assert "Quinlan" not in str(ui.console.access.search())


async def test_no_engine_is_503_and_limits_answer_413_and_429(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui:
        ui.console.api_limit = RateLimit(per_minute=6, burst=2)
        _, token = ui.console.clients.add("ehr", ALL, "north", ui.clock())
        async with ui.signed_in(None) as http:
            down = await http.post(f"{API}/patients", json=enrolment_data(), headers=bearer(token))
            large = await http.post(
                f"{API}/patients", content=b"{" + b" " * API_BYTES + b"}", headers=bearer(token)
            )
            within = await http.get(f"{API}/tasks", headers=bearer(token))  # the burst's 2nd
            limited = await http.get(f"{API}/tasks", headers=bearer(token))
            ui.clock.advance(timedelta(seconds=10))
            later = await http.get(f"{API}/tasks", headers=bearer(token))
            no_route = await http.get(f"{API}/nothing", headers=bearer(token))
    assert "cannot reach the Temporal server" in _is_problem(down, 503)["detail"]
    _is_problem(large, 413)  # refused before the token is even read
    assert within.status_code == 200
    assert _is_problem(limited, 429) and int(limited.headers["retry-after"]) >= 1
    assert later.status_code == 200
    _is_problem(no_route, 404)


@pytest.mark.parametrize("ending", ["revoked", "expired"])
async def test_a_revoked_or_expired_client_calls_nothing(tmp_path: Path, ending: str) -> None:
    async with store_only_console(tmp_path) as ui:
        clients: ApiClients = ui.console.clients
        _, token = clients.add("ehr", "tasks:read", "north", ui.clock(), days=1)
        async with ui.signed_in(None) as http:
            assert (await http.get(f"{API}/tasks", headers=bearer(token))).status_code == 200
            if ending == "revoked":
                clients.revoke("ehr", ui.clock())
            else:
                ui.clock.advance(timedelta(days=1))
            _is_problem(await http.get(f"{API}/tasks", headers=bearer(token)), 401)
        assert token.startswith("cpk_") and token not in str(
            [(c.name, c.scopes) for c in clients.all()]
        )
        with pytest.raises(ApiClientRefused, match="scopes: everything"):
            clients.add("other", "everything", "north", ui.clock())
        with pytest.raises(ApiClientRefused, match="exists already"):
            clients.add("ehr", "tasks:read", "north", ui.clock())


async def test_the_openapi_document_served_is_the_one_kept(tmp_path: Path) -> None:
    """docs/openapi.json is what the API serves: after changing a route, regenerate it with
    `python -m web.openapi` (or `make openapi`)."""
    async with store_only_console(tmp_path) as ui, ui.signed_in(None) as http:
        served = await http.get(f"{API}/openapi.json")
    assert served.status_code == 200
    assert served.text == KEPT.read_text(encoding="utf-8") == document_text(), (
        "docs/openapi.json is stale: run `python -m web.openapi`"
    )
    document = served.json()
    assert document["openapi"].startswith("3.")
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert len(operations) == len(GRANTS) + len(SIGNED)
    assert all(("Scope: `" in op["description"]) != (op.get("security") == []) for op in operations)


async def test_each_write_answers_success_refusal_and_bad_input(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The journey's requests through the API, each with the command line's one line."""
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment = Enrolment.model_validate(enrolment_data(social_needs=["housing"]))
            handle = await c.enrol(enrolment)
            await drive_journey(env, handle, until=lambda s: s.program_day >= 9)
            pid = enrolment.patient_id
            ui = make_console(c.settings, c.store, c.client)
            _, token = ui.console.clients.add("ehr", ALL, "north", ui.clock())
            (task,) = c.store.tasks(patient_id=pid)
            p = f"{API}/patients/{pid}"
            calls = [
                ("consent", f"{p}/family-consent", {"granted": True}),
                ("consent-bad", f"{p}/family-consent", {"granted": "perhaps"}),
                ("check-ins", f"{p}/check-ins", {"days": [20, 45], "reason": "clinical"}),
                ("check-ins-bad", f"{p}/check-ins", {"days": [], "reason": "clinical"}),
                ("review", f"{p}/reviews", {"decision": "extend", "weeks": 2}),
                ("review-bad", f"{p}/reviews", {"decision": "prolong"}),
                ("relapse", f"{p}/relapse", {"ratings": BODIES["api_relapse"]["ratings"]}),
                ("relapse-bad", f"{p}/relapse", {"ratings": {"withdrawal": 9}}),
                ("refer", f"{p}/referrals", {"need": "medical"}),
                ("refer-again", f"{p}/referrals", {"need": "medical"}),
                ("refer-bad", f"{p}/referrals", {"need": "money"}),
                ("cancel", f"{p}/referrals/medical/cancel", {"reason": "no_longer_needed"}),
                ("cancel-bad", f"{p}/referrals/medical/cancel", {"reason": "bored"}),
                ("answer-early", f"{p}/referrals/housing/answer", {"answer": "accepted"}),
                ("answer-bad", f"{p}/referrals/housing/answer", {"answer": "maybe"}),
                ("done", f"{API}/tasks/{task.id}/done", None),
                ("done-again", f"{API}/tasks/{task.id}/done", None),
            ]
            answers = {}
            async with ui.signed_in(None) as http:
                for name, url, body in calls:
                    answers[name] = await http.post(url, json=body, headers=bearer(token))
    expected = {
        "consent": (200, "family consent given"),
        "check-ins": (409, "refused: check-ins can be rescheduled in aftercare only"),
        "review": (200, "extend: intensive phase now 10 weeks"),
        "relapse": (200, "relapse recorded during intensive"),
        "refer": (200, "REF-medical-1 started"),
        "refer-again": (409, "refused: a medical referral is already open"),
        "cancel": (200, "referral: closed, cancelled"),
        "answer-early": (409, "refused: the referral has not been sent yet"),
        "done": (200, f"task {task.id} ({pid}): consent recorded"),
        "done-again": (409, f"task {task.id} is already done (by CM-01)"),
        # Bad input names its field first, as the command line does.
        "consent-bad": (422, "granted: "),
        "check-ins-bad": (422, "days: "),
        "review-bad": (422, "decision: "),
        "relapse-bad": (422, "ratings.withdrawal: "),
        "refer-bad": (422, "need: "),
        "cancel-bad": (422, "reason: "),
        "answer-bad": (422, "answer: "),
    }
    assert expected.keys() == answers.keys()
    for name, (status, words) in expected.items():
        answer = answers[name]
        assert answer.status_code == status, (name, answer.text)
        line = answer.json()["message"] if status == 200 else _is_problem(answer, status)["detail"]
        assert line.startswith(words), (name, line)
