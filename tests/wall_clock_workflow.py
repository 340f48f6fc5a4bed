"""A workflow that reads the wall clock, which the sandbox must refuse. In a module of its own:
the sandbox imports a workflow's whole module, and a test module's imports do not belong there."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


@workflow.defn
class ReadsTheWallClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()
