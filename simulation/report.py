"""A what-if's comparison as a program director reads it: the table (each figure's median
over the seeds with its range), text charts for the command line, a self-contained HTML
report with the same charts as SVG, and the comparison as JSON (the console's what-if runs
in a process of its own and hands its result back that way)."""

from __future__ import annotations

import html
import json
import statistics
from typing import Any

from simulation.tracks import TRACK_FIGURES, track_key, tracks_in
from simulation.whatif import METRICS, Comparison, Metric, Plan

CHARTED = (
    "treatment_completed",
    "journey_completed",
    "attendance",
    "days_to_first_session",
    "waited_for_seat",
    "weeks_to_step_down",
    "relinked",
    "check_in_reach",
    "referral_closure",
    "peak_seats",
    "facilitator_hours",
    "tasks_per_cm_week",
)
"""The figures charted: the outcomes and the staffing a director plans with."""
BAR = 30
"""Characters in a text chart's bar."""


def table(comparison: Comparison) -> str:
    """The programs side by side; with several seeds, the median and the range."""
    programs = comparison.plan.programs
    width = max(len(m.label) for m in METRICS) + 2
    columns = [max(len(p), 16) for p in programs]
    lines = [
        "".ljust(width) + "  ".join(p.rjust(c) for p, c in zip(programs, columns, strict=True))
    ]
    for metric in METRICS:
        cells = [
            _cell(_values(comparison, p, metric), metric.unit).rjust(c)
            for p, c in zip(programs, columns, strict=True)
        ]
        lines.append(metric.label.ljust(width) + "  ".join(cells))
    lines += _track_rows(comparison, width, columns)
    for program, short in comparison.seats_short.items():
        lines.append(f"{program} has too few intensive seats for these admissions:")
        lines += [f"  {line}" for line in short]
    years = patient_years(comparison)
    if not years:
        return "\n".join(lines)
    worker, server, clinic = (comparison.cpu[k] / years for k in ("worker", "server", "driver"))
    lines.append(
        f"{years:.0f} simulated patient-years; CPU a patient-year: worker {worker:.2f} s, "
        f"time-skipping server {server:.2f} s, simulated clinic {clinic:.2f} s"
    )
    if "failed_workflow_tasks" in comparison.cpu:
        lines.append(
            f"failed workflow tasks: {comparison.cpu['failed_workflow_tasks']:.0f}; "
            f"failed activity attempts (retried): "
            f"{comparison.cpu.get('failed_activity_attempts', 0):.0f}"
        )
        lines += [f"  {n} {kind}" for kind, n in comparison.failures.items()]
    return "\n".join(lines)


def _track_rows(comparison: Comparison, width: int, columns: list[int]) -> list[str]:
    """Each group track's seats, waitlist and facilitators, under the programs that ran it
    ("-" where a program has no such track)."""
    programs = comparison.plan.programs
    keys = [k for p in programs for r in comparison.runs[p] for k in r]
    rows: list[str] = []
    for track_id in tracks_in(keys):
        rows.append(f"group track {track_id}")
        for figure, label in TRACK_FIGURES:
            key = track_key(track_id, figure)
            cells = [
                _cell([v for r in comparison.runs[p] if (v := r.get(key)) is not None], "").rjust(c)
                for p, c in zip(programs, columns, strict=True)
            ]
            rows.append(f"  {label}"[:width].ljust(width) + "  ".join(cells))
    return rows


def patient_years(comparison: Comparison) -> float:
    return sum(
        r["patient_years"] or 0.0 for p in comparison.plan.programs for r in comparison.runs[p]
    )


def _values(comparison: Comparison, program: str, metric: Metric) -> list[float]:
    # .get: a comparison saved before a figure existed has none of it.
    return [v for r in comparison.runs[program] if (v := r.get(metric.key)) is not None]


def _shown(v: float, unit: str) -> str:
    return f"{v * 100:.0f}%" if unit == "%" else f"{v:.1f}"


def _cell(known: list[float], unit: str) -> str:
    if not known:
        return "-"
    middle = _shown(statistics.median(known), unit)
    if len(known) == 1:
        return middle
    return f"{middle} ({_shown(min(known), unit)}-{_shown(max(known), unit)})"


def _scale(comparison: Comparison, metric: Metric) -> float:
    """A chart's full width: 100% for shares, else the largest value of any program."""
    if metric.unit == "%":
        return 1.0
    found = [v for p in comparison.plan.programs for v in _values(comparison, p, metric)]
    return max(found, default=0.0) or 1.0


def _bar(known: list[float], scale: float) -> str:
    """█ up to the lowest seed, ▓ to the median, ░ to the highest: the interval is the
    shaded part."""
    low, middle, high = min(known), statistics.median(known), max(known)
    cells = []
    for i in range(BAR):
        at = (i + 0.5) / BAR * scale
        cells.append("█" if at <= low else "▓" if at <= middle else "░" if at <= high else " ")
    return "".join(cells)


