"""The outcomes report as a self-contained HTML page a clinical lead opens in a browser, and
its charts as PNG files. Charts are drawn by matplotlib (Agg, no display) and embedded in
the page as base64 PNGs, so the one file is the whole report."""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clinical.instruments import (
    BAM_PROTECTIVE_FLAG_AT_OR_BELOW,
    BAM_RISK_FLAG_AT,
    BAM_USE_FLAG_AT,
)
from clinical.phases import TERMINAL_PHASES, Phase
from operators.outcomes import OutcomesReport, percent, phase_label, summary_rows
from operators.support import (
    OUTCOME_HEADER,
    SURVEY_HEADER,
    outcome_rows,
    outcome_title,
    survey_rows,
    survey_title,
)

ACTIVE_COLOUR = "#2b6cb0"
ENDED_COLOUR = "#a0aec0"
OUTCOME_COLOURS = {
    "completed": "#2f855a",
    "declined": "#c05621",
    "cancelled": "#718096",
    "expired": "#c53030",
}
DPI = 110
POINTS_UP_TO = 150
"""Beyond this many patients a milestone shows as its box alone."""


# --- charts ------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 4.2) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=12, color="#4a5568")
    ax.set_axis_off()


def phases_chart(report: OutcomesReport) -> Figure:
    fig = _figure(8, 4.6)
    ax = fig.subplots()
    phases = list(report.by_phase)
    counts = [report.by_phase[p] for p in phases]
    colours = [ENDED_COLOUR if Phase(p) in TERMINAL_PHASES else ACTIVE_COLOUR for p in phases]
    bars = ax.barh([phase_label(p) for p in phases], counts, color=colours)
    ax.bar_label(bars, padding=3)
    ax.invert_yaxis()  # the journey's order, top to bottom
    ax.set_xlabel("patients")
    ax.set_xlim(0, max(max(counts), 1) * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Patients by phase now (n={report.enrolled}; grey: journey ended)")
    return fig


def attendance_chart(report: OutcomesReport) -> Figure:
    fig = _figure()
    ax = fig.subplots()
    weeks = report.attendance_by_week
    if not weeks:
        _no_data(ax, "no session accounted for yet")
        return fig
    xs = [w.week for w in weeks]
    rates = [100 * (w.rate or 0.0) for w in weeks]
    bars = ax.bar(xs, rates, color=ACTIVE_COLOUR, width=0.8)
    if len(weeks) <= 30:  # beyond that the counts would collide
        ax.bar_label(
            bars,
            labels=[str(w.attended + w.missed) for w in weeks],
            label_type="center",
            color="white",
            fontsize=8,
        )
    if report.attendance.rate is not None:
        ax.axhline(
            100 * report.attendance.rate,
            color="#c05621",
            linestyle="--",
            label=f"whole cohort {report.attendance.rate:.0%}",
        )
        # Above the 100% line: the legend never covers a bar.
        ax.legend(loc="upper right")
    ax.set_ylim(0, 120)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(xs[0] - 0.6, xs[-1] + 0.6)
    ax.set_xlabel("treatment week (week 1: the patient's first booked week)")
    ax.set_ylabel("attended / (attended + missed), %")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Attendance by treatment week (numbers in bars: sessions counted)")
    return fig


def bam_chart(report: OutcomesReport) -> Figure:
    fig = _figure(10, 4.4)
    months = report.bam_by_month
    if not months:
        _no_data(fig.subplots(), "no BAM answered at a check-in yet")
        return fig
    axes = fig.subplots(1, 3, sharex=True)
    xs = [m.month for m in months]
    scales = (
        (
            "Use (0-12)",
            12,
            [m.use for m in months],
            f"flag at \u2265 {BAM_USE_FLAG_AT}",
            BAM_USE_FLAG_AT,
        ),
        (
            "Risk (0-24)",
            24,
            [m.risk for m in months],
            f"flag at \u2265 {BAM_RISK_FLAG_AT}",
            BAM_RISK_FLAG_AT,
        ),
        (
            "Protective (0-24)",
            24,
            [m.protective for m in months],
            f"flag at \u2264 {BAM_PROTECTIVE_FLAG_AT_OR_BELOW}",
            BAM_PROTECTIVE_FLAG_AT_OR_BELOW,
        ),
    )
    for ax, (name, top, trend, flag_text, flag) in zip(axes, scales, strict=True):
        ax.plot(xs, [t.median for t in trend], marker="o", color=ACTIVE_COLOUR, label="median")
        ax.plot(xs, [t.mean for t in trend], linestyle="--", color="#805ad5", label="mean")
        ax.axhline(flag, color="#c53030", linestyle=":")
        ax.annotate(
            flag_text,
            (1.0, flag),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            color="#c53030",
            fontsize=8,
        )
        ax.set_ylim(-0.5, top + 0.5)
        ax.set_title(name)
        ax.set_xlabel("aftercare month")
        ax.set_xticks(xs)
    axes[0].set_ylabel("score")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    counts = ", ".join(f"{m.month}: {m.n}" for m in months)
    fig.suptitle(f"BAM scores by aftercare check-in month (check-ins per month {counts})")
    return fig


def referral_chart(report: OutcomesReport) -> Figure:
    fig = _figure()
    ax = fig.subplots()
    by_outcome = report.referrals.days_to_close_by_outcome
    if not by_outcome:
        _no_data(ax, "no referral closed yet")
        return fig
    longest = max(d for days in by_outcome.values() for d in days)
    step = max(1, int(longest // 15) + 1)
    edges = list(range(0, int(longest) + 2 * step, step))
    names = list(by_outcome)
    ax.hist(
        [by_outcome[n] for n in names],
        bins=edges,
        stacked=True,
        label=[f"{n} ({len(by_outcome[n])})" for n in names],
        color=[OUTCOME_COLOURS.get(n, ACTIVE_COLOUR) for n in names],
        edgecolor="white",
    )
    ax.set_xlabel(f"program days from request to close (bins of {step} d)")
    ax.set_ylabel("referrals")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(title="outcome", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    median = report.referrals.days_to_close.median
    ax.set_title(f"Referral loop closure time (median {median:.1f} days)")
    return fig


def milestones_chart(report: OutcomesReport) -> Figure:
    fig = _figure(8, 3.8)
    ax = fig.subplots()
    rows = [
        ("step-down", report.days_to_step_down.values),
        ("completion", report.days_to_completion.values),
        ("first relapse", report.days_to_relapse.values),
    ]
    rows = [(name, values) for name, values in rows if values]
    if not rows:
        _no_data(ax, "no patient has stepped down, completed or relapsed yet")
        return fig
    positions = list(range(1, len(rows) + 1))
    ax.boxplot(
        [values for _, values in rows],
        positions=positions,
        orientation="horizontal",
        widths=0.5,
        showfliers=False,
        medianprops={"color": "#c05621", "linewidth": 2},
        zorder=2,
    )
    for y, (_, values) in zip(positions, rows, strict=True):
        if len(values) > POINTS_UP_TO:
            continue  # a crowd of points would hide the box
        # Every patient as a point behind the box, spread evenly across its height (golden
        # ratio steps) so patients on the same day do not hide each other.
        offsets = [y + 0.4 * ((i * 0.618034) % 1 - 0.5) for i in range(len(values))]
        ax.scatter(values, offsets, s=10, color=ACTIVE_COLOUR, alpha=0.5, zorder=1)
    ax.set_yticks(
        positions,
        [
            f"{name}\nn={len(values)}, median {statistics.median(values):.0f} d"
            for name, values in rows
        ],
    )
    ax.invert_yaxis()
    ax.set_xlabel("program days from enrolment")
    ax.set_title("Time to step-down, completion and first relapse (orange line: median)")
    return fig


CHARTS: dict[str, tuple[str, Callable[[OutcomesReport], Figure]]] = {
    "phases": ("Patients by phase", phases_chart),
    "milestones": ("Time to step-down, completion and first relapse", milestones_chart),
    "attendance": ("Attendance by treatment week", attendance_chart),
    "bam": ("BAM score trends", bam_chart),
    "referrals": ("Referral loop closure time", referral_chart),
}


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def chart_pngs(report: OutcomesReport) -> dict[str, bytes]:
    return {name: png(draw(report)) for name, (_, draw) in CHARTS.items()}


def write_pngs(report: OutcomesReport, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in chart_pngs(report).items():
        path = directory / f"{name}.png"
        path.write_bytes(data)
        written.append(path)
    return written


# --- the page ----------------------------------------------------------------------------


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, data: bytes) -> str:
    alt = html.escape(CHARTS[name][0])
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="chart" alt="{alt}" src="data:image/png;base64,{encoded}">'


def render_html(report: OutcomesReport, charts: dict[str, bytes] | None = None) -> str:
    charts = charts if charts is not None else chart_pngs(report)
    summary = {metric: value for metric, value, _ in summary_rows(report)}
    sections = [
        (
            "summary",
            "Summary",
            _table(("metric", "value", "definition"), summary_rows(report)),
        ),
        (
            "phases",
            "Patients by phase",
            _img("phases", charts["phases"])
            + _table(
                ("phase", "patients"),
                [(phase_label(p), str(n)) for p, n in report.by_phase.items()],
            ),
        ),
        (
            "milestones",
            "Time to step-down and completion",
            f"<p>Median program days from enrolment: step-down "
            f"{summary['median days to step-down']}, completion "
            f"{summary['median days to completion']}. Completion rate "
            f"{summary['completion rate']} of journeys ended.</p>"
            + _img("milestones", charts["milestones"]),
        ),
        (
            "attendance",
            "Attendance",
            f"<p>Attendance rate {summary['attendance rate']}: attended / (attended + missed); "
            f"sessions excused ({report.sessions_excused}) or not yet accounted for "
            f"({report.sessions_pending}) do not count.</p>"
            + _img("attendance", charts["attendance"])
            + _table(
                ("treatment week", "attended", "missed", "rate"),
                [
                    (str(w.week), str(w.attended), str(w.missed), percent(w.rate))
                    for w in report.attendance_by_week
                ],
            ),
        ),
        (
            "check-ins",
            "Aftercare check-ins",
            f"<p>Reach rate {summary['check-in reach rate']}: reached / check-ins concluded "
            "(every call attempt made, or the patient declined).</p>"
            + _table(
                ("outcome", "check-ins"),
                [(k, str(v)) for k, v in report.check_ins_by_outcome.items()],
            ),
        ),
        (
            "bam",
            "BAM score trends",
            "<p>Brief Addiction Monitor at reached check-ins: Use (items 4-6, 0-12, flag at 1 "
            "or more), Risk (0-24, flag at 12 or more), Protective (0-24, flag at 12 or "
            "less). Month: aftercare day of the check-in / 30, rounded.</p>"
            + _img("bam", charts["bam"])
            + _table(
                ("aftercare month", "check-ins", "Use mean / median", "Risk", "Protective"),
                [
                    (
                        str(m.month),
                        str(m.n),
                        *(f"{t.mean:.1f} / {t.median:g}" for t in (m.use, m.risk, m.protective)),
                    )
                    for m in report.bam_by_month
                ],
            ),
        ),
        (
            "relapse",
            "Relapse",
            f"<p>Relapse rate {summary['relapse rate']}: patients re-linked to care at least "
            f"once (reported by a case manager or found at a check-in) / enrolled; "
            f"{report.relapses} relapse(s) in all. Median program days from enrolment to the "
            f"first relapse: {summary['median days to first relapse']}.</p>",
        ),
        (
            "referrals",
            "Referral loops",
            f"<p>Loop closure {summary['referral loop closure']} of referrals requested; "
            f"completed {summary['referrals completed']} of those closed; median "
            f"{summary['median days to close a referral']} from request to close.</p>"
            + _img("referrals", charts["referrals"])
            + _table(
                ("outcome", "referrals"),
                [(k, str(v)) for k, v in report.referrals.by_outcome.items()],
            ),
        ),
        (
            "lost",
            "Lost to contact",
            f"<p>{summary['lost to contact']} of journeys ended were lost to contact "
            "(aftercare check-ins unreachable in a row, or discharged as lost).</p>",
        ),
        (
            "tasks",
            "Case-manager tasks",
            _table(
                ("kind", "opened", "still open"),
                [(k, str(t.opened), str(t.still_open)) for k, t in report.tasks.items()],
            ),
        ),
    ]
    if report.groups:
        sections.append(
            (
                "groups",
                "Group tracks",
                "<p>Utilisation: the mean roster of the sessions held (anyone's attendance on "
                "record) / the track's capacity; attendance: attended / (attended + missed) "
                "at the track's sessions, and at every session of each facilitator's "
                "tracks.</p>"
                + _table(
                    (
                        "track",
                        "program",
                        "sessions held",
                        "mean roster",
                        "utilisation",
                        "attendance",
                    ),
                    [
                        (
                            f"{g.track_id} ({g.site_id})",
                            g.program_id,
                            str(g.sessions),
                            "-" if g.mean_roster is None else f"{g.mean_roster:g} of {g.capacity}",
                            percent(g.utilisation),
                            g.attendance.show(),
                        )
                        for g in report.groups
                    ],
                )
                + _table(
                    ("facilitator", "sessions led", "attendance"),
                    [(f.name, str(f.sessions), f.attendance.show()) for f in report.facilitators],
                ),
            )
        )
    if report.support is not None:
        sections.append(
            (
                "support",
                "Measuring support",
                f"<h3>{html.escape(survey_title(report.support))}</h3>"
                + _table(SURVEY_HEADER, survey_rows(report.support))
                + f"<h3>{html.escape(outcome_title(report.support))}</h3>"
                + _table(OUTCOME_HEADER, outcome_rows(report.support)),
            )
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
        for sid, title, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>CarePath outcomes: {html.escape(report.cohort)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; color: #1a202c; }}
h1 {{ margin-bottom: 0.2rem; }} .meta {{ color: #4a5568; margin-top: 0; }}
section {{ border-top: 1px solid #e2e8f0; padding-top: 0.5rem; margin-top: 1.5rem; }}
table {{ border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }}
th, td {{ border: 1px solid #e2e8f0; padding: 0.25rem 0.6rem; text-align: left; }}
th {{ background: #f7fafc; }}
#summary td:nth-child(-n+2) {{ white-space: nowrap; }}
img.chart {{ max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }}
</style></head><body>
<h1>CarePath outcomes report</h1>
<p class="meta">Cohort: {html.escape(report.cohort)} &middot; {report.enrolled} patient(s)
enrolled &middot; as of {report.as_of:%Y-%m-%d %H:%M} UTC &middot; durations in program days;
medians over those who reached the event. No patient is named.</p>
{f"<ul class='notes'>{notes}</ul>" if notes else ""}
{body}
</body></html>
"""


def write_html(report: OutcomesReport, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")
