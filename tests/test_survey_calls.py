"""Answers to the questionnaire read out at a follow-up call, through the console's chart
and through the API (the command line's are in test_surveys): recorded once under the
patient's case manager, bad answers and a second recording refused in one line with
nothing changed, other staff and clients kept out."""

from __future__ import annotations

from pathlib import Path

from infra.store import CareStore
from tests.console_support import ConsoleUnderTest, csrf_of
from tests.test_api import ALL, _is_problem, bearer
from tests.test_api_find import intake
from tests.test_surveys import ALL_FOURS, CONFIG, _issue, _operations, _page
from web.api_security import API


def _patient_with_a_questionnaire(ui: ConsoleUnderTest, store: CareStore) -> str:
    pid = intake(store, "north", "CM-01", "moderate", 0)
    _issue(_operations(store), patient=pid, at=ui.clock())
    return pid


async def test_a_case_manager_records_answers_read_out_at_a_call_on_the_chart(
    tmp_path: Path,
) -> None:
    async with _page(tmp_path) as (ui, store):
        pid = _patient_with_a_questionnaire(ui, store)
        (survey,) = store.surveys(pid)
        async with ui.signed_in("cm1") as http:
            chart = await http.get(f"/patients/{pid}")
            assert chart.status_code == 200
            assert "Questionnaire read out at a call (step down)" in chart.text
            for item in CONFIG.items:
                assert f'name="{item.id}"' in chart.text
            assert survey.token not in chart.text  # the link's capability stays in the message
            form = {"csrf": csrf_of(http), "occasion": "step_down"}
            bad = await http.post(f"/patients/{pid}/survey", data=form | {"care": "4"})
            assert bad.status_code == 422 and "please answer every question" in bad.text
            off_scale = await http.post(
                f"/patients/{pid}/survey", data=form | ALL_FOURS | {"care": "9"}
            )
            assert off_scale.status_code == 422 and "from 1 to 5" in off_scale.text
            no_occasion = await http.post(
                f"/patients/{pid}/survey", data={"csrf": csrf_of(http)} | ALL_FOURS
            )
            assert no_occasion.status_code == 422 and "occasion: one of" in no_occasion.text
            assert store.surveys(pid)[0].answered_at is None
            done = await http.post(f"/patients/{pid}/survey", data=form | ALL_FOURS)
            assert done.status_code == 200 and "answers are recorded" in done.text
            again = await http.post(
                f"/patients/{pid}/survey", data=form | ALL_FOURS | {"care": "1"}
            )
            assert again.status_code == 409 and "answered already" in again.text
            after = await http.get(f"/patients/{pid}")
            assert "Questionnaire read out at a call" not in after.text
        (answered,) = store.surveys(pid)
        assert answered.answers == {k: 4 for k in ALL_FOURS}
        assert answered.answered_via == "call"
        assert [f.actor for f in store.audit_trail(pid)] == ["CM-01"]
        outcomes = [
            e.outcome
            for e in reversed(ui.console.access.search(patient_id=pid))  # newest first
            if e.action == "survey answers at a call"
        ]
        assert outcomes == ["refused", "refused", "refused", "allowed", "refused"]


async def test_other_staff_cannot_record_a_patients_answers(tmp_path: Path) -> None:
    async with _page(tmp_path) as (ui, store):
        pid = _patient_with_a_questionnaire(ui, store)
        for user, status in (("cm2", 404), ("sup", 403), ("fac", 403), ("ops", 403)):
            async with ui.signed_in(user) as http:
                answer = await http.post(
                    f"/patients/{pid}/survey",
                    data={"csrf": csrf_of(http), "occasion": "step_down"} | ALL_FOURS,
                )
                assert answer.status_code == status, user
        async with ui.signed_in("cm1") as http:  # without the form's token
            forged = await http.post(
                f"/patients/{pid}/survey", data={"occasion": "step_down"} | ALL_FOURS
            )
            assert forged.status_code == 403
        assert store.surveys(pid)[0].answered_at is None


async def test_a_system_records_answers_through_the_api_once(tmp_path: Path) -> None:
    async with _page(tmp_path) as (ui, store):
        pid = _patient_with_a_questionnaire(ui, store)
        now = ui.clock()
        _, token = ui.console.clients.add("call-centre", "patients:write", "north", now)
        _, south = ui.console.clients.add("south-centre", ALL, "south", now)
        url = f"{API}/patients/{pid}/surveys/step_down/answers"
        points = {k: int(v) for k, v in ALL_FOURS.items()}
        auth = bearer(token)
        async with ui.signed_in(None) as http:
            bad = await http.post(url, json={"answers": points | {"care": 7}}, headers=auth)
            assert _is_problem(bad, 422)["detail"] == "an answer must be a number from 1 to 5"
            unknown = await http.post(url, json={"answers": points | {"mood": 3}}, headers=auth)
            assert "unknown question 'mood'" in _is_problem(unknown, 422)["detail"]
            nowhere = await http.post(
                f"{API}/patients/{pid}/surveys/intake/answers",
                json={"answers": points},
                headers=auth,
            )
            assert "no questionnaire occasion 'intake'" in _is_problem(nowhere, 404)["detail"]
            other_site = await http.post(url, json={"answers": points}, headers=bearer(south))
            assert _is_problem(other_site, 404)["detail"] == f"no patient {pid} at site south"
            assert store.surveys(pid)[0].answered_at is None
            key = auth | {"Idempotency-Key": "call-77"}
            first = await http.post(url, json={"answers": points}, headers=key)
            retried = await http.post(url, json={"answers": points}, headers=key)
            assert first.status_code == retried.status_code == 200
            assert first.json() == retried.json()
            assert (
                first.json()["message"]
                == f"{pid}: the step_down questionnaire's answers are recorded"
            )
            assert retried.headers["idempotent-replayed"] == "true"
            again = await http.post(url, json={"answers": points}, headers=auth)
            assert (
                _is_problem(again, 409)["detail"]
                == "the step_down questionnaire is answered already"
            )
        (answered,) = store.surveys(pid)
        assert answered.answers == points and answered.answered_via == "call"
        assert [f.actor for f in store.audit_trail(pid)] == ["CM-01"]
