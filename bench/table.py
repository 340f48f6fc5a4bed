"""The one table `python -m bench` prints: each benchmark's headline figures, the median of
its runs with the spread (min-max), against the target where the issue names one."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.cohort import CPU_TARGET

Row = tuple[str, str, str, str, str]


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _median(figures: dict[str, Any], digits: int = 1, unit: str = "") -> tuple[str, str]:
    """Median, and the spread of the runs (min-max) when there were several."""
    median = _num(figures["median"], digits) + unit
    if figures.get("runs", 1) < 2:
        return median, "1 run"
    return median, f"{_num(figures['min'], digits)}-{_num(figures['max'], digits)}{unit}"


def _verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]not met[/]"


def _cpu_rows(figures: dict[str, Any], trivial: dict[str, Any] | None, shape: str) -> list[Row]:
    """A cohort's CPU a patient-year (worker, server and simulated clinic) against the
    target, and against the trivial patient-year of the same run."""
    if "cpu_per_patient_year" not in figures:  # results from before the figure existed
        return []
    cpu = figures["cpu_per_patient_year"]
    found: list[Row] = [
        (
            "3 cohort",
            f"CPU-s a patient-year, {shape}",
            *_median(cpu, 2),
            f"<= {CPU_TARGET:.2f} {_verdict(cpu['median'] <= CPU_TARGET)}",
        )
    ]
    if trivial and "cpu_per_patient_year" in trivial:
        ratio = cpu["median"] / trivial["cpu_per_patient_year"]
        found.append(
            (
                "3 cohort",
                f"... against the trivial patient-year ({trivial['cpu_per_patient_year']:.2f} s)",
                _num(ratio, 1) + "x",
                "same run",
                "",
            )
        )
    return found


def rows(results: dict[str, Any]) -> list[Row]:
    """(benchmark, figure, median, spread, target) for each headline figure measured."""
    out: list[Row] = []
    b = results["benchmarks"]
    if "overhead" in b:
        o = b["overhead"]
        n = f"{o['patients']} patients"
        out.append(
            (
                "1 overhead",
                f"CarePath, patients per CPU-second ({n})",
                *_median(o["carepath_per_cpu_s"], 2),
                "",
            )
        )
        out.append(
            (
                "1 overhead",
                "bare reference, patients per CPU-second",
                *_median(o["bare_per_cpu_s"], 2),
                "",
            )
        )
        ratio = o["cost_ratio"]
        out.append(
            (
                "1 overhead",
                "cost ratio CarePath / bare (worker + server CPU)",
                *_median(ratio, 2, "x"),
                f"<= {o['target_ratio']}x {_verdict(ratio['median'] <= o['target_ratio'])}",
            )
        )
    if "latency" in b:
        lat = b["latency"]
        active = f"{lat['active']} active"
        for side in ("carepath", "bare"):
            for p in ("p50", "p99"):
                out.append(
                    (
                        "2 latency",
                        f"{side} {p} update round trip ({active})",
                        *_median(lat[f"{side}_{p}_ms"], 1, " ms"),
                        "",
                    )
                )
        ratio = lat["p99_ratio"]
        target = lat["target_p99_ratio"]
        out.append(
            (
                "2 latency",
                "p99 ratio CarePath / bare",
                *_median(ratio, 2, "x"),
                f"<= {target}x {_verdict(ratio['median'] <= target)}",
            )
        )
    if "cohort" in b:
        for figures in b["cohort"]["sizes"].values():
            n, w, k = figures["patients"], figures["workers"], figures.get("shards", 1)
            workers = f"{w} worker{'s' if w > 1 else ''}"
            if k > 1:
                workers = f"{k} servers x {workers}"
                at_once = figures.get("at_once", k)  # older results ran every shard at once
                if at_once < k:
                    workers += f", {at_once} at a time"
            if "failed" in figures:
                reason = figures["failed"].splitlines()[0][:48]
                out.append(
                    (
                        "3 cohort",
                        f"patient-years per minute, N = {n}, {workers}",
                        "failed",
                        reason,
                        "",
                    )
                )
                continue
            rate = figures["patient_years_per_minute"]
            target = "" if n != 1000 else (f">= 200/min {_verdict(rate['median'] >= 200)}")
            out.append(
                (
                    "3 cohort",
                    f"patient-years per minute, N = {n}, {workers}",
                    *_median(rate, 1),
                    target,
                )
            )
            out.extend(_cpu_rows(figures, b["cohort"].get("trivial"), f"N = {n}, {workers}"))
    trivial = b.get("cohort", {}).get("trivial")
    if trivial and "failed" in trivial:
        out.append(
            (
                "3 cohort",
                f"reference: trivial patient-years per minute, N = {trivial['patients']}",
                "failed",
                trivial["failed"].splitlines()[0][:48],
                "",
            )
        )
    elif trivial:
        out.append(
            (
                "3 cohort",
                f"reference: trivial patient-years per minute, N = {trivial['patients']}",
                _num(trivial["patient_years_per_minute"], 1),
                "1 run",
                f"~{trivial['reference_per_minute']} on the architecture's machine",
            )
        )
    if "patient_year" in b:
        py = b["patient_year"]
        s = py["summary"]
        out.append(
            (
                "4 patient-year",
                "history events (all runs and children)",
                *_median(s["total_events"], 0),
                "",
            )
        )
        out.append(("4 patient-year", "workflow tasks", *_median(s["total_workflow_tasks"], 0), ""))
        largest = s["largest_run"]
        out.append(
            (
                "4 patient-year",
                "largest single run (events)",
                *_median(largest, 0),
                f"<= 10,000 {_verdict(largest['max'] <= py['target_largest_run'])}",
            )
        )
        for phase, figures in py["by_phase"].items():
            out.append(
                (
                    "4 patient-year",
                    f"  {phase}: events / workflow tasks",
                    f"{_num(figures['events']['median'], 0)} / "
                    f"{_num(figures['workflow_tasks']['median'], 0)}",
                    "",
                    "",
                )
            )
    if "memory" in b:
        for r in b["memory"]["readings"]:
            if r["how"] == "idle worker":
                continue
            out.append(
                (
                    "5 memory",
                    f"worker RSS, cache {r['cache']}, {r['journeys']} journeys ({r['how']})",
                    f"{_num(r['rss_mib'])} MiB",
                    f"peak {_num(r['peak_mib'])} MiB",
                    "",
                )
            )
    if "console" in b:
        pages, sheet = b["console"]["pages"], b["console"]["sheet"]
        for name in ("caseload_case_manager", "caseload_site", "chart", "inbox_case_manager"):
            p95 = pages[name]["p95_ms"]
            out.append(
                (
                    "6 console",
                    f"{name.replace('_', ' ')} p95, {pages['patients']} patients in the store",
                    f"{_num(p95)} ms",
                    f"p50 {_num(pages[name]['p50_ms'])} ms",
                    _verdict(p95 < pages["target_p95_ms"]),
                )
            )
        ratio = sheet["p99_ratio"]
        out.append(
            (
                "6 console",
                f"attendance sheet p99, console / command line's client ({sheet['journeys']} "
                f"journeys, {sheet['sheets_each_way']} each way)",
                f"{_num(ratio, 2)}x",
                f"{_num(sheet['console']['p99_ms'])} / "
                f"{_num(sheet['command_line_client']['p99_ms'])} ms",
                _verdict(ratio <= sheet["target_p99_ratio"]),
            )
        )
    if "api" in b:
        a = b["api"]
        load = f"{a['active']} active"
        for side, label in (("api_sheet", "through the API"), ("bare_sheet_update", "bare update")):
            f = a[side]
            out.append(
                (
                    "7 api",
                    f"attendance sheet {label}, p50 / p99 ({load})",
                    f"{_num(f['p50_ms'])} / {_num(f['p99_ms'])} ms",
                    "1 run",
                    "",
                )
            )
        ratio, target = a["p99_ratio"], a["target_p99_ratio"]
        out.append(
            (
                "7 api",
                "p99 ratio API / bare update",
                f"{_num(ratio, 2)}x",
                "1 run",
                f"<= {target}x {_verdict(ratio <= target)}",
            )
        )
        out.append(
            (
                "7 api",
                f"webhook events / bare signals per s ({a['concurrency']} at once)",
                f"{_num(a['webhook_events_per_s'])} / {_num(a['bare_signals_per_s'])}",
                "1 run",
                "",
            )
        )
        ratio, target = a["ingest_ratio"], a["target_ingest_ratio"]
        out.append(
            (
                "7 api",
                "ingestion ratio webhooks / bare signals",
                f"{_num(ratio, 2)}x",
                "1 run",
                f">= {target}x {_verdict(ratio >= target)}",
            )
        )
        if "bundled_events_per_s" in a:  # results from before it was measured lack it
            ratio = a["bundled_ingest_ratio"]
            out.append(
                (
                    "7 api",
                    f"webhook events in Bundles of {a['bundle']} per s; / bare signals",
                    f"{_num(a['bundled_events_per_s'])}; {_num(ratio, 2)}x",
                    "1 run",
                    f">= {target}x {_verdict(ratio >= target)}",
                )
            )
        if "console_cpu_ms_per_sheet" in a:  # results from before it was measured lack it
            out.append(
                (
                    "7 api",
                    "the API process's CPU per sheet / per webhook event"
                    + (" / per event in a Bundle" if "bundle" in a else ""),
                    f"{_num(a['console_cpu_ms_per_sheet'], 2)} / "
                    f"{_num(a['console_cpu_ms_per_event'], 2)}"
                    + (
                        f" / {_num(a['console_cpu_ms_per_bundled_event'], 2)}"
                        if "bundle" in a
                        else ""
                    )
                    + " ms",
                    "1 run",
                    "",
                )
            )
        if "journey_updates_per_s" in a:  # results from before it was measured lack it
            out.append(
                (
                    "7 api",
                    "journey updates straight to Temporal per s; webhooks / those",
                    f"{_num(a['journey_updates_per_s'])}; {_num(a['webhook_to_update_ratio'], 2)}x",
                    "1 run",
                    "",
                )
            )
        if "journey_signals_per_s" in a:  # results from before it was measured lack it
            out.append(
                (
                    "7 api",
                    "the webhook's signal straight to the journeys per s; webhooks / those",
                    f"{_num(a['journey_signals_per_s'])}; "
                    f"{_num(a['webhook_to_journey_signal_ratio'], 2)}x",
                    "1 run",
                    "",
                )
            )
        if "cpu_ms_per_call" in a:  # results from before it was measured lack it
            cpu = a["cpu_ms_per_call"]
            out.append(
                (
                    "7 api",
                    "CPU a call, every process: bare signal / journey signal / webhook "
                    "/ event in a Bundle (sender's share)",
                    " / ".join(
                        f"{_num(cpu[part]['total'], 2)}"
                        + (f" ({_num(cpu[part]['sender'], 2)})" if part != "bare_signals" else "")
                        for part in (
                            "bare_signals",
                            "journey_signals",
                            "webhooks",
                            "bundled_webhooks",
                        )
                    )
                    + " ms",
                    "1 run",
                    "",
                )
            )
    return out


def table(results: dict[str, Any]) -> Table:
    m = results["machine"]
    t = Table(
        "benchmark",
        "figure",
        "median",
        "spread (min-max)",
        "target",
        title=f"CarePath benchmarks: {m['cores']} cores, {m['memory_gib']} GiB, "
        f"load {m['load_average_at_start'][0]} at start"
        + (" (quick sizes)" if results.get("quick") else ""),
    )
    for row in rows(results):
        t.add_row(*row)
    return t
