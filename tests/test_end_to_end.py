"""End to end, as a user would: the real dev server (SQLite file), `worker.py` as its own
process, and `starter.py` commands, including the bad-input cases."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.embedded_server import EmbeddedServer, free_port
from infra.settings import PROJECT_ROOT
from tests.support import enrolment_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TEST_PROGRAMS = Path(__file__).parent / "programs"


@dataclass
class Deployment:
    env: dict[str, str]
    server: EmbeddedServer
    worker_log: Path
    demo_output: str | None = None
    metrics_output: str | None = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "starter.py"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
        )

    def status(self, patient_id: str) -> dict[str, Any]:
        result = self.cli("status", patient_id, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def wait_for(self, patient_id: str, predicate: Any, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(patient_id)
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"timed out; last status phase {status['phase']}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data = tmp_path_factory.mktemp("carepath-e2e")
    env = {
        **os.environ,
        "CAREPATH_DATA_DIR": str(data),
        "CAREPATH_PROGRAMS_DIR": str(TEST_PROGRAMS),
        "CAREPATH_SERVER_PORT": str(free_port()),
        "CAREPATH_UI_PORT": str(free_port()),
        "CAREPATH_LOG_FORMAT": "json",
        # A check-in that reports use would send the patient round again (and past the
        # test's deadline); relapse has its own tests.
        "CAREPATH_SIMULATED_USE_RISK": "0",
        # The worker's Prometheus endpoint, its clinic gauges refreshed twice a second.
        "CAREPATH_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "CAREPATH_METRICS_INTERVAL": "0.5",
    }
    server = EmbeddedServer(
        data_dir=data, port=int(env["CAREPATH_SERVER_PORT"]), ui_port=int(env["CAREPATH_UI_PORT"])
    )
    deployment = Deployment(env=env, server=server, worker_log=data / "worker.log")
    started = deployment.cli("server", "start")
    assert started.returncode == 0, started.stderr
    # The payload keys, made once where the workers run (a command line never makes them).
    keys = deployment.cli("keys")
    assert keys.returncode == 0, keys.stderr
    with open(deployment.worker_log, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "worker.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    try:
        yield deployment
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
        server.stop()
    assert code == 0, "the worker did not shut down cleanly on SIGINT"
    assert "Traceback" not in deployment.worker_log.read_text()


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def journeys(d: Deployment) -> list[dict[str, Any]]:
    result = d.cli("list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_enrolment_and_bad_input(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    good = enrolment_data()
    good["program_id"] = "e2e-iop"
    patient = good["patient_id"]
    assert d.cli("enrol", write(tmp_path, "good.json", good)).returncode == 0

    # The second enrolment first, while the journey surely runs: on e2e-iop's one-second
    # days a loaded machine's CLI calls can outlast a whole journey.
    cases: list[tuple[str, Any, str]] = [
        ("second.json", good, f"patient {patient} is already enrolled"),
        ("malformed.json", "{ not json", "not valid JSON"),
        (
            "rating.json",
            {
                **good,
                "patient_id": "P-7K2M9Q4D",
                "assessment": {
                    **good["assessment"],
                    "ratings": {**good["assessment"]["ratings"], "relapse": 9},
                },
            },
            "assessment.ratings.relapse",
        ),
        ("name-as-id.json", {**good, "patient_id": "JaneDoe"}, "patient_id"),
        (
            "program.json",
            {**good, "patient_id": "P-7K2M9Q4E", "program_id": "no-such"},
            "unknown program 'no-such'",
        ),
        (
            "override.json",
            {
                **good,
                "patient_id": "P-7K2M9Q4F",
                "placement_override": {"level": "3.7", "reason": "wants residential care"},
            },
            "'3.7' is not a level of program e2e-iop",
        ),
    ]
    for name, content, message in cases:
        result = d.cli("enrol", write(tmp_path, name, content))
        assert result.returncode != 0, name
        assert message in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # Nothing was started by the refused enrolments.
    listed = [j["patient_id"] for j in journeys(d)]
    assert patient in listed
    assert not {"P-7K2M9Q4D", "P-7K2M9Q4E", "P-7K2M9Q4F"} & set(listed)

    unknown = d.cli("status", "P-0000000Z")
    assert unknown.returncode == 2, unknown.stderr
    assert "no journey for patient P-0000000Z" in unknown.stderr

    # Refusals need a session surely ahead: a program on a slower clock (5 s a day; its
    # first week is booked on the Monday after enrolment), so a busy machine cannot run
    # past the session while the command line asks.
    slow = enrolment_data()
    slow["program_id"] = "e2e-slow-iop"
    assert d.cli("enrol", write(tmp_path, "slow.json", slow)).returncode == 0
    waiting = slow["patient_id"]
    first = d.wait_for(
        waiting, lambda s: any(x["day"] > s["program_day"] + 2 for x in s["sessions"])
    )
    before = first["attendance"]
    ahead = [x for x in first["sessions"] if x["day"] > first["program_day"] + 2]
    latest = max(ahead, key=lambda x: x["day"])
    refusals = [
        # First, while the session is surely ahead: on a machine at load 15 each command
        # took ~10 s, and a session two 5-second days ahead had happened by the second.
        (
            ("attendance", waiting, latest["session_id"], "attended", "--case-manager", "CM-01"),
            "has not happened yet",
        ),
        (
            ("attendance", waiting, "INT1-W09-S1", "attended", "--case-manager", "CM-01"),
            "unknown session 'INT1-W09-S1'",
        ),
        (
            ("attendance", waiting, "INT1-W01-S1", "attended", "--case-manager", "Dr Smith"),
            "case_manager_id",
        ),
        # A sheet is refused whole when one of its marks is.
        (
            (
                *("attendance", waiting, "INT1-W01-S1", "attended", "INT1-W09-S1", "missed"),
                *("--case-manager", "CM-01"),
            ),
            "unknown session 'INT1-W09-S1'",
        ),
        (
            ("attendance", waiting, "INT1-W01-S1", "maybe", "--case-manager", "CM-01"),
            "'maybe' is not a status",
        ),
        (
            ("attendance", waiting, "INT1-W01-S1", "--case-manager", "CM-01"),
            "'INT1-W01-S1' has no status",
        ),
    ]
    for args, message in refusals:
        result = d.cli(*args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    assert d.status(waiting)["attendance"]["attended"] == before["attended"]
    left = d.cli("discharge", waiting, "--reason", "withdrew", "--case-manager", "CM-01")
    assert left.returncode == 0, left.stderr

    # Attendance and a whole journey on a journey enrolled just now (on a busy machine the
    # first one may have run through its one-second-a-day program meanwhile).
    attender = enrolment_data()
    attender["program_id"] = "e2e-iop"
    assert d.cli("enrol", write(tmp_path, "attender.json", attender)).returncode == 0
    patient = attender["patient_id"]
    happened = d.wait_for(
        patient, lambda s: sum(x["day"] <= s["program_day"] for x in s["sessions"]) >= 3
    )
    session, *sheet = [x for x in happened["sessions"] if x["day"] <= happened["program_day"]][:3]
    recorded = d.cli(
        "attendance", patient, session["session_id"], "attended", "--case-manager", "CM-01"
    )
    assert recorded.returncode == 0, recorded.stderr
    # A sheet of the next two in one request.
    marks = [sheet[0]["session_id"], "missed", sheet[1]["session_id"], "excused"]
    entered = d.cli("attendance", patient, *marks, "--case-manager", "CM-01")
    assert entered.returncode == 0 and "2 sessions recorded" in entered.stdout, entered.stderr
    after = {x["session_id"]: x["status"] for x in d.status(patient)["sessions"]}
    assert [after[x["session_id"]] for x in (session, *sheet)] == ["attended", "missed", "excused"]

    done = d.wait_for(patient, lambda s: s["phase"] == "completed")
    phases = [p["phase"] for p in done["phase_history"]]
    assert phases == ["intake", "intensive", "step_down", "aftercare", "completed"]
    assert patient in [
        j["patient_id"] for j in json.loads(d.cli("list", "--phase", "completed", "--json").stdout)
    ]
    ended = d.cli("attendance", patient, session["session_id"], "missed", "--case-manager", "CM-01")
    assert ended.returncode == 3 and "has ended" in ended.stderr
    again = d.cli("enrol", write(tmp_path, "readmission.json", attender))
    assert again.returncode == 3 and "was enrolled before" in again.stderr, again.stderr

    # Logs carry opaque identifiers only.
    log = d.worker_log.read_text()
    assert patient in log
    for enrolled in (good, attender):
        contact = enrolled["contact"]
        for phi in (contact["family_name"], contact["phone"], contact["date_of_birth"]):
            assert phi not in log


def test_relapse_then_discharge(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    data = enrolment_data()
    data["program_id"] = "e2e-iop"
    patient = data["patient_id"]
    assert d.cli("enrol", write(tmp_path, "p.json", data)).returncode == 0
    d.wait_for(patient, lambda s: s["phase"] == "intensive")
    relapse = d.cli("relapse", patient, "--ratings", "1,0,2,2,3,3", "--case-manager", "CM-02")
    assert relapse.returncode == 0 and "re-linking" in relapse.stdout, relapse.stderr
    relinked = d.wait_for(patient, lambda s: s["episode"] == 2)
    assert relinked["risk"] == "high"
    result = d.cli("discharge", patient, "--reason", "withdrew", "--case-manager", "CM-02")
    assert result.returncode == 0, result.stderr
    assert "withdrawn" in result.stdout
    status = d.status(patient)
    assert status["phase"] == "withdrawn"
    assert all(s["status"] != "scheduled" for s in status["sessions"])
    again = d.cli("discharge", patient, "--reason", "withdrew", "--case-manager", "CM-02")
    assert again.returncode == 3 and "has ended" in again.stderr
    # The operator's story of it, from the server's histories and the audit trail.
    history = d.cli("history", patient, "--json")
    assert history.returncode == 0, history.stderr
    story = json.loads(history.stdout)
    whats = [(e["what"], e["who"]) for e in story]
    assert ("report relapse", "CM-02") in whats and ("discharge", "CM-02") in whats
    assert ("enrolled", data["case_manager_id"]) in whats
    assert story[-1]["what"] == "ended" and "withdrawn" in story[-1]["detail"]
    assert "Quinlan" not in history.stdout


def test_the_inbox_from_the_command_line(deployment: Deployment, tmp_path: Path) -> None:
    """A referral without consent opens a task; the case manager sees it in the caseload,
    marks it done, and the referral goes out."""
    d = deployment
    data = enrolment_data(social_needs=["housing"])
    data["program_id"] = "e2e-iop"
    data["case_manager_id"] = "CM-42"
    patient = data["patient_id"]
    assert d.cli("enrol", write(tmp_path, "p.json", data)).returncode == 0

    def inbox(*extra: str) -> list[dict[str, Any]]:
        """The patient's consent tasks. On the fast clock real time runs the sessions by
        unattended, and how many fall due while the test runs depends on the weekday and
        hour it starts: the outreach tasks they open are not this test's business."""
        result = d.cli("tasks", "--patient", patient, "--json", *extra)
        assert result.returncode == 0, result.stderr
        return [t for t in json.loads(result.stdout) if t["kind"] == "consent_needed"]

    deadline = time.monotonic() + 60
    while not (opened := inbox()):
        assert time.monotonic() < deadline, "no consent task appeared"
        time.sleep(0.5)
    (task,) = opened
    assert task["kind"] == "consent_needed" and task["case_manager_id"] == "CM-42"

    caseload = d.cli("caseload", "CM-42", "--json")
    assert caseload.returncode == 0, caseload.stderr
    mine = json.loads(caseload.stdout)
    assert [p["patient_id"] for p in mine["patients"]] == [patient]
    assert mine["patients"][0]["open_tasks"] >= 1
    assert task["id"] in {t["id"] for t in mine["open_tasks"]}

    done = d.cli("done", str(task["id"]), "--case-manager", "CM-42")
    assert done.returncode == 0, done.stderr
    assert "consent recorded" in done.stdout
    again = d.cli("done", str(task["id"]), "--case-manager", "CM-42")
    assert again.returncode == 3 and "already done" in again.stderr, again.stderr
    assert inbox() == []
    everything = inbox("--all")
    assert len(everything) == 1, everything
    (closed,) = everything
    assert (closed["status"], closed["completed_by"]) == ("done", "CM-42")
    assert d.cli("done", "999999", "--case-manager", "CM-42").stderr.startswith("error: no task")


