"""The console's routes over HTTP (in-process, on the test's event loop): who may open what,
the case manager's flow on a real journey, sessions, CSRF and the access log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.protocol import ProgramCatalog
from demo.facilitator import facilitators_of
from demo.users import create_demo_users
from infra.store import CareStore
from infra.store.access_log import Touch
from infra.store.accounts import IdentityRefused, IdentityStore, Role
from tests.console_support import (
    FAST_HASHER,
    STAFF,
    api_routes,
    concrete,
    csrf_of,
    make_console,
    store_only_console,
)
from tests.support import PROGRAMS, Clinic, clinic, enrolment_data
from web.api_security import API
from web.security import CSP, RULES, SESSION_COOKIE
from web.signin import PUBLIC_ENDPOINTS

PUBLIC = PUBLIC_ENDPOINTS


async def _enrolled(c: Clinic, env: WorkflowEnvironment, **overrides: object) -> str:
    """A patient of CM-01 at north, their journey run to day 2 (the consent task open)."""
    enrolment = Enrolment.model_validate(enrolment_data(social_needs=["housing"]))
    enrolment = enrolment.model_copy(update=overrides)
    await c.enrol_and_drive(env, enrolment, until=lambda s: s.program_day >= 2)
    return enrolment.patient_id


def _role_of(username: str) -> Role:
    return Role(STAFF[username][0])


async def test_every_route_has_a_rule_and_refuses_the_anonymous_and_wrong_roles(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Enumerates the application's routes: a route without a rule, or one that lets an
    anonymous user or a role outside its rule through, fails here."""
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            pid = await _enrolled(c, env)
        ui = make_console(c.settings, c.store, c.client)
        # The API's routes have their own grants (tests/test_api.py enumerates them).
        routes = [r for r in api_routes(ui.app) if not r[1].startswith(API)]
        assert {endpoint.__name__ for _, _, endpoint in routes} <= set(RULES)
        values = {
            "patient_id": pid,
            "action": "discharge",
            "task_id": "1",
            "program_id": "default-iop",
            "track_id": "north-morning",
            "stamp": "20270301T1400Z",
            "run_id": "0" * 16,
        }
        checked = 0
        async with ui.signed_in(None) as anonymous:
            for method, path, endpoint in routes:
                if endpoint.__name__ in PUBLIC:
                    continue
                answer = await anonymous.request(method, concrete(path, values))
                assert answer.status_code in (303, 401), (method, path, answer.status_code)
                assert answer.status_code == 401 or answer.headers["location"] == "/sign-in"
                checked += 1
        for username in STAFF:
            async with ui.signed_in(username) as http:
                for method, path, endpoint in routes:
                    rule = RULES[endpoint.__name__]
                    if endpoint.__name__ in PUBLIC or _role_of(username) in rule.roles:
                        continue
                    answer = await http.request(
                        method, concrete(path, values), data={"csrf": csrf_of(http)}
                    )
                    assert answer.status_code == 403, (username, method, path)
                    checked += 1
    assert checked > 20
    # The only routes without sign-in: signing in, and a survey link's page (its signed
    # link is the capability); a link that is not one answers one line, never a page.
    surveys = {"survey_page", "survey_answer"}
    assert frozenset({"sign_in_page", "sign_in", "oidc_start", "oidc_callback"} | surveys) == PUBLIC
    survey_routes = [(m, p) for m, p, e in routes if e.__name__ in surveys]
    assert sorted(survey_routes) == [("GET", "/survey/{link}"), ("POST", "/survey/{link}")]
    async with ui.signed_in(None) as anonymous:
        for method, path in survey_routes:
            answer = await anonymous.request(method, concrete(path, {"link": "not-a-link"}))
            assert answer.status_code in (400, 404) and "location" not in answer.headers
            assert pid not in answer.text
    # Nothing of the patient's was shown to any of them.
    assert all(e.outcome == "denied" for e in ui.console.access.search() if e.patient_id)


