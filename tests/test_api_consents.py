"""A patient's consents through /api/v1 (42 CFR Part 2 §2.31), as `starter.py consents`
records them (services.consents): listed, given in writing, revoked; bad input answers the
command line's one line and changes nothing; another site's patient is none; a retried POST
records once; every call is in the access log, and no patient ID is in a logged action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.console_support import store_only_console
from tests.test_api import ALL, _is_problem, bearer
from tests.test_subscribers import enrol
from web.api_security import API

GIVE = {
    "to": "County EHR",
    "purpose": "treatment",
    "information": "the journey as a FHIR bundle: phases, sessions, referrals",
    "expires": "2099-12-31",
}


async def test_consents_are_listed_given_and_revoked_through_the_api(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui:
        store = ui.console.store
        pid = enrol(store)
        clients = ui.console.clients
        now = ui.clock()
        _, token = clients.add("ehr", ALL, "north", now)
        _, south = clients.add("south-ehr", ALL, "south", now)
        _, reader = clients.add("reader", "consents:read,patients:read", "north", now)
        auth = bearer(token)
        url = f"{API}/patients/{pid}/consents"
        async with ui.signed_in(None) as http:
            empty = await http.get(url, headers=auth)
            given = await http.post(url, json=GIVE, headers=auth | {"Idempotency-Key": "c-1"})
            replayed = await http.post(url, json=GIVE, headers=auth | {"Idempotency-Key": "c-1"})
            to_client = await http.post(
                url, json=GIVE | {"to": "api:ehr"}, headers=auth | {"Idempotency-Key": "c-2"}
            )
            listed = await http.get(url, headers=auth)
            revoked = await http.post(f"{url}/revoke", json={"to": "County EHR"}, headers=auth)
            after = await http.get(url, headers=auth)
            no_token = await http.post(url, json=GIVE)
            wrong_scope = await http.post(url, json=GIVE, headers=bearer(reader))
            wrong_site = await http.post(url, json=GIVE, headers=bearer(south))
            wrong_site_list = await http.get(url, headers=bearer(south))
            read_only = await http.get(url, headers=bearer(reader))
            before_bad = len(store.consents(pid))
            bad: list[tuple[dict[str, Any], str]] = [
                (GIVE | {"purpose": "marketing"}, "purpose: "),
                (GIVE | {"expires": "2020-01-01"}, "expires_on: not after the day it was signed"),
                (GIVE | {"expires": "soon"}, "expires 'soon': a day, YYYY-MM-DD"),
                ({"to": "County EHR", "information": "all"}, "ends on a date or at an event"),
                ({"to": "County EHR", "expires": "2099-01-01"}, "information: "),
                (GIVE | {"to": "subscriber:nobody"}, "to subscriber:nobody: no subscriber nobody"),
                (GIVE | {"to": "family"}, "through the journey first"),
            ]
            answers = [
                (await http.post(url, json=body, headers=auth), fault) for body, fault in bad
            ]
            family = await http.post(f"{url}/revoke", json={"to": "family"}, headers=auth)
            missing = await http.post(url, json={"purpose": "treatment"}, headers=auth)
        after_bad = len(store.consents(pid))
        log = ui.console.access.search(patient_id=pid)
        everyone = ui.console.access.search()
    assert empty.status_code == 200
    intake = len(empty.json())  # the intake's own (family involvement, its standard form)
    assert all(r["standard_form"] for r in empty.json())
    assert given.status_code == 201, given.text
    # The command line's own line.
    assert given.json()["message"] == f"{pid}: consent to disclose to County EHR given"
    assert replayed.content == given.content and replayed.headers["idempotent-replayed"] == "true"
    assert to_client.status_code == 201, to_client.text
    rows = listed.json()[intake:]
    assert [r["kind"] for r in rows] == ["recipient:county-ehr", "api:ehr"]  # once, not twice
    assert all(r["in_force"] for r in rows)
    assert rows[0]["terms"]["recipient"] == "County EHR"
    assert rows[0]["terms"]["expires_on"] == "2099-12-31" and rows[0]["recorded_by"] == "CM-01"
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["message"].endswith("revoked: nothing more is disclosed under it")
    county = [r for r in after.json() if r["kind"] == "recipient:county-ehr"]
    assert [r["in_force"] for r in county] == [False, False] and not county[1]["granted"]
    assert store.why_not_consented(pid, "recipient:county-ehr", "treatment", now) is not None
    _is_problem(no_token, 401)
    assert _is_problem(wrong_scope, 403)["detail"].endswith("(consents:write)")
    assert _is_problem(wrong_site, 404)["detail"] == f"no patient {pid} at site south"
    assert _is_problem(wrong_site_list, 404)["detail"] == f"no patient {pid} at site south"
    assert read_only.status_code == 200 and len(read_only.json()) == intake + 3
    for answer, fault in answers:
        status = 409 if "journey first" in fault else 422
        detail = _is_problem(answer, status)["detail"]
        assert fault in detail and "\n" not in detail, (fault, detail)
    assert "family-consent" in _is_problem(family, 422)["detail"]
    assert _is_problem(missing, 422)["detail"].startswith("to: ")
    assert before_bad == after_bad == intake + 3  # nothing recorded by a refusal
    actions = {(e.actor, e.action, e.outcome) for e in log}
    assert ("api:ehr", "POST api/patients/{patient_id}/consents", "allowed") in actions
    assert ("api:ehr", "POST api/patients/{patient_id}/consents (replayed)", "allowed") in actions
    assert ("api:ehr", "POST api/patients/{patient_id}/consents/revoke", "allowed") in actions
    assert ("api:ehr", "GET api/patients/{patient_id}/consents", "allowed") in actions
    assert ("api:ehr", "POST api/patients/{patient_id}/consents", "refused") in actions
    assert ("api:south-ehr", "POST api/patients/{patient_id}/consents", "denied") in actions
    assert ("-", "POST api/patients/{patient_id}/consents", "denied") in {
        (e.actor, e.action, e.outcome) for e in everyone
    }
    assert all(pid not in e.action for e in everyone)