def test_find_answers_visibility_questions(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    data = enrolment_data()  # highest rating 2: moderate risk
    data["program_id"] = "e2e-iop"
    data["site_id"] = "east-2"
    patient = data["patient_id"]
    assert d.cli("enrol", write(tmp_path, "f.json", data)).returncode == 0
    d.wait_for(patient, lambda s: s["phase"] == "intensive")

    def found(*filters: str) -> set[str]:
        result = d.cli("find", "--json", *filters)
        assert result.returncode == 0, result.stderr
        return {r["patient_id"] for r in json.loads(result.stdout)}

    # The enrolment's own date (UTC, as the search attribute holds it), not the date the test
    # runs: a run that straddles midnight must still find it.
    shown = d.cli("status", patient, "--json")
    assert shown.returncode == 0, shown.stderr
    enrolled = datetime.fromisoformat(json.loads(shown.stdout)["phase_history"][0]["at"])
    today = enrolled.astimezone(UTC).date()
    deadline = time.monotonic() + 30
    while patient not in found("--site", "east-2", "--risk", "moderate", "--active"):
        assert time.monotonic() < deadline, "visibility never showed the patient"
        time.sleep(0.5)
    assert patient not in found("--site", "east-2", "--risk", "high")
    assert patient in found("--site", "east-2", "--enrolled-from", today.isoformat())
    assert patient not in found("--site", "east-2", "--enrolled-to", today.isoformat())
    # A phase this journey cannot reach by itself (only a case manager withdraws a patient):
    # on e2e-iop's one-second days it reaches aftercare within half a minute, which a loaded
    # machine's CLI calls can outlast.
    assert patient not in found("--site", "east-2", "--phase", "withdrawn")
    bad = d.cli("find", "--risk", "extreme")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_demo_runs_a_cohort_through_every_phase(deployment: Deployment) -> None:
    result = deployment.cli(
        "demo", "--patients", "3", "--program", "e2e-iop", "--seed", "11", timeout=240
    )
    deployment.demo_output = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert "journeys completed" in result.stdout
    # The check-in calls went through the provider service and came back by its callbacks.
    found = re.search(
        r"Telephony provider: (\d+) calls placed, (\d+) callbacks taken", result.stdout
    )
    assert found is not None and int(found[1]) > 0 and int(found[2]) >= int(found[1])
    assert deployment.server.ui_url in result.stdout.replace("\n", "")
    # The simulated patients answered questionnaires by their links; the demo shows them.
    from infra.store import CareStore

    store = CareStore(f"sqlite:///{Path(deployment.env['CAREPATH_DATA_DIR']) / 'carepath.db'}")
    surveys = store.surveys()
    store.dispose()
    assert any(s.answered_via == "link" for s in surveys), surveys
    assert "questionnaires" in result.stdout
    # A patient per case manager is left in care, a consent task in each inbox.
    output = result.stdout.replace("\n", "")
    waiting = re.findall(r"P-[0-9A-Z]{8}", output.split("still in care")[1].split(")")[0])
    assert len(waiting) == 3  # the cohort's three case managers
    deadline = time.monotonic() + 60
    while True:
        listed = deployment.cli("tasks", "--json")
        assert listed.returncode == 0, listed.stderr
        open_tasks = {(t["patient_id"], t["kind"]) for t in json.loads(listed.stdout)}
        if all((p, "consent_needed") in open_tasks for p in waiting):
            break
        assert time.monotonic() < deadline, f"no consent tasks for {waiting}"
        time.sleep(0.5)


def scrape(d: Deployment) -> tuple[str, dict[tuple[str, str], float]]:
    """The worker's /metrics, and its samples by (name, labels)."""
    url = f"http://{d.env['CAREPATH_METRICS_ADDRESS']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line):
            samples[(m[1], m[2] or "")] = float(m[3])
    return text, samples


def carepath_gauge(samples: dict[tuple[str, str], float], name: str) -> dict[str, int]:
    found = {}
    for (metric, labels), value in samples.items():
        if metric == name:
            (label,) = re.findall(r'(?:phase|outcome|kind)="([^"]*)"', labels)
            found[label] = int(value)
    return found


def test_the_worker_serves_prometheus_metrics(deployment: Deployment) -> None:
    """After the module's journeys: the SDK's metrics, and the clinic's gauges agreeing with
    the store (read again until both are taken between two phase changes)."""
    from infra.store import CareStore

    d = deployment
    store = CareStore(f"sqlite:///{Path(d.env['CAREPATH_DATA_DIR']) / 'carepath.db'}")
    gauges = {"patients": "carepath_patients", "check_ins": "carepath_check_ins"}
    gauges["open_tasks"] = "carepath_tasks_open"
    deadline = time.monotonic() + 30
    while True:
        text, samples = scrape(d)
        census = store.census()
        seen = {key: carepath_gauge(samples, name) for key, name in gauges.items()}
        nonzero = {key: {k: v for k, v in values.items() if v} for key, values in seen.items()}
        if nonzero == census or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    store.dispose()
    d.metrics_output = text
    assert nonzero == census
    # Every label value is shown, zeros too; none is about one patient.
    assert set(seen["patients"]) >= {"intake", "intensive", "aftercare", "completed"}
    assert set(seen["check_ins"]) == {"reached", "unreachable", "declined"}
    assert "consent_needed" in seen["open_tasks"]
    assert not re.search(r"P-[0-9A-Z]{8}", text)
    # This module's journeys: at least the first one completed and the relapse one withdrew,
    # after aftercare check-ins.
    assert seen["patients"]["completed"] >= 1 and seen["patients"]["withdrawn"] >= 1
    assert sum(seen["check_ins"].values()) >= 2
    # The SDK's own: workflow tasks and activities this worker ran.
    completed = sum(v for (m, _), v in samples.items() if m == "temporal_workflow_completed")
    assert completed >= 1
    latencies = [
        v for (m, labels), v in samples.items() if m == "temporal_activity_execution_latency_count"
    ]
    assert sum(latencies) >= 10
    assert any(m == "temporal_workflow_task_execution_latency_count" for m, _ in samples)

    # The container's health check reads the same endpoint.
    def health(address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.healthcheck"],
            env={**d.env, "CAREPATH_METRICS_ADDRESS": address},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=PROJECT_ROOT,
        )

    ok = health(d.env["CAREPATH_METRICS_ADDRESS"].replace("127.0.0.1", "0.0.0.0"))
    assert (ok.returncode, ok.stdout.strip()) == (0, "healthy"), ok.stderr
    down = health(f"127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "does not answer" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_no_phi_in_the_servers_database_or_the_logs(deployment: Deployment) -> None:
    """After the module's journeys (a file enrolment and the demo cohort): the Temporal
    server's SQLite files and every log hold none of their names, phones or birth dates."""
    from simulation.patients import synthetic_cohort

    d = deployment
    secrets = {"Quinlan", "+1 555 010 2030", "1988-04-02"}
    if d.demo_output is not None:  # the demo test ran: its cohort, rebuilt from the seed
        # (the same people each run, under patient IDs of the run's own)
        cohort = synthetic_cohort(3, 11, "e2e-iop")
        listing = d.cli("list", "--json")
        assert listing.returncode == 0
        assert len(json.loads(listing.stdout)) >= len(cohort)
        for e in cohort:
            c = e.contact
            secrets |= {c.family_name, c.phone, c.date_of_birth.isoformat()}
    server_files = sorted(d.server.db_file.parent.glob(d.server.db_file.name + "*"))
    assert server_files, "the server's database"
    haystacks = {p.name: p.read_bytes() for p in server_files}
    haystacks["worker.log"] = d.worker_log.read_bytes()
    haystacks["temporal-server.log"] = d.server.log_file.read_bytes()
    # Search attributes, as an operator's query sees them: opaque values only.
    attributes = d.cli("find", "--json")
    assert attributes.returncode == 0
    haystacks["search attributes"] = attributes.stdout.encode()
    haystacks["demo output"] = (d.demo_output or "").encode()
    haystacks["worker metrics"] = (d.metrics_output or "").encode()
    # The outcomes report of everyone enrolled here, in the terminal and as HTML.
    page = d.server.db_file.parent / "outcomes.html"
    report = d.cli("report", "--html", str(page))
    assert report.returncode == 0, report.stderr
    haystacks["outcomes report"] = report.stdout.encode() + page.read_bytes()
    for name, data in haystacks.items():
        found = sorted(s for s in secrets if s.encode() in data)
        assert not found, f"{name} holds PHI: {found}"
