"""The benchmark harness's pure parts: its statistics, the bare reference's script read from
a journey's history, the table, the JSON it writes and its arguments. Nothing here times
anything: benchmarks are not tests."""

from __future__ import annotations

import json
import os

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import (
    ActivityTaskScheduledEventAttributes,
    HistoryEvent,
    MarkerRecordedEventAttributes,
    TimerStartedEventAttributes,
    WorkflowExecutionContinuedAsNewEventAttributes,
    WorkflowExecutionUpdateAcceptedEventAttributes,
    WorkflowTaskCompletedEventAttributes,
)
from temporalio.client import WorkflowHistory

from bench import cohort
from bench.__main__ import arguments, write
from bench.bare import BareStep, counts, script_of
from bench.cohort import plans
from bench.common import latency_summary, percentile, spread
from bench.table import rows
from simulation.case_manager import CaseManager
from simulation.cohort import Booked, Patient, enter_sheets, sheets_due
from simulation.patients import steady_attendance
from tests.support import JourneyStandIn


def test_percentiles_interpolate_between_ranks():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([7], 99) == 7
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_spread_is_the_median_of_runs_with_range_and_quartiles():
    assert spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "q1": 1.5,
        "q3": 2.5,
        "runs": 3,
    }


def test_latency_summary_is_in_milliseconds():
    summary = latency_summary([0.010] * 98 + [0.020, 0.500])
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["max_ms"] == pytest.approx(500.0)
    assert summary["samples"] == 100
    assert 10.0 < summary["p99_ms"] < 500.0


def _event(event_id: int, **attributes: object) -> HistoryEvent:
    return HistoryEvent(event_id=event_id, **attributes)  # type: ignore[arg-type]


def test_bare_script_repeats_what_the_journey_did():
    """Activities scheduled by one workflow task run together; timers keep their duration;
    updates are counted; each run but the last ends in continue-as-new."""
    done = WorkflowTaskCompletedEventAttributes()
    first = WorkflowHistory(
        "journey-P-1",
        [
            _event(4, workflow_task_completed_event_attributes=done),
            _event(
                5,
                activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                    workflow_task_completed_event_id=4
                ),
            ),
            _event(
                6,
                activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                    workflow_task_completed_event_id=4
                ),
            ),
            _event(
                10,
                timer_started_event_attributes=TimerStartedEventAttributes(
                    start_to_fire_timeout=Duration(seconds=90)
                ),
            ),
            _event(
                14,
                activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                    workflow_task_completed_event_id=13
                ),
            ),
            _marker(15, "core_patch", "patch-data", {"id": "store-writes-in-task"}),
            _marker(16, "core_local_activity", "data", {"activity_type": "book_sessions"}),
            _event(
                20,
                workflow_execution_continued_as_new_event_attributes=(
                    WorkflowExecutionContinuedAsNewEventAttributes()
                ),
            ),
        ],
    )
    second = WorkflowHistory(
        "journey-P-1",
        [
            _event(
                5,
                workflow_execution_update_accepted_event_attributes=(
                    WorkflowExecutionUpdateAcceptedEventAttributes()
                ),
            )
        ],
    )
    script = script_of([first, second])
    assert script.runs == [
        [
            BareStep(activities=2),
            BareStep(timer_seconds=90.0),
            BareStep(activities=1),
            BareStep(local=True),
        ],
        [],
    ]
    assert script.updates == 1
    tally = counts([first, second])
    assert (tally["activities"], tally["timers"], tally["updates"]) == (3, 1, 1)
    assert tally["local_activities"] == 1
    assert (tally["continued_as_new"], tally["runs"], tally["events"]) == (1, 2, 9)


def _marker(event_id: int, name: str, detail: str, data: dict[str, str]) -> HistoryEvent:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(data).encode())
    marker = MarkerRecordedEventAttributes(
        marker_name=name, details={detail: Payloads(payloads=[payload])}
    )
    return _event(event_id, marker_recorded_event_attributes=marker)


