"""The satisfaction and support questionnaire: the program's items, answers checked and
scored, the signed link (signature, expiry, tamper, unknown), issuing once, and the page
that needs no sign-in, over HTTP (answered once, nothing recorded on bad input, no PHI)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.care_operations import CareOperations
from activities.records import SurveyIssue
from cli.main import main as cli_main
from clinical.assessment import ContactWindow
from clinical.messages import channel_chosen, patient_text
from clinical.protocol import ProgramCatalog, SurveyConfig, describe_validation_error
from clinical.surveys import SurveyRefused, check_answers, score, survey_key
from infra.codec import KeyRing
from infra.settings import load_settings
from infra.store import CareStore
from infra.survey_links import LinkRefused, LinkSigner
from services.surveys import SurveyDoor
from simulation.partners import SimulatedPartners
from simulation.telephony import SimulatedTelephony
from tests.console_support import ConsoleUnderTest, make_console
from tests.support import OPEN_SITES, PROGRAMS

NOW = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)
_DEFAULT = ProgramCatalog(PROGRAMS).load("default-iop").survey
assert _DEFAULT is not None
CONFIG: SurveyConfig = _DEFAULT
ALL_FOURS = {item.id: "4" for item in CONFIG.items}


def _items(**change: object) -> dict[str, object]:
    item = {"id": "care", "text": "How satisfied are you?", "aspect": "care"}
    return {"items": [{**item, "anchors": ["No", "Somewhat", "Yes"], **change}]}


# --- the program's items and the answers ---------------------------------------------------


def test_the_default_program_asks_five_items_on_labelled_five_point_scales() -> None:
    assert [i.aspect for i in CONFIG.items] == ["care", "group", "family", "peer", "help"]
    assert all(len(i.anchors) == 5 for i in CONFIG.items)
    assert ProgramCatalog(PROGRAMS).load("demo-iop").survey == CONFIG


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_items(anchors=["Yes", "No"]), "at least 3"),
        (_items(aspect="mood"), "aspect"),
        (_items(id="Care!"), "pattern"),
        ({"items": []}, "at least 1"),
        ({"items": _items()["items"] * 2}, "item id(s) care used twice"),  # type: ignore[operator]
        ({**_items(), "link_days": 0}, "link_days"),
    ],
)
def test_a_questionnaire_the_rules_refuse_says_why_in_one_line(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        SurveyConfig.model_validate(data)
    line = describe_validation_error(refused.value)
    assert message in line and "\n" not in line


def test_answers_are_points_on_each_items_scale() -> None:
    assert check_answers(CONFIG, ALL_FOURS) == {i.id: 4 for i in CONFIG.items}
    assert check_answers(CONFIG, {k: f" {v} " for k, v in ALL_FOURS.items()})["care"] == 4


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({**ALL_FOURS, "care": "6"}, "an answer must be a number from 1 to 5"),
        ({**ALL_FOURS, "care": "0"}, "an answer must be a number from 1 to 5"),
        ({**ALL_FOURS, "care": "-1"}, "an answer must be a number from 1 to 5"),
        ({**ALL_FOURS, "care": "four"}, "an answer must be a number from 1 to 5"),
        ({**ALL_FOURS, "care": ""}, "please answer every question"),
        ({k: v for k, v in ALL_FOURS.items() if k != "peers"}, "please answer every question"),
        ({**ALL_FOURS, "name": "Ann"}, "unknown question 'name'"),
    ],
)
def test_bad_answers_are_refused_in_one_line(given: dict[str, str], message: str) -> None:
    with pytest.raises(SurveyRefused, match=re.escape(message)):
        check_answers(CONFIG, given)


def test_scoring_gives_aspects_and_a_support_band_from_family_and_peers() -> None:
    low = score(CONFIG, {**check_answers(CONFIG, ALL_FOURS), "family": 1, "peers": 2})
    assert low.support == 1.5 and low.band == "low" and low.aspects["care"] == 4
    high = score(CONFIG, check_answers(CONFIG, ALL_FOURS))
    assert high.support == 4 and high.band == "high"
    middle = score(CONFIG, {**check_answers(CONFIG, ALL_FOURS), "family": 3, "peers": 3})
    assert middle.band == "middle"
    seven = SurveyConfig.model_validate(
        {"items": [{"id": "peer", "text": "Peers?", "aspect": "peer", "anchors": list("1234567")}]}
    )
    assert score(seven, {"peer": 7}).aspects == {"peer": 5.0}  # on the common 1-5 scale


# --- the link ------------------------------------------------------------------------------

SIGNER = LinkSigner.from_ring(KeyRing.create_new("k1"), "https://care.example.org/")
TOKEN = "A" * 32


def test_a_link_carries_the_opaque_token_its_expiry_and_a_signature_only() -> None:
    url = SIGNER.url(TOKEN, NOW + timedelta(days=14))
    assert re.fullmatch(r"https://care\.example\.org/survey/A{32}\.\d+\.k1\.[0-9a-f]{64}", url)
    link = url.rsplit("/", 1)[1]
    assert SIGNER.token_of(link, NOW) == TOKEN


def test_an_expired_altered_or_foreign_link_is_refused() -> None:
    link = SIGNER.sign(TOKEN, NOW + timedelta(days=14))
    with pytest.raises(LinkRefused, match=r"^this link has expired$"):
        SIGNER.token_of(link, NOW + timedelta(days=14))
    token, exp, kid, sig = link.split(".")
    altered = [
        f"{'B' * 32}.{exp}.{kid}.{sig}",  # another token under this signature
        f"{token}.{int(exp) + 86400}.{kid}.{sig}",  # a later expiry
        f"{token}.{exp}.{kid}.{sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
        f"{token}.{exp}.k2.{sig}",  # a key this ring does not have
        "not-a-link",
        "",
    ]
    for bad in altered:
        with pytest.raises(LinkRefused, match=r"^this link is not valid$"):
            SIGNER.token_of(bad, NOW)
    other = LinkSigner.from_ring(KeyRing.create_new("k1"), "https://care.example.org")
    with pytest.raises(LinkRefused, match=r"^this link is not valid$"):
        other.token_of(link, NOW)  # same key id, another clinic's key


def test_a_rotated_ring_still_opens_links_signed_with_the_old_key() -> None:
    ring = KeyRing.create_new("k1")
    old = LinkSigner.from_ring(ring, "https://x.example").sign(TOKEN, NOW + timedelta(days=1))
    rotated = LinkSigner.from_ring(ring.rotated("k2"), "https://x.example")
    assert rotated.token_of(old, NOW) == TOKEN
    assert ".k2." in rotated.sign(TOKEN, NOW + timedelta(days=1))


def test_the_message_names_neither_the_program_nor_care_and_goes_on_the_patients_channel() -> None:
    url = SIGNER.url(TOKEN, NOW + timedelta(days=14))
    text = patient_text("survey_invitation", f"Survey: {url}")
    assert text is not None and url in text
    for word in ("care", "program", "IOP", "treatment", "therapy", "recovery", "clinic"):
        assert word.lower() not in text.replace(url, "").lower()
    # Anything else in the body: no wording safe to send.
    assert patient_text("survey_invitation", f"Survey: {url} for Ann") is None
    assert patient_text("survey_invitation", "Survey: javascript:alert(1)") is None
    window = ContactWindow.model_validate({"reminders": "email"})
    assert channel_chosen("survey_invitation", "email", window)
    assert not channel_chosen("survey_invitation", "sms", window)


# --- issuing and answering -----------------------------------------------------------------


def _store(tmp_path: Path) -> CareStore:
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    return store


def _issue(ops: CareOperations, patient: str = "P-SURVEY01", at: datetime = NOW) -> bool:
    return ops.issue_survey(
        SurveyIssue(
            key=survey_key(patient, 1, "step_down"),
            patient_id=patient,
            program_id="default-iop",
            site_id="north",
            track_id="north-morning",
            occasion="step_down",
            episode=1,
            at=at,
            link_days=14,
            channel="sms",
        )
    )


def _operations(store: CareStore) -> CareOperations:
    return CareOperations(
        store,
        ProgramCatalog(PROGRAMS),
        SimulatedTelephony(store),
        SimulatedPartners(store),
        links=SIGNER,
    )


def _link_of(store: CareStore, patient: str = "P-SURVEY01") -> str:
    (message,) = [m for m in store.outbox(patient) if m.kind == "survey_invitation"]
    return message.body.rsplit("/", 1)[1]


def test_issuing_twice_makes_one_survey_and_one_message(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ops = _operations(store)
    assert _issue(ops) is True
    assert _issue(ops) is False  # a retried activity
    (survey,) = store.surveys("P-SURVEY01")
    assert survey.occasion == "step_down" and survey.expires_at == NOW + timedelta(days=14)
    (message,) = store.outbox("P-SURVEY01")
    assert message.channel == "sms" and message.body.startswith("Survey: https://care.example")
    assert survey.token in message.body and "P-SURVEY01" not in message.body


def test_a_survey_is_answered_once_and_bad_links_record_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _issue(_operations(store))
    door = SurveyDoor(store, SIGNER, ProgramCatalog(PROGRAMS))
    link = _link_of(store)
    assert [i.id for i in door.open(link, NOW).config.items] == list(ALL_FOURS)
    with pytest.raises(SurveyRefused, match="please answer every question"):
        door.answer(link, {"care": "4"}, NOW)
    assert store.surveys()[0].answered_at is None
    door.answer(link, ALL_FOURS, NOW + timedelta(hours=1))
    (answered,) = store.surveys()
    assert answered.answers == {k: 4 for k in ALL_FOURS} and answered.answered_via == "link"
    with pytest.raises(SurveyRefused, match="answered already"):
        door.answer(link, {**ALL_FOURS, "care": "1"}, NOW + timedelta(hours=2))
    assert store.surveys()[0].answers == {k: 4 for k in ALL_FOURS}
    unknown = SIGNER.sign("U" * 32, NOW + timedelta(days=1))  # signed, but never issued
    with pytest.raises(SurveyRefused, match=r"^this link is not valid$"):
        door.open(unknown, NOW)
    assert [e.action for e in store.audit_trail("P-SURVEY01")] == ["survey_answered"]


def test_an_expired_survey_cannot_be_answered(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _issue(_operations(store))
    door = SurveyDoor(store, SIGNER, ProgramCatalog(PROGRAMS))
    with pytest.raises(SurveyRefused, match=r"^this link has expired$"):
        door.answer(_link_of(store), ALL_FOURS, NOW + timedelta(days=15))
    assert store.surveys()[0].answered_at is None


# --- the page ------------------------------------------------------------------------------


@asynccontextmanager
async def _page(tmp_path: Path) -> AsyncIterator[tuple[ConsoleUnderTest, CareStore]]:
    settings = dataclasses.replace(
        load_settings(),
        database_url=f"sqlite:///{tmp_path / 'care.db'}",
        sites_path=OPEN_SITES,
        programs_dir=PROGRAMS,
    )
    store = CareStore(settings.database_url)
    store.migrate()
    ui = make_console(settings, store)
    ui.console.surveys = SurveyDoor(store, SIGNER, ProgramCatalog(PROGRAMS))
    try:
        yield ui, store
    finally:
        store.dispose()


async def test_the_page_needs_no_sign_in_shows_only_questions_and_records_once(
    tmp_path: Path,
) -> None:
    async with _page(tmp_path) as (ui, store):
        _issue(_operations(store), at=ui.clock())
        link = _link_of(store)
        async with ui.signed_in(None) as http:
            shown = await http.get(f"/survey/{link}")
            assert shown.status_code == 200
            for item in CONFIG.items:
                assert item.text.replace("'", "&#39;") in shown.text
            assert "P-SURVEY01" not in shown.text and "csrf" not in shown.text
            assert 'name="care" value="5"' in shown.text
            refused = await http.post(f"/survey/{link}", data={"care": "9"})
            assert refused.status_code == 400
            assert "an answer must be a number from 1 to 5" in refused.text
            assert store.surveys()[0].answered_at is None
            done = await http.post(f"/survey/{link}", data=ALL_FOURS)
            assert done.status_code == 200 and "your answers are recorded" in done.text
            again = await http.post(f"/survey/{link}", data={**ALL_FOURS, "care": "1"})
            assert again.status_code == 400 and "answered already" in again.text
            reopened = await http.get(f"/survey/{link}")
            assert reopened.status_code == 404 and "answered already" in reopened.text
        assert store.surveys()[0].answers == {k: 4 for k in ALL_FOURS}
        entries = ui.console.access.search()
        answered = [e for e in entries if e.outcome == "allowed"]
        assert [(e.actor, e.patient_id) for e in answered] == [("survey-link", "P-SURVEY01")]
        assert all(e.patient_id is None for e in entries if e.outcome == "refused")


async def test_a_tampered_unknown_or_expired_link_gets_one_line_and_records_nothing(
    tmp_path: Path,
) -> None:
    async with _page(tmp_path) as (ui, store):
        _issue(_operations(store), at=ui.clock())
        link = _link_of(store)
        token, exp, kid, sig = link.split(".")
        async with ui.signed_in(None) as http:
            for bad, line in (
                (f"{token}.{int(exp) + 1}.{kid}.{sig}", "this link is not valid"),
                (SIGNER.sign("U" * 32, ui.clock() + timedelta(days=1)), "this link is not valid"),
                ("x" * 500, "this link is not valid"),
            ):
                for answer in (
                    await http.get(f"/survey/{bad}"),
                    await http.post(f"/survey/{bad}", data=ALL_FOURS),
                ):
                    assert answer.status_code in (400, 404), bad
                    assert line in answer.text and "location" not in answer.headers
            ui.clock.advance(timedelta(days=15))
            expired = await http.post(f"/survey/{link}", data=ALL_FOURS)
            assert expired.status_code == 400 and "this link has expired" in expired.text
        assert store.surveys()[0].answered_at is None


async def test_the_page_is_rate_limited_per_address(tmp_path: Path) -> None:
    async with _page(tmp_path) as (ui, _):
        async with ui.signed_in(None) as http:
            answers = [(await http.get("/survey/nothing")).status_code for _ in range(12)]
        assert answers[:10] == [404] * 10 and answers[-1] == 429


# --- answered at a follow-up call ----------------------------------------------------------


def _cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CareStore:
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAREPATH_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAREPATH_PROGRAMS_DIR", str(PROGRAMS))
    monkeypatch.setenv("CAREPATH_ENCRYPTION", "off")
    store = CareStore(f"sqlite:///{tmp_path / 'carepath.db'}")
    store.migrate()
    return store


def test_answers_read_out_at_a_call_are_recorded_once_even_after_the_link_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _cli_store(tmp_path, monkeypatch)
    _issue(_operations(store), at=NOW - timedelta(days=60))  # its link long expired
    argv = ["survey-answer", "P-SURVEY01", "--occasion", "step_down", "--case-manager", "CM-01"]
    answers = [a for k, v in ALL_FOURS.items() for a in ("--answer", f"{k}={v}")]
    assert cli_main([*argv, *answers]) == 0
    (survey,) = store.surveys()
    assert survey.answers == {k: 4 for k in ALL_FOURS} and survey.answered_via == "call"
    assert [f.actor for f in store.audit_trail("P-SURVEY01")] == ["CM-01"]
    capsys.readouterr()
    assert cli_main([*argv, *answers]) == 2
    assert capsys.readouterr().err == "error: the step_down questionnaire is answered already\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--answer", "care=4"], "please answer every question"),
        (["--answer", "care"], "is not ITEM=POINT"),
        ([f"--answer={k}=9" for k in ALL_FOURS], "an answer must be a number from 1 to 5"),
    ],
)
def test_the_command_line_refuses_bad_answers_in_one_line(
    extra: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = _cli_store(tmp_path, monkeypatch)
    _issue(_operations(store))
    argv = ["survey-answer", "P-SURVEY01", "--occasion", "step_down", "--case-manager", "CM-01"]
    assert cli_main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert store.surveys()[0].answered_at is None
    assert (
        cli_main(["survey-answer", "P-NOBODY01", "--occasion", "end", "--case-manager", "CM-01"])
        == 2
    )
