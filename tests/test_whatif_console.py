"""The supervisors' what-if page: a what-if started from the console runs in a process of
its own (never the clinic's store or server), shows its progress, then the comparison."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.settings import PROJECT_ROOT, load_settings
from infra.store import CareStore
from simulation.clinic import OPEN_SITES
from simulation.report import to_json
from simulation.whatif import copy_programs
from tests.console_support import ConsoleUnderTest, csrf_of, make_console
from tests.test_whatif import a_comparison, program_file

FORM = {"patients": "2", "per_week": "4", "seed": "7", "seeds": "1"}


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[ConsoleUnderTest]:
    """A console over an empty store, its data directory and programs (the clinic's and a
    month-long variant) in `tmp_path`."""
    programs = copy_programs(
        PROJECT_ROOT / "programs", tmp_path / "programs", [program_file(tmp_path, 6)]
    )
    settings = dataclasses.replace(
        load_settings(),
        data_dir=tmp_path / "data",
        programs_dir=programs,
        database_url=f"sqlite:///{tmp_path / 'care.db'}",
        sites_path=OPEN_SITES,
    )
    store = CareStore(settings.database_url)
    store.migrate()
    try:
        yield make_console(settings, store)
    finally:
        store.dispose()


def _runs(ui: ConsoleUnderTest) -> Path:
    return ui.console.settings.data_dir / "whatif"


async def test_only_a_supervisor_may_run_a_what_if_and_bad_input_starts_nothing(
    ui: ConsoleUnderTest,
) -> None:
    async with ui.signed_in("sup") as http:
        form = await http.get("/whatif")
        token = csrf_of(http)
        one = await http.post("/whatif", data={"csrf": token, "program": "weeks-6", **FORM})
        unknown = await http.post(
            "/whatif", data={"csrf": token, "program": ["weeks-6", "no-such"], **FORM}
        )
        too_many = await http.post(
            "/whatif",
            data={"csrf": token, "program": ["weeks-6", "default-iop"], **FORM, "patients": "9e9"},
        )
        no_token = await http.post("/whatif", data={"program": ["weeks-6", "default-iop"], **FORM})
        missing = await http.get("/whatif/0123456789abcdef")
        odd = await http.get("/whatif/..%2F..%2Fetc")
    assert form.status_code == 200 and 'value="weeks-6"' in form.text
    assert 'value="demo-iop"' not in form.text  # a compressed clock cannot be simulated
    assert (one.status_code, unknown.status_code, too_many.status_code) == (422, 422, 422)
    assert "choose two programs or more to compare" in one.text
    assert "unknown program &#39;no-such&#39;" in unknown.text
    assert "patients must be a whole number from 1 to 2,000" in too_many.text
    assert no_token.status_code == 403
    assert (missing.status_code, odd.status_code) == (404, 404)
    assert not _runs(ui).exists()
    async with ui.signed_in("cm1") as http:
        refused = await http.post(
            "/whatif", data={"csrf": csrf_of(http), "program": ["weeks-6", "default-iop"], **FORM}
        )
        page = await http.get("/whatif")
    assert (refused.status_code, page.status_code) == (403, 403)
    assert not _runs(ui).exists()


def _a_run(ui: ConsoleUnderTest, run_id: str, **files: str) -> None:
    folder = _runs(ui) / run_id
    folder.mkdir(parents=True)
    asked = {"programs": ["default-iop", "weeks-6"], "patients": 40, "per_week": 10}
    asked |= {"seed": 7, "seeds": 3, "by": "sup", "at": "2027-02-08T13:00:00+00:00"}
    (folder / "asked.json").write_text(json.dumps(asked))
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text)


async def test_a_finished_what_if_shows_its_charts_and_a_failed_one_says_why(
    ui: ConsoleUnderTest,
) -> None:
    _a_run(ui, "a" * 16, comparison_json=to_json(a_comparison()))
    _a_run(
        ui,
        "b" * 16,
        pid="999999999",
        progress="0.400 60\n",
        errors_txt="[###..]  12%\r[####.]  40%\nerror: the simulation failed: transport error\n",
    )
    async with ui.signed_in("sup") as http:
        done = await http.get("/whatif/" + "a" * 16)
        failed = await http.get("/whatif/" + "b" * 16)
        listed = await http.get("/whatif")
    assert done.status_code == 200
    assert done.text.count("<svg") == 12
    assert "completed treatment (reached aftercare)" in done.text
    assert "&lt;six&gt; &amp; weeks" in done.text and "<six>" not in done.text
    assert "The what-if did not finish: error: the simulation failed: transport error" in (
        failed.text
    )
    assert listed.text.index("a" * 16) and ">done<" in listed.text and ">failed<" in listed.text


async def test_one_what_if_runs_at_a_time(
    ui: ConsoleUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import whatif

    # A run whose process is alive and a simulation (a PID that stands in for one).
    note = "note: weeks-6: north's level 2.1 groups have 22 seats; at 10 admissions <a week>"
    _a_run(ui, "c" * 16, pid="4242", progress="0.250 30\n", errors_txt=f"{note}\n[#..]  25%")
    monkeypatch.setattr(whatif, "_running", lambda pid: pid == 4242)
    async with ui.signed_in("sup") as http:
        running = await http.get("/whatif/" + "c" * 16)
        again = await http.post(
            "/whatif",
            data={"csrf": csrf_of(http), "program": ["weeks-6", "default-iop"], **FORM},
        )
    assert 'http-equiv="refresh"' in running.text and "25%" in running.text
    assert "(about 2 min left)" in running.text  # 30 s for a quarter
    # What the run said before it started (its tracks would not keep up), escaped.
    assert (
        "Before it started: weeks-6: north&#39;s level 2.1 groups have 22 seats; at 10 "
        "admissions &lt;a week&gt;</p>"
    ) in running.text
    assert again.status_code == 422
    assert "a what-if is already running (started 2027-02-08T13:00:00+00:00 by sup)" in again.text
    assert len(list(_runs(ui).iterdir())) == 1


@pytest.mark.slow
async def test_a_what_if_from_the_console_runs_apart_and_shows_the_comparison(
    ui: ConsoleUnderTest,
) -> None:
    async with ui.signed_in("sup") as http:
        started = await http.post(
            "/whatif",
            data={"csrf": csrf_of(http), "program": ["weeks-6", "default-iop"], **FORM},
        )
        assert started.status_code == 303, started.text
        where = started.headers["location"]
        assert re.fullmatch(r"/whatif/[0-9a-f]{16}", where)
        running = await http.get(where)
        assert running.status_code == 200
        assert 'http-equiv="refresh"' in running.text or "<svg" in running.text
        for _ in range(300):
            shown = await http.get(where)
            if 'http-equiv="refresh"' not in shown.text:
                break
            await asyncio.sleep(1)
    assert "<svg" in shown.text, shown.text[-2000:]
    assert "weeks from intensive start to step-down (median)" in shown.text
    # The clinic's own store saw nothing of it; the access log has who started it.
    assert ui.console.store.patients() == []
    actions = [e.action for e in ui.console.access.search()]
    assert any(a.startswith("start what-if ") for a in actions)
