"""Days a site is closed that an operator announced (weather, an outage); yearly holidays
are in the sites file. One row a site and date: announcing it again changes nothing."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select

from clinical.sites import Closure
from infra.store._core import StoreCore, insert_once
from infra.store._schema import site_closures


class ClosureRecords(StoreCore):
    def record_closure(self, closure: Closure, at: datetime) -> bool:
        """An unplanned closure, once a site and date; False if it was announced before."""
        row = {
            "idempotency_key": f"{closure.site_id}/{closure.date.isoformat()}",
            "site_id": closure.site_id,
            "date": closure.date.isoformat(),
            "reason": closure.reason,
            "announced_by": closure.announced_by,
            "announced_at": at,
        }
        with self._transaction() as conn:
            return insert_once(conn, site_closures, [row]) == 1

    def closures(self, site_id: str, since: date | None = None) -> list[Closure]:
        """A site's announced closures (from `since` on), by date."""
        query = select(site_closures).where(site_closures.c.site_id == site_id)
        if since is not None:
            query = query.where(site_closures.c.date >= since.isoformat())
        return [
            Closure(
                site_id=r["site_id"],
                date=date.fromisoformat(r["date"]),
                reason=r["reason"],
                announced_by=r["announced_by"],
            )
            for r in self._read(query.order_by(site_closures.c.date))
        ]
