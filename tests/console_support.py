"""What the console's tests share: a console over a test clinic's store and client, its
staff (cheap password hashing: the cost is argon2's to test, not ours), and an HTTP client
that signs in as one of them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI
from temporalio.client import Client

from infra.settings import Settings, load_settings
from infra.store import CareStore
from services.journeys import RequestFailed, Why
from tests.support import OPEN_SITES
from web.app import create_app
from web.context import Console
from web.security import SESSION_COOKIE, csrf_token
from web.serve import console_for

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"
STAFF = {
    "cm1": ("case_manager", "north", "CM-01"),
    "cm2": ("case_manager", "north", "CM-02"),
    "sup": ("supervisor", "north", "CM-SUP1"),
    "sup-south": ("supervisor", "south", None),
    "ops": ("operator", None, None),
    "audit": ("auditor", None, None),
    "fac": ("facilitator", "north", "CM-F01"),  # leads north-morning and north-php
    "fac-evening": ("facilitator", "north", "CM-F02"),  # leads north-evening only
}


class Clock:
    """The console's clock, moved by the test (idle sign-out without waiting)."""

    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by


@dataclass
class ConsoleUnderTest:
    app: FastAPI
    console: Console
    clock: Clock

    @asynccontextmanager
    async def signed_in(self, username: str | None) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client to the app in-process (anonymous with `username` None)."""
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
            if username is not None:
                answer = await http.post(
                    "/sign-in", data={"username": username, "password": PASSWORD}
                )
                assert answer.status_code == 303, answer.text
            yield http


def csrf_of(http: httpx.AsyncClient) -> str:
    return csrf_token(http.cookies[SESSION_COOKIE])


def make_console(
    settings: Settings,
    store: CareStore,
    client: Client | None = None,
    clock: Clock | None = None,
) -> ConsoleUnderTest:
    async def connect() -> Client:
        if client is None:
            raise RequestFailed(
                "cannot reach the Temporal server (none in this test)", Why.unreachable
            )
        return client

    console = console_for(settings, store, connect_to=connect, hasher=FAST_HASHER)
    clock = clock or Clock()
    console.now = clock
    for username, (role, site, cm) in STAFF.items():
        console.identity.add_user(username, role, PASSWORD, clock(), site, cm)
    return ConsoleUnderTest(app=create_app(console), console=console, clock=clock)


@asynccontextmanager
async def store_only_console(tmp_path: Path) -> AsyncIterator[ConsoleUnderTest]:
    """A console over an empty store and no engine."""
    settings = dataclasses.replace(
        load_settings(), database_url=f"sqlite:///{tmp_path / 'care.db'}", sites_path=OPEN_SITES
    )
    store = CareStore(settings.database_url)
    store.migrate()
    try:
        yield make_console(settings, store)
    finally:
        store.dispose()


def concrete(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def api_routes(app: FastAPI) -> list[tuple[str, str, Callable[..., object]]]:
    """(method, path template, endpoint) of every route but the static files."""
    found = []
    for route in app.routes:
        methods = getattr(route, "methods", None)
        endpoint = getattr(route, "endpoint", None)
        if methods is None or endpoint is None:
            continue
        for method in sorted(methods - {"HEAD"}):
            found.append((method, getattr(route, "path", ""), endpoint))
    return found