def charts(comparison: Comparison) -> str:
    """A text chart per figure: a bar per program, its median and range over the seeds."""
    programs = comparison.plan.programs
    name = max(len(p) for p in programs)
    seeds = len(comparison.plan.seeds)
    lines = [
        "█ lowest seed  ▓ median  ░ highest seed"
        if seeds > 1
        else "one seed: run with --seeds 3 or more for intervals"
    ]
    for metric in (m for m in METRICS if m.key in CHARTED):
        lines.append("")
        lines.append(metric.label)
        scale = _scale(comparison, metric)
        for program in programs:
            known = _values(comparison, program, metric)
            shown = _bar(known, scale) if known else " " * BAR
            lines.append(f"  {program.ljust(name)} |{shown}| {_cell(known, metric.unit)}")
    return "\n".join(lines)


# --- the HTML report --------------------------------------------------------------------------

_COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096")


def _svg(comparison: Comparison, metric: Metric) -> str:
    """One figure as a horizontal bar chart: the median as a bar, the range over the
    seeds as a line with end ticks."""
    programs = comparison.plan.programs
    scale = _scale(comparison, metric)
    label_w, plot_w, row_h = 170, 360, 26
    height = row_h * len(programs) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 110}" '
        f'height="{height}" role="img" aria-label="{html.escape(metric.label)}">'
    ]
    for i, program in enumerate(programs):
        y = 4 + i * row_h
        known = _values(comparison, program, metric)
        colour = _COLOURS[i % len(_COLOURS)]
        parts.append(f'<text x="0" y="{y + 16}" font-size="13">{html.escape(program[:24])}</text>')
        if not known:
            parts.append(f'<text x="{label_w}" y="{y + 16}" font-size="13">-</text>')
            continue

        def x(v: float) -> float:
            return label_w + plot_w * min(v / scale, 1.0)

        middle = statistics.median(known)
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{x(middle) - label_w:.1f}" height="14" '
            f'fill="{colour}" opacity="0.75"/>'
        )
        if len(known) > 1:
            lo, hi, mid = x(min(known)), x(max(known)), y + 11
            parts.append(
                f'<path d="M{lo:.1f} {mid}H{hi:.1f}M{lo:.1f} {mid - 6}V{mid + 6}'
                f'M{hi:.1f} {mid - 6}V{mid + 6}" stroke="#1a202c" stroke-width="1.5"/>'
            )
        parts.append(
            f'<text x="{label_w + plot_w + 8}" y="{y + 16}" font-size="13">'
            f"{html.escape(_cell(known, metric.unit))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def figures_svg(comparison: Comparison) -> list[tuple[str, str]]:
    """Each charted figure's label and its chart as SVG (every text in it escaped)."""
    return [(m.label, _svg(comparison, m)) for m in METRICS if m.key in CHARTED]


def html_report(comparison: Comparison) -> str:
    """A self-contained page: what was simulated, and each charted figure."""
    plan = comparison.plan
    seeds = (
        f"seed {plan.seeds[0]}"
        if len(plan.seeds) == 1
        else f"seeds {plan.seeds[0]}-{plan.seeds[-1]}: bars are medians, lines the range"
    )
    sections = [f"<h2>{html.escape(label)}</h2>\n{svg}" for label, svg in figures_svg(comparison)]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>What if: " + html.escape(" vs ".join(plan.programs)) + "</title>"
        "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        "h2{font-size:15px;margin:1.4em 0 .3em}pre{font-size:12px}</style></head><body>\n"
        f"<h1>What if: {html.escape(' vs '.join(plan.programs))}</h1>\n"
        f"<p>{plan.patients} synthetic patients a seed, arriving {plan.per_week:g} a week; "
        f"{html.escape(seeds)}.</p>\n" + "\n".join(sections) + "\n<h2>All figures</h2>\n<pre>"
        f"{html.escape(table(comparison))}</pre>\n</body></html>\n"
    )


# --- JSON ---------------------------------------------------------------------------------------


def to_json(comparison: Comparison) -> str:
    plan = comparison.plan
    return json.dumps(
        {
            "plan": {
                "programs": list(plan.programs),
                "patients": plan.patients,
                "per_week": plan.per_week,
                "seeds": list(plan.seeds),
            },
            "runs": comparison.runs,
            "cpu": comparison.cpu,
            "failures": comparison.failures,
            "seats_short": comparison.seats_short,
        }
    )


def from_json(text: str) -> Comparison:
    found: dict[str, Any] = json.loads(text)
    plan = found["plan"]
    return Comparison(
        Plan(
            programs=tuple(plan["programs"]),
            patients=int(plan["patients"]),
            per_week=float(plan["per_week"]),
            seeds=tuple(plan["seeds"]),
        ),
        {p: list(runs) for p, runs in found["runs"].items()},
        {k: float(v) for k, v in found["cpu"].items()},
        {k: int(v) for k, v in found.get("failures", {}).items()},
        {p: [str(line) for line in lines] for p, lines in found.get("seats_short", {}).items()},
    )
