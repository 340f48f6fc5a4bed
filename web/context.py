"""What the console's routes share: the store, the accounts, the access log, the engine's
client, the clock and the templates."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from temporalio.client import Client

from clinical.clock import zone
from clinical.sites import SiteDirectory
from infra.settings import Settings
from infra.store import CareStore
from infra.store.access_log import AccessLog
from infra.store.accounts import IdentityStore, User
from infra.store.api_clients import ApiClients
from infra.webhooks import WebhookSender
from services.journeys import RequestFailed, worker_running
from services.surveys import SurveyDoor
from web.oidc import OidcSignIn
from web.security import RateLimit, client_address

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Console:
    settings: Settings
    store: CareStore
    identity: IdentityStore
    access: AccessLog
    sites: SiteDirectory
    connect: Callable[[], Awaitable[Client]]
    """The engine's client (connected on first use; a console starts without Temporal)."""
    clients: ApiClients
    """The API's machine identities and idempotency keys."""
    oidc: OidcSignIn | None = None
    """Sign-in through the clinic's identity provider instead of local passwords."""
    idle: timedelta = timedelta(minutes=15)
    secure_cookies: bool = False
    now: Callable[[], datetime] = field(default=_utcnow)
    api_limit: RateLimit = field(default_factory=RateLimit)
    senders: dict[str, WebhookSender] = field(default_factory=dict)
    """Who may send events, by name (infra.webhooks)."""
    surveys: SurveyDoor | None = None
    """Survey links opened and answered (None: no link key here, the page says so)."""
    survey_limit: RateLimit = field(default_factory=lambda: RateLimit(per_minute=30, burst=10))
    """The survey page's own, per client address: it needs no sign-in."""

    async def engine(self) -> Client | None:
        """The engine's client while a worker polls; None when Temporal or every worker is
        down (pages then read the store)."""
        try:
            client = await self.connect()
            return client if await worker_running(client, self.settings.task_queue) else None
        except RequestFailed:
            return None

    def zone_of(self, site_id: str) -> tzinfo:
        site = self.sites.sites.get(site_id)
        return zone("UTC" if site is None else site.zone)

    def record(
        self,
        request: Request,
        user: User,
        action: str,
        patient_id: str | None = None,
        outcome: str = "allowed",
    ) -> None:
        self.access.append(
            self.now(),
            user.username,
            user.role.value,
            action,
            patient_id,
            outcome,
            client_address(request),
        )


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    # The browser's own idle timer signs out as the server would (web/static/console.js).
    console = console_of(request)
    context.setdefault("idle_seconds", int(console.idle.total_seconds()))
    context.setdefault("oidc", console.oidc is not None)
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
