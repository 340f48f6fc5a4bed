"""Running the console: a `Console` built from the settings, served by uvicorn. Several
console processes can serve side by side (sessions and the access log are in the database)."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from datetime import timedelta

import uvicorn
from argon2 import PasswordHasher
from temporalio.client import Client

from clinical.protocol import ProgramCatalog
from clinical.sites import SiteDirectory, SiteError
from infra.settings import Settings, SettingsError
from infra.store import CareStore
from infra.store.access_log import AccessLog
from infra.store.accounts import IdentityStore
from infra.store.api_clients import ApiClients
from infra.survey_links import link_signer
from infra.temporal import connect
from infra.webhooks import load_senders
from services.journeys import RequestFailed, Why
from services.surveys import SurveyDoor
from web.app import create_app
from web.context import Console
from web.oidc import OidcSignIn


def console_for(
    settings: Settings,
    store: CareStore,
    connect_to: Callable[[], Awaitable[Client]] | None = None,
    hasher: PasswordHasher | None = None,
) -> Console:
    """The console over an open store (of the current schema: a worker migrates it).
    `connect_to` and `hasher` are for tests: another Temporal client, cheaper hashing."""
    identity, access = IdentityStore(store.engine, hasher), AccessLog(store.engine)
    clients = ApiClients(store.engine)
    try:
        sites = SiteDirectory.load(settings.sites_file)
    except SiteError:
        sites = SiteDirectory({})
    client: list[Client] = []

    async def connected() -> Client:
        if not client:
            try:
                client.append(await connect(settings))
            except RuntimeError as exc:
                reason = str(exc).splitlines()[0]
                raise RequestFailed(
                    f"cannot reach the Temporal server ({reason})", Why.unreachable
                ) from None
        return client[0]

    return Console(
        settings=settings,
        store=store,
        identity=identity,
        access=access,
        sites=sites,
        connect=connect_to or connected,
        clients=clients,
        oidc=OidcSignIn(
            settings.oidc_issuer,
            settings.oidc_client_id,
            settings.oidc_client_secret,
            f"{settings.console_origin}/sign-in/oidc/callback",
        )
        if settings.oidc_issuer
        else None,
        senders=load_senders(settings.webhook_senders_file),
        idle=timedelta(minutes=settings.console_idle_minutes),
        secure_cookies=settings.console_secure_cookies,
        surveys=_survey_door(settings, store),
    )


def _survey_door(settings: Settings, store: CareStore) -> SurveyDoor | None:
    """Survey links are checked with the workers' key ring; a console without it serves
    no survey page (it says so) rather than refusing to start."""
    try:
        links = link_signer(settings)
    except SettingsError:
        return None
    return SurveyDoor(store, links, ProgramCatalog.of(settings.programs_dir))


def serve(settings: Settings, store: CareStore) -> None:
    app = create_app(console_for(settings, store))
    # What the console built to serve (routes, models, templates, the store's engine) lives
    # as long as it does: kept out of the collector's full passes, which otherwise scan its
    # 160,000 objects (about 90 ms here) in the middle of some request.
    gc.collect()
    gc.freeze()
    # Access lines would name concrete paths (patient IDs are fine) but add nothing the
    # access log does not hold; uvicorn's own errors still reach the log.
    uvicorn.run(
        app,
        host=settings.console_host,
        port=settings.console_port,
        access_log=False,
        server_header=False,
        log_level="warning",
    )
