"""The patches in one module: every one the workflows call is listed there with its date,
and the README lists exactly those."""

from __future__ import annotations

import re
from datetime import date

from infra.settings import PROJECT_ROOT
from workflows import patches


def _used_in(path: str) -> set[str]:
    text = (PROJECT_ROOT / path).read_text()
    assert not re.search(r'patched\("', text), f"{path}: patch IDs by name, from workflows.patches"
    names = set(re.findall(r"patches\.([A-Z_]+)", text))
    return {getattr(patches, n) for n in names if n not in ("JOURNEY", "CHECK_IN", "ALL")}


JOURNEY_MODULES = (
    "workflows/patient_journey.py",
    "workflows/journey_steps.py",
    "workflows/journey_requests.py",
    "workflows/journey_groups.py",
    "workflows/journey_surveys.py",
)
"""The PatientJourney workflow class and the classes it is made of."""


def test_every_patch_the_workflows_call_is_listed_with_its_date() -> None:
    listed = {p.id for p in patches.ALL}
    journey = set().union(*(_used_in(m) for m in JOURNEY_MODULES))
    assert journey | _used_in("workflows/follow_up_call.py") == listed
    assert len(listed) == len(patches.ALL), "each patch once"
    assert {p.id for p in patches.JOURNEY} == journey
    assert [p.arrived for p in patches.JOURNEY] == sorted(p.arrived for p in patches.JOURNEY)


def test_the_readme_lists_exactly_the_patches() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("The patches so far:")[1].split("One rule since")[0]
    named = set(re.findall(r"`([a-z-]+)`", section))
    assert named == {p.id for p in patches.ALL}


def test_an_old_branch_may_go_one_longest_run_after_its_patch() -> None:
    first = patches.JOURNEY[0]
    assert first.old_branch_may_go == first.arrived + patches.LONGEST_RUN
    assert patches.due(first.arrived) == []
    assert first in patches.due(first.old_branch_may_go)
    assert patches.due(date(2000, 1, 1)) == []
