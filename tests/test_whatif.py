"""What-if simulations (`starter.py simulate`): the same cohort under two programs, and the
command's argument errors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from infra.settings import PROJECT_ROOT, load_settings
from simulation.behaviour import Behaviour, load_behaviour
from simulation.whatif import Plan, compare, copy_programs, start_instant, table


def program_file(into: Path, weeks: int) -> Path:
    """The default program with `weeks` intensive weeks (and step-down from then), and a
    month of aftercare so the journeys end soon."""
    path = into / f"weeks-{weeks}.toml"
    path.write_text(
        'extends = "default-iop.toml"\n\n'
        f'[program]\nid = "weeks-{weeks}"\nname = "{weeks} intensive weeks"\n\n'
        f"[intensive]\nmin_weeks = {weeks}\n\n"
        f"[step_down.criteria]\nmin_intensive_weeks = {weeks}\n\n"
        "[aftercare]\nfollow_up_days = [7, 30]\nduration_days = 30\n"
    )
    return path


def staying(behaviour: Behaviour) -> Behaviour:
    """Everyone stays to step-down, so both programs have weeks to step-down to compare."""
    return behaviour.model_copy(
        update={"dropout": behaviour.dropout.model_copy(update={"per_session": 0.0})}
    )


@pytest.mark.slow
async def test_a_what_if_shows_the_shorter_intensive_phase(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    files = [program_file(sources, 6), program_file(sources, 8)]
    programs = copy_programs(PROJECT_ROOT / "programs", tmp_path / "programs", files)
    settings = dataclasses.replace(load_settings(), programs_dir=programs)
    plan = Plan(programs=("weeks-6", "weeks-8"), patients=3, per_week=3, seeds=(11,))
    told: list[float] = []
    comparison = await compare(
        settings, plan, staying(load_behaviour()), tmp_path / "runs", told.append
    )
    six, eight = (comparison.runs[p][0] for p in plan.programs)
    assert six["weeks_to_step_down"] is not None and eight["weeks_to_step_down"] is not None
    # A patient's extra weeks (a rating of 3 or more) come on top of either program's.
    assert eight["weeks_to_step_down"] - six["weeks_to_step_down"] == pytest.approx(2, abs=0.5)
    assert six["facilitator_hours"] is not None and eight["facilitator_hours"] is not None
    assert six["treatment_completed"] == eight["treatment_completed"] == 1.0
    assert told[-1] == 1.0 and told == sorted(told)
    lines = table(comparison).splitlines()
    assert "weeks-6" in lines[0] and "weeks-8" in lines[0]
    assert "simulated patient-years; CPU a patient-year: worker" in lines[-1]


def test_every_what_if_starts_on_a_monday_in_february_of_the_coming_year() -> None:
    for now in (datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2027, 2, 28, 23, tzinfo=UTC)):
        start = start_instant(now)
        assert (start.year, start.month, start.weekday()) == (now.year + 1, 2, 0)
        assert 8 <= start.day <= 14


def test_a_patient_behaves_alike_under_every_program() -> None:
    """The n-th session's fate is the patient's whatever came before (and the seed's)."""
    behaviour = load_behaviour()
    one, again = behaviour.attendance_of(7, "P-A1B2C3D4"), behaviour.attendance_of(7, "P-A1B2C3D4")
    forwards = [one(n) for n in range(1, 61)]
    assert [again(n) for n in range(60, 0, -1)] == forwards[::-1]
    other_seed = behaviour.attendance_of(8, "P-A1B2C3D4")
    assert [other_seed(n) for n in range(1, 61)] != forwards


def test_dropout_leaves_a_longer_program_with_fewer_patients() -> None:
    behaviour = load_behaviour()
    fates = [behaviour.attendance_of(7, f"P-{i:08d}") for i in range(400)]

    def stayed(sessions: int) -> int:
        return sum(all(f(n) != "missed" for n in range(sessions - 3, sessions + 1)) for f in fates)

    assert stayed(30) > stayed(60) > 0


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--patients", "0"], "--patients must be from 1 to 10,000"),
        (["--arrivals", "many"], "--arrivals 'many': give admissions a week, e.g. 15/week"),
        (["--seeds", "0"], "--seeds must be from 1 to 20"),
        (["--program", "default-iop"], "each --program once: default-iop"),
        (["--program", "no-such"], "--program no-such: unknown program 'no-such'"),
        (["--program", "demo-iop"], "--program demo-iop runs on a compressed clock"),
        (["--program", "missing.toml"], "--program missing.toml: no such file"),
    ],
)
def test_simulate_refuses_bad_arguments_in_one_line(
    arguments: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--program", "default-iop", *arguments]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {error}") and err.count("\n") == 1
    assert "What if" not in out