async def test_the_simulated_case_manager_enters_each_week_once_it_has_happened():
    from datetime import UTC, datetime, timedelta

    journey = JourneyStandIn()
    p = Patient(journey, CaseManager(steady_attendance), case_manager_id="CM-07")  # type: ignore[arg-type]
    # Nine sessions entered before: the tenth is left for the grace period.
    p.manager.entered = {f"EARLIER-{n}": "attended" for n in range(1, 10)}
    monday = datetime(2027, 1, 4, 9, tzinfo=UTC)
    week_one = [
        Booked("P-1", f"INT1-W01-S{i}", "intensive", 1, monday + timedelta(days=i), "scheduled")
        for i in range(1, 4)
    ]
    cancelled = Booked("P-1", "INT1-W01-S4", "intensive", 1, monday, "cancelled")
    week_two = [Booked("P-1", "INT1-W02-S1", "intensive", 2, monday + timedelta(days=8), "")]
    booked = [*week_one, cancelled, *week_two]

    async def the_day(now: datetime) -> None:
        await enter_sheets(p, sheets_due(p, booked, now))

    await the_day(monday + timedelta(days=2))  # S3 is tomorrow
    assert sheets_due(p, booked, monday + timedelta(days=2)) == []
    assert journey.sent == []
    await the_day(monday + timedelta(days=3))
    assert sheets_due(p, booked, monday + timedelta(days=4)) == []  # entered once
    await the_day(monday + timedelta(days=4))
    (sheet,) = journey.sent
    assert sheet.case_manager_id == "CM-07"
    marks = [(m.session_id, m.status) for m in sheet.marks]
    assert marks == [(b.session_id, "attended") for b in week_one[1:]]
    assert (p.manager.sheets, len(p.manager.entered), p.manager.marked) == (1, 12, 11)


def _results(ratio: float, largest: int) -> dict[str, object]:
    one = {"median": ratio, "min": ratio, "max": ratio, "runs": 1}
    return {
        "machine": {"cores": 2, "memory_gib": 8.0, "load_average_at_start": [0.5, 0.5, 0.5]},
        "benchmarks": {
            "overhead": {
                "patients": 10,
                "carepath_per_cpu_s": {"median": 4.0, "min": 3.5, "max": 4.5, "runs": 3},
                "bare_per_cpu_s": one | {"median": 4.0 * ratio},
                "cost_ratio": one,
                "target_ratio": 1.3,
            },
            "cohort": {
                "sizes": {
                    "1000/2w": {
                        "patients": 1000,
                        "workers": 2,
                        "patient_years_per_minute": one | {"median": 150.0 / ratio},
                    },
                    "1000": {"patients": 1000, "workers": 1, "failed": "RPCError: transport error"},
                    "1000/4s": {
                        "patients": 1000,
                        "workers": 1,
                        "shards": 4,
                        "patient_years_per_minute": one | {"median": 240.0 / ratio},
                    },
                },
                "trivial": {
                    "patients": 100,
                    "patient_years_per_minute": 330.0,
                    "reference_per_minute": 660,
                },
            },
            "patient_year": {
                "summary": {
                    key: {"median": largest, "min": largest, "max": largest, "runs": 1}
                    for key in ("total_events", "total_workflow_tasks", "largest_run")
                },
                "by_phase": {},
                "target_largest_run": 10_000,
            },
        },
    }


