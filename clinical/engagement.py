"""Engagement rules during treatment: when attendance calls for a case manager.

Pure: given the attendance ledger, which tasks are due now. Each task has a stable key (the
session that completed a missed streak; the window's last session), so a rule that keeps
holding does not open the same task twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinical.attendance import SessionRecord, SessionStatus
from clinical.protocol import EngagementConfig

_COUNTED = (SessionStatus.attended, SessionStatus.missed)


@dataclass(frozen=True)
class EngagementAlert:
    kind: Literal["outreach", "review"]
    key: str
    detail: str


def engagement_alerts(
    sessions: list[SessionRecord],
    now_day: float,
    config: EngagementConfig,
    last_review_day: float | None = None,
) -> list[EngagementAlert]:
    """Alerts due now. A review is not asked for again within one window of the last."""
    counted = sorted(
        (s for s in sessions if s.status in _COUNTED and s.attendee == "patient"),
        key=lambda s: s.day,
    )
    alerts: list[EngagementAlert] = []
    streak: list[SessionRecord] = []
    for s in counted:
        streak = [*streak, s] if s.status == SessionStatus.missed else []
        if len(streak) == config.consecutive_misses_for_outreach:
            alerts.append(
                EngagementAlert(
                    kind="outreach",
                    key=f"outreach-{s.session_id}",
                    detail=(
                        f"{len(streak)} sessions missed in a row "
                        f"({', '.join(x.session_id for x in streak)}): reach out"
                    ),
                )
            )
    window = [s for s in counted if now_day - config.review_window_days <= s.day <= now_day]
    recently_reviewed = (
        last_review_day is not None and now_day - last_review_day < config.review_window_days
    )
    if len(window) >= config.review_min_sessions and not recently_reviewed:
        attended = sum(1 for s in window if s.status == SessionStatus.attended)
        rate = attended / len(window)
        if rate < config.review_below_rate:
            alerts.append(
                EngagementAlert(
                    kind="review",
                    key=f"review-{window[-1].session_id}",
                    detail=(
                        f"attendance {rate:.0%} over the last {config.review_window_days} days "
                        f"({attended} of {len(window)}), below {config.review_below_rate:.0%}: "
                        "review the care plan"
                    ),
                )
            )
    return alerts