async def test_a_case_manager_works_the_inbox_and_another_sees_nothing(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            pid = await _enrolled(c, env)
            other = await _enrolled(c, env, case_manager_id="CM-02")
            ui = make_console(c.settings, c.store, c.client)
            async with ui.signed_in("cm1") as http:
                caseload = await http.get("/caseload")
                inbox = await http.get("/inbox")
                chart = await http.get(f"/patients/{pid}")
                refused = await http.post(
                    f"/patients/{pid}/attendance",
                    data={"csrf": csrf_of(http), "session:NO-SUCH-SESSION": "attended"},
                    headers={"HX-Request": "true"},
                )
                bad = await http.post(
                    f"/patients/{pid}/relapse", data={"csrf": csrf_of(http), "withdrawal": "x"}
                )
                (task_id,) = re.findall(r'action="/tasks/(\d+)/done"', inbox.text)
                done = await http.post(f"/tasks/{task_id}/done", data={"csrf": csrf_of(http)})
                again = await http.post(f"/tasks/{task_id}/done", data={"csrf": csrf_of(http)})
                inbox_after = await http.get("/inbox")
                not_mine = await http.get(f"/patients/{other}")
                not_mine_act = await http.post(
                    f"/patients/{other}/discharge",
                    data={"csrf": csrf_of(http), "reason": "withdrew"},
                )
                no_csrf = await http.post(f"/patients/{pid}/discharge", data={"reason": "withdrew"})
            async with ui.signed_in("sup") as http:
                supervised = await http.get("/caseload")
            async with ui.signed_in("sup-south") as http:
                other_site = await http.get(f"/patients/{pid}")
            async with ui.signed_in("audit") as http:
                log = await http.get("/access-log", params={"patient": pid})
                all_log = await http.get("/access-log")

    assert caseload.status_code == 200 and pid in caseload.text and "Quinlan" in caseload.text
    assert other not in caseload.text  # CM-02's patient
    assert "consent needed" in inbox.text and pid in inbox.text
    assert chart.status_code == 200 and "Care plan" in chart.text
    assert f"<title>Chart {pid} · CarePath</title>" in chart.text  # an ID, never a name
    assert refused.status_code == 409 and "refused:" in refused.text
    assert bad.status_code == 422 and "withdrawal" in bad.text
    assert done.status_code == 200 and "consent recorded" in done.text
    assert again.status_code == 409 and "already done (by CM-01)" in again.text
    assert task_id not in re.findall(r'action="/tasks/(\d+)/done"', inbox_after.text)
    assert not_mine.status_code == 404 and not_mine_act.status_code == 404
    assert "Quinlan" not in not_mine.text
    assert no_csrf.status_code == 403
    assert supervised.status_code == 200 and pid in supervised.text and other in supervised.text
    assert other_site.status_code == 404
    assert log.status_code == 200 and "Chain intact" in all_log.text
    entries = ui.console.access.search(patient_id=pid)
    seen = {(e.actor, e.action, e.outcome) for e in entries}
    assert ("cm1", "view chart", "allowed") in seen
    assert ("cm1", "task done", "allowed") in seen
    assert ("cm1", "attendance sheet", "refused") in seen
    assert ("sup-south", "open patient", "denied") in seen
    assert ("cm1", "open patient", "denied") in {
        (e.actor, e.action, e.outcome) for e in ui.console.access.search(patient_id=other)
    }
    assert ui.console.access.verify().intact


async def test_sessions_end_when_idle_and_at_sign_out(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui:
        async with ui.signed_in("cm1") as http:
            assert (await http.get("/caseload")).status_code == 200
            ui.clock.advance(ui.console.idle + timedelta(seconds=1))
            idle = await http.get("/caseload")
        async with ui.signed_in("cm1") as http:
            token = http.cookies[SESSION_COOKIE]
            out = await http.post("/sign-out", data={"csrf": csrf_of(http)})
            http.cookies.set(SESSION_COOKIE, token)  # a copy of the cookie kept
            after = await http.get("/caseload")
    assert idle.status_code == 303 and idle.headers["location"] == "/sign-in"
    assert out.status_code == 303
    assert after.status_code == 303 and after.headers["location"] == "/sign-in"


async def test_sign_in_refuses_alike_and_locks_out(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui, ui.signed_in(None) as http:
        unknown = await http.post("/sign-in", data={"username": "nobody", "password": "x"})
        wrong = [
            await http.post("/sign-in", data={"username": "cm1", "password": "wrong"})
            for _ in range(5)
        ]
        locked = await http.post(
            "/sign-in", data={"username": "cm1", "password": "correct horse battery"}
        )
        ui.clock.advance(timedelta(minutes=16))
        later = await http.post(
            "/sign-in", data={"username": "cm1", "password": "correct horse battery"}
        )
    assert unknown.status_code == 401 and "wrong username or password" in unknown.text
    assert all("wrong username or password" in w.text for w in wrong)
    assert locked.status_code == 401 and "locked until" in locked.text
    assert later.status_code == 303


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui, ui.signed_in("ops") as http:
        answers = [await http.get(p) for p in ("/sign-in", "/operations", "/nowhere")]
        answers.append(await http.get("/static/console.css"))
    for answer in answers:
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-frame-options"] == "DENY"
    assert answers[0].headers["cache-control"] == "no-store"
    assert answers[2].status_code == 404
    assert "<script>" not in answers[1].text  # no inline script: the CSP would refuse it


@pytest.mark.parametrize("tamper", ["edit", "delete", "truncate"])
async def test_the_access_log_chain_shows_tampering(tmp_path: Path, tamper: str) -> None:
    async with store_only_console(tmp_path) as ui:
        log = ui.console.access
        for n in range(2):
            log.append(
                ui.clock(), "cm1", "case_manager", "view chart", "P-7K2M9Q4D", address=str(n)
            )
        # A call touching three patients (a webhook's bundle): three entries, one chain.
        touched = [Touch("P-7K2M9Q4D"), Touch(None, "refused"), Touch("P-3H8N2W6C")]
        bundle = log.append_many(ui.clock(), "webhook:ehr", "api_client", "POST", touched)
        assert [e.seq for e in bundle] == [3, 4, 5]
        assert [e.outcome for e in bundle] == ["allowed", "refused", "allowed"]
        assert log.verify().intact
        with ui.console.store.engine.begin() as conn:
            if tamper == "edit":
                conn.execute(text("UPDATE access_log SET actor = 'cm2' WHERE seq = 3"))
            elif tamper == "delete":
                conn.execute(text("DELETE FROM access_log WHERE seq = 2"))
            else:
                conn.execute(text("DELETE FROM access_log WHERE seq = 5"))
        check = log.verify()
    assert not check.intact
    assert check.broken_at == {"edit": 3, "delete": 2, "truncate": 5}[tamper]


def test_the_demo_makes_its_staff_and_a_second_run_gives_them_a_new_password(
    tmp_path: Path,
) -> None:
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    identity = IdentityStore(store.engine, FAST_HASHER)
    tracks = ProgramCatalog(PROGRAMS).load("demo-iop").groups.tracks
    leaders = facilitators_of(tracks, {"north"})
    names, path = create_demo_users(identity, {"CM-01": "north"}, {"north"}, tmp_path, leaders)
    first = path.read_text().strip()
    names_again, _ = create_demo_users(identity, {"CM-01": "north"}, {"north"}, tmp_path, leaders)
    second = path.read_text().strip()
    user = identity.sign_in("cm01", second, datetime.now(UTC))
    with pytest.raises(IdentityRefused):
        identity.sign_in("operator", first, datetime.now(UTC))
    store.dispose()
    assert (
        names
        == names_again
        == [
            "cm01",
            "supervisor-north",
            "dana.reyes",  # CM-F01, who leads north-morning and north-php
            "sam.okafor",
            "lee.chen",
            "operator",
            "auditor",
        ]
    )
    dana = identity.sign_in("dana.reyes", second, datetime.now(UTC))
    assert (dana.role, dana.site_id, dana.case_manager_id) == (Role.facilitator, "north", "CM-F01")
    assert first != second and (user.role, user.case_manager_id) == (Role.case_manager, "CM-01")
    assert path.stat().st_mode & 0o077 == 0


def _enrolment_form(csrf: str, patient_id: str, **extra: str) -> dict[str, object]:
    return {
        "csrf": csrf,
        "patient_id": patient_id,
        "program_id": "default-iop",
        "given_name": "Rowan",
        "family_name": "Ellery",
        "date_of_birth": "1990-05-06",
        "phone": "+1 555 010 4040",
        "withdrawal": "1",
        "biomedical": "0",
        "emotional": "2",
        "readiness": "2",
        "relapse": "2",
        "environment": "1",
        "age_group": "adult",
        "substances": "alcohol, cannabis",
        "social_needs": ["housing"],
        "partner_disclosure": ["housing"],
        "commitments": "tue 08:00-17:00 work",
        # Not fields of the form: the enrolling case manager and site are the user's.
        "case_manager_id": "CM-99",
        "site_id": "south",
        **extra,
    }


async def test_a_case_manager_enrols_with_a_placement_preview(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    from clinical.identifiers import journey_workflow_id, new_patient_id

    pid = new_patient_id()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            ui = make_console(c.settings, c.store, c.client)
            async with ui.signed_in("cm1") as http:
                form_page = await http.get("/enrol")
                preview = await http.post(
                    "/enrol/preview", data=_enrolment_form(csrf_of(http), pid)
                )
                bad = await http.post(
                    "/enrol", data=_enrolment_form(csrf_of(http), pid, date_of_birth="2090-01-01")
                )
                bad_line = await http.post(
                    "/enrol", data=_enrolment_form(csrf_of(http), pid, commitments="tuesday 8-5")
                )
                enrolled = await http.post("/enrol", data=_enrolment_form(csrf_of(http), pid))
                again = await http.post("/enrol", data=_enrolment_form(csrf_of(http), pid))
            async with ui.signed_in("sup") as http:
                supervisor = await http.get("/enrol")
            handle = c.client.get_workflow_handle(journey_workflow_id(pid))
            c.started.append(handle)
            status = await c.status(handle)
    assert form_page.status_code == 200 and 'name="given_name"' in form_page.text
    assert preview.status_code == 200 and "Placement: level 2.1" in preview.text
    assert bad.status_code == 422 and "in the future" in bad.text
    assert bad_line.status_code == 422 and "tue 08:00-17:00 work" in bad_line.text
    assert enrolled.status_code == 200 and f"enrolled {pid}" in enrolled.text
    assert again.status_code == 409 and "already enrolled" in again.text
    assert supervisor.status_code == 403
    assert (status.case_manager_id, status.site_id) == ("CM-01", "north")
    assert ("cm1", "enrol", "allowed") in {
        (e.actor, e.action, e.outcome) for e in ui.console.access.search(patient_id=pid)
    }


async def test_a_supervisor_reassigns_a_patient_and_the_caseloads_follow(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            pid = await _enrolled(c, env)
            ui = make_console(c.settings, c.store, c.client)
            async with ui.signed_in("sup") as http:
                discharge = await http.post(
                    f"/patients/{pid}/discharge", data={"csrf": csrf_of(http), "reason": "withdrew"}
                )
                same = await http.post(
                    f"/patients/{pid}/reassign", data={"csrf": csrf_of(http), "to": "CM-01"}
                )
                moved = await http.post(
                    f"/patients/{pid}/reassign", data={"csrf": csrf_of(http), "to": "CM-02"}
                )
            async with ui.signed_in("sup-south") as http:
                elsewhere = await http.post(
                    f"/patients/{pid}/reassign", data={"csrf": csrf_of(http), "to": "CM-03"}
                )
            async with ui.signed_in("cm2") as http:
                self_move = await http.post(
                    f"/patients/{pid}/reassign", data={"csrf": csrf_of(http), "to": "CM-02"}
                )
                theirs = await http.get("/caseload")
            async with ui.signed_in("cm1") as http:
                gone = await http.get(f"/patients/{pid}")
            status = await c.status(c.started[0])
    assert discharge.status_code == 403  # a case manager's action
    assert same.status_code == 409 and "CM-01 is the case manager already" in same.text
    assert moved.status_code == 200 and "case manager now CM-02 (was CM-01)" in moved.text
    assert elsewhere.status_code == 404  # another site's patient
    assert self_move.status_code == 403  # a supervisor's decision
    assert pid in theirs.text and gone.status_code == 404
    assert status.case_manager_id == "CM-02"
    assert {t.case_manager_id for t in c.store.tasks(patient_id=pid)} == {"CM-02"}
    assert [f.actor for f in c.store.audit_trail(pid) if f.action == "case_manager_reassigned"] == [
        "CM-SUP1"
    ]