def test_the_table_reports_each_figure_against_its_target():
    met = {row[1]: row for row in rows(_results(ratio=1.2, largest=400))}
    ratio_row = met["cost ratio CarePath / bare (worker + server CPU)"]
    assert ratio_row[2] == "1.20x" and "met" in ratio_row[4] and "not met" not in ratio_row[4]
    assert met["CarePath, patients per CPU-second (10 patients)"][3] == "3.50-4.50"
    largest = met["largest single run (events)"]
    assert largest[2] == "400" and "not met" not in largest[4]
    cohort = met["patient-years per minute, N = 1000, 2 workers"]
    assert cohort[2] == "125.0" and "not met" in cohort[4]  # the target is 200 a minute
    failed = met["patient-years per minute, N = 1000, 1 worker"]
    assert failed[2:4] == ("failed", "RPCError: transport error")
    sharded = met["patient-years per minute, N = 1000, 4 servers x 1 worker"]
    assert sharded[2] == "200.0" and "not met" not in sharded[4]
    trivial = met["reference: trivial patient-years per minute, N = 100"]
    assert trivial[2] == "330.0" and "660" in trivial[4]

    results = _results(ratio=1.2, largest=400)
    results["benchmarks"]["cohort"]["trivial"] = {  # type: ignore[index]
        "patients": 1000,
        "failed": "RPCError: transport error",
    }
    lost = {row[1]: row for row in rows(results)}
    reference = lost["reference: trivial patient-years per minute, N = 1000"]
    assert reference[2:4] == ("failed", "RPCError: transport error")
    assert lost["patient-years per minute, N = 1000, 2 workers"][2] == "125.0"

    missed = {row[1]: row for row in rows(_results(ratio=1.6, largest=12_000))}
    assert "not met" in missed["cost ratio CarePath / bare (worker + server CPU)"][4]
    assert "not met" in missed["largest single run (events)"][4]


def test_results_are_written_with_a_latest_copy(tmp_path):
    path = write({"benchmarks": {"x": 1}}, tmp_path)
    assert json.loads(path.read_text()) == {"benchmarks": {"x": 1}}
    assert (tmp_path / "latest.json").read_text() == path.read_text()


def test_cohorts_above_the_shard_size_run_as_shards_and_on_one_server_only_when_asked():
    assert plans([100, 1000], 250, one_server=False) == [(100, 1), (1000, 4)]
    assert plans([100, 1000], 250, one_server=True) == [(100, 1), (1000, 4), (1000, 1)]
    assert plans([100, 1001], None, one_server=True) == [(100, 1), (1001, 1)]
    assert plans([1001], 250, one_server=False) == [(1001, 5)]
    assert arguments(["--cohort-one-server"]).cohort_one_server
    assert not arguments([]).cohort_one_server


async def test_shards_run_at_most_at_once_at_a_time_and_are_timed_as_a_whole(tmp_path, monkeypatch):
    """Four shards two at a time: never three servers at once, every patient simulated,
    and the run's seconds the whole run's (two waves), not one shard's."""
    import asyncio
    import contextlib

    running, most = 0, 0

    @contextlib.asynccontextmanager
    async def server():
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            yield object()
        finally:
            running -= 1

    async def simulate(env, patients, workdir, workers):
        await asyncio.sleep(0.05)
        return {
            "seconds": 0.05,
            "steps": 1,
            "virtual_days": 1.0,
            "outcomes": {"completed": patients},
            "reports": 0,
            "sheets": 0,
            "troubles": {},
            "cpu_seconds": {"worker": 1.0, "server": 1.0, "driver": 1.0},
        }

    monkeypatch.setattr(cohort, "time_skipping", server)
    monkeypatch.setattr(cohort, "simulate", simulate)
    result = await cohort.sharded(10, 4, 1, tmp_path, at_once=2)
    assert most == 2 and result["at_once"] == 2
    assert result["outcomes"] == {"completed": 10}
    assert result["seconds"] >= 0.1  # two waves of 0.05 s
    assert (result["cpu_seconds"]["worker"], result["cpu_seconds"]["server"]) == (4.0, 4.0)
    # The driver's CPU is this process's over the whole run, not a shard's reading (1.0).
    assert 0 <= result["cpu_seconds"]["driver"] < 1.0
    assert cohort.lanes_for(4, None) == min(4, os.cpu_count() or 1)
    assert cohort.lanes_for(1, 8) == 1
    assert arguments(["--cohort-at-once", "3"]).cohort_at_once == 3


