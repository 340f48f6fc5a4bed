"""The demo's telephony, as production's: the worker places each check-in call through the
simulated provider service's HTTP API, and the provider calls back with signed webhooks to
/api/v1/webhooks/telephony of the console application, which the demo serves on a port of
its own while it runs. The sender and its secret are the clinic's webhook senders file's
(`starter.py webhooks add telephony --kind telephony-calls --site '*'` makes the same)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn
from temporalio.client import Client

from infra.embedded_server import free_port
from infra.files import write_private
from infra.settings import Settings
from infra.store import CareStore
from infra.webhooks import ANY_SITE, EventKind, add_sender, load_senders
from simulation.telephony_provider import running_provider
from web.api_security import API
from web.app import create_app
from web.serve import console_for

SENDER = "telephony"


@dataclass(frozen=True)
class DemoTelephony:
    url: str  # the provider's API, for CAREPATH_TELEPHONY_URL
    console_url: str  # the console application serving the callbacks (and its pages)

    def tally(self) -> dict[str, int]:
        """Calls the provider took and callbacks it delivered."""
        with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as answer:
            return dict(json.loads(answer.read()))


@asynccontextmanager
async def demo_telephony(
    settings: Settings, store: CareStore, client: Client, seed: int
) -> AsyncIterator[DemoTelephony]:
    sender = load_senders(settings.webhook_senders_file).get(SENDER)
    if sender is None:
        sender = add_sender(
            settings.webhook_senders_file, SENDER, EventKind.telephony_calls.value, ANY_SITE
        )
    secret = settings.data_dir / "telephony-provider.secret"
    write_private(secret, sender.secret)

    async def connected() -> Client:
        return client

    app = create_app(console_for(settings, store, connect_to=connected))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()  # the reason it could not serve
            await asyncio.sleep(0.05)
        callback = f"http://127.0.0.1:{port}{API}/webhooks/{SENDER}"
        log = settings.data_dir / "telephony-provider.log"
        # The demo's patients report no use at check-ins (as its in-process days did).
        options = ("--seed", str(seed), "--use-risk", "0")
        async with running_provider(free_port(), callback, secret, log, *options) as url:
            yield DemoTelephony(url, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving
