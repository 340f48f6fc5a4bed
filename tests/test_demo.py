"""The demo's cohort: the simulated clinic's patients (tests/test_simulation.py), under
patient IDs of each run's own."""

from __future__ import annotations

from datetime import date

from demo.run import demo_cohort


def test_a_demo_run_again_enrols_the_same_people_under_new_ids() -> None:
    """A second `make demo` on the same data must not be refused its patients."""
    day = date(2028, 2, 29)  # the day the cohort is made
    first, second = demo_cohort(6, 7, "demo-iop", day), demo_cohort(6, 7, "demo-iop", day)
    assert [e.contact for e in first] == [e.contact for e in second]
    assert not {e.patient_id for e in first} & {e.patient_id for e in second}