def test_arguments_are_checked_in_one_line(capsys):
    args = arguments(["--only", "latency,memory", "--quick", "--repeat", "2"])
    assert (args.only, args.quick, args.repeat) == (["latency", "memory"], True, 2)
    for bad in (
        ["--only", "speed"],
        ["--repeat", "0"],
        ["--cohort-sizes", "10,x"],
        ["--cohort-workers", "0"],
        ["--cohort-shard-size", "-5"],
        ["--cohort-at-once", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            arguments(bad)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert bad[1] in err


def test_the_load_benchmarks_programs_have_no_group_tracks_and_else_the_default(tmp_path):
    """Benchmarks 2 and 7 enrol thousands at one site: with the default's 22 seats there,
    all but a few would wait in intake instead of being the intensive-phase load."""
    from bench.common import program_dir
    from clinical.protocol import ProgramCatalog

    tracked = ProgramCatalog(program_dir(tmp_path / "with", 20.0))
    bare = ProgramCatalog(program_dir(tmp_path / "without", 20.0, group_tracks=False))
    for program_id in ("default-iop", "bench-iop"):
        with_tracks, without = tracked.load(program_id), bare.load(program_id)
        assert len(with_tracks.groups.tracks) == 7 and without.groups.tracks == ()
        assert without.model_copy(update={"groups": with_tracks.groups}) == with_tracks
    assert bare.load("bench-iop").clock.seconds_per_day == 20.0


async def test_the_lean_sender_keeps_its_connections_and_reopens_one_the_server_closes():
    """bench.wire against a loopback server: the body and status come back, requests share
    the connections while the server keeps them, and one closed by the server is replaced."""
    import asyncio

    from bench.wire import wire

    seen: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            seen.append(await reader.readexactly(length))
            close = len(seen) == 2  # the second answer closes its connection
            answer = b'{"n": %d}' % len(seen)
            writer.write(
                b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n%s\r\n%s"
                % (len(answer), b"connection: close\r\n" if close else b"", answer)
            )
            await writer.drain()
            if close:
                writer.close()
                return

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with wire(f"http://127.0.0.1:{port}", 1) as http:
            answers = [await http.post("/x", b'{"a": %d}' % i, {"h": "v"}) for i in range(3)]
    finally:
        server.close()
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json() for a in answers] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert seen == [b'{"a": 0}', b'{"a": 1}', b'{"a": 2}']
    assert connections == 2  # one kept for two requests, one opened after the close


def test_benchmark_7_reports_each_process_s_cpu_a_call_with_the_sender_s_share():
    latency = {"p50_ms": 10.0, "p99_ms": 20.0}
    part = {"api": 1.0, "sender": 0.25, "server": 2.0, "worker": 1.0}
    api = {
        "active": 100,
        "api_sheet": latency,
        "bare_sheet_update": latency,
        "p99_ratio": 1.0,
        "target_p99_ratio": 1.2,
        "concurrency": 10,
        "webhook_events_per_s": 200.0,
        "bare_signals_per_s": 400.0,
        "ingest_ratio": 0.5,
        "target_ingest_ratio": 0.8,
        "cpu_ms_per_call": {
            "bare_signals": {"total": 3.0, "sender": 0.4},
            "journey_signals": part | {"total": 4.0},
            "webhooks": part | {"total": 7.5},
            "bundled_webhooks": part | {"total": 4.25, "sender": 0.1},
        },
    }
    results = {"machine": _results(1.0, 1)["machine"], "benchmarks": {"api": api}}
    found = {row[1]: row for row in rows(results)}
    cpu = [figure for name, figure in found.items() if name.startswith("CPU a call")]
    assert [row[2] for row in cpu] == ["3.00 / 4.00 (0.25) / 7.50 (0.25) / 4.25 (0.10) ms"]
    assert "not met" in found["ingestion ratio webhooks / bare signals"][4]
