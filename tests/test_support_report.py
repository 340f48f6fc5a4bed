"""Measuring support in the outcomes report: the questionnaire's results by site, track and
facilitator with small cells suppressed, and support against completion and relapse, on a
cohort written by hand into a store (every number known); in the JSON and the HTML."""

from __future__ import annotations

import json
from pathlib import Path

from clinical.protocol import ProgramCatalog
from clinical.surveys import survey_key
from infra.store import AuditFact, CareEventFacts, CareStore, NewSurvey
from operators.outcomes import CohortFilter
from operators.report import as_json, cohort_report, terminal_tables
from operators.report_html import CHARTS, render_html
from tests.support import PROGRAMS
from tests.test_report import AS_OF, DAY, T0, CohortWriter, fact

HIGH = {"care": 5, "group": 4, "family": 5, "peers": 4, "helped": 5}
NO_CHARTS = {name: b"" for name in CHARTS}
LOW = {"care": 3, "group": 2, "family": 1, "peers": 2, "helped": 2}


def _survey(store: CareStore, pid: str, site: str, answers: dict[str, int] | None) -> None:
    token = f"token-{pid}-{'x' * 16}"
    store.issue_survey(
        NewSurvey(
            key=survey_key(pid, 1, "end"),
            token=token,
            patient_id=pid,
            program_id="default-iop",
            site_id=site,
            track_id="north-morning" if site == "north" else None,
            occasion="end",
            episode=1,
            issued_at=T0 + 60 * DAY,
            expires_at=T0 + 74 * DAY,
            channel="sms",
        ),
        lambda t: f"Survey: https://console.example/survey/{t}",
    )
    if answers is not None:
        assert store.answer_survey(token, answers, "link", "patient", T0 + 61 * DAY)


def _cohort(tmp_path: Path) -> CareStore:
    """Six well-supported patients who completed; six poorly supported, discharged (two
    relapsed first); one at south, alone; one more at north who never answered."""
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    w = CohortWriter(store)
    for n in range(1, 15):
        pid = f"P-SUPP{n:04d}"
        site = "south" if n == 13 else "north"
        w.patient(pid, T0, site=site)
        if n <= 6:
            w.phases(pid, ("intensive", T0 + DAY), ("completed", T0 + 60 * DAY))
            for m in range(3):
                meeting = fact(pid, f"{pid}/alumni/{m}", "alumni_meeting_attended")
                store.record_care_events(_events(pid, meeting))
            family = [
                (f"2026-01-{8 + d:02d} 18:00", "attended", "family_therapy") for d in range(4)
            ]
            w.sessions(pid, *family)
            _survey(store, pid, site, HIGH)
        elif n <= 12:
            changes = [("intensive", T0 + DAY)]
            if n <= 8:
                changes.append(("intake", T0 + 20 * DAY))
            w.phases(pid, *changes, ("discharged", T0 + 60 * DAY))
            _survey(store, pid, site, LOW)
        elif n == 13:
            w.phases(pid, ("intensive", T0 + DAY), ("completed", T0 + 60 * DAY))
            _survey(store, pid, site, HIGH)
        else:
            w.phases(pid, ("intensive", T0 + DAY))
            _survey(store, pid, site, None)
    return store


def _events(pid: str, *audit: AuditFact) -> CareEventFacts:
    return CareEventFacts(patient_id=pid, audit=list(audit))


def test_results_by_site_track_and_facilitator_with_small_cells_suppressed(tmp_path: Path) -> None:
    store = _cohort(tmp_path)
    report = cohort_report(store, ProgramCatalog(PROGRAMS), CohortFilter(), AS_OF)
    support = report.support
    assert support is not None
    assert (support.surveys_sent, support.surveys_answered) == (14, 13)
    north, south = support.by_site
    assert (north.group, north.sent, north.answered) == ("north", 13, 12)
    assert north.response is not None and north.response.show() == "92% (12 of 13)"
    assert north.item_means == {
        "care": 4.0,
        "family": 3.0,
        "group": 3.0,
        "helped": 3.5,
        "peers": 3.0,
    }
    assert (south.group, south.answered, south.response, south.item_means) == (
        "south",
        1,
        None,
        None,
    )
    (track,) = support.by_track
    assert track.group == "north-morning" and track.item_means == north.item_means
    (dana,) = support.by_facilitator
    assert dana.group == "Dana Reyes" and dana.answered == 12
    rows = {(r.measure, r.band): r for r in support.against_outcomes}
    high = rows[("support band (questionnaire)", "high")]
    assert (
        high.patients == 7
        and high.completion is not None
        and high.completion.show() == "100% (7 of 7)"
    )
    assert high.relapse is not None and high.relapse.show() == "0% (0 of 7)"
    low = rows[("support band (questionnaire)", "low")]
    assert low.completion is not None and low.completion.show() == "0% (0 of 6)"
    assert low.relapse is not None and low.relapse.show() == "33% (2 of 6)"
    unanswered = rows[("support band (questionnaire)", "not answered")]
    assert (unanswered.patients, unanswered.completion, unanswered.relapse) == (1, None, None)
    assert rows[("alumni meetings attended", "3+")].patients == 6
    assert rows[("alumni meetings attended", "none")].patients == 8
    assert rows[("family sessions attended", "4+")].patients == 6
    assert rows[("family sessions attended", "1-3")].patients == 0


def test_the_json_html_and_tables_show_it_and_name_no_patient(tmp_path: Path) -> None:
    store = _cohort(tmp_path)
    report = cohort_report(store, ProgramCatalog(PROGRAMS), CohortFilter(), AS_OF)
    data = as_json(report)
    assert data["support"]["by_site"][0]["item_means"]["care"] == 4.0
    page = render_html(report, charts=NO_CHARTS)
    assert "Measuring support" in page and "support band (questionnaire)" in page
    assert "suppressed" in page
    text = json.dumps(data) + page
    assert "P-SUPP" not in text and "token-" not in text
    titles = [t.title for t in terminal_tables(report)]
    assert any(str(t).startswith("Satisfaction and support questionnaire") for t in titles)


def test_a_cohort_without_questionnaires_has_no_support_section(tmp_path: Path) -> None:
    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    CohortWriter(store).patient("P-SUPP0001", T0)
    report = cohort_report(store, ProgramCatalog(PROGRAMS), CohortFilter(), AS_OF)
    assert report.support is None
    assert "Measuring support" not in render_html(report, charts=NO_CHARTS)
