"""/api/v1/subscribers: an API client manages the subscriptions of its own site (as
`starter.py subscribers` does for an operator): list, add (the secret in the answer, once),
disable, replay a period, and the dead letters. A subscription of another site is a 404.

Adding honours an `Idempotency-Key` like every POST, but the answer kept for a retry holds
no secret: the secret is shown once, to the request that made it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from clinical.consents import PURPOSES
from infra.store import Subscriber, SubscriberRefused
from infra.store.api_clients import KEY, Answered, Mismatch
from web.api import _fingerprint, answered
from web.api_security import API, Caller, Problem, actor_of, caller, grant
from web.context import console_of


class SubscriptionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=32)
    url: str = Field(max_length=400)
    purpose: str = Field(default="treatment", description=f"one of {', '.join(PURPOSES)}")
    kinds: list[str] | None = Field(default=None, max_length=8, description="default: all")


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    since: date = Field(alias="from", description="from this day (UTC)")
    until: date = Field(alias="to", description="up to and including this day (UTC)")


def _of_site(request: Request, found: Caller, name: str) -> Subscriber:
    sub = console_of(request).store.subscriber(name[:32])
    if sub is None or sub.site_id != found.client.site_id:
        raise Problem(404, f"no subscriber {name[:32]} at site {found.client.site_id}")
    return sub


def install(app: FastAPI) -> None:
    seen = Depends(caller)

    @app.get(f"{API}/subscribers", tags=["subscribers"])
    @grant("subscribers:read")
    async def api_subscribers(request: Request, found: Caller = seen) -> Response:
        """The subscriptions of the client's site (never their secrets)."""
        listed = console_of(request).store.subscribers(found.client.site_id)
        return answered(request, 200, json.dumps([s.as_json() for s in listed]))

    @app.post(f"{API}/subscribers", status_code=201, tags=["subscribers"])
    @grant("subscribers:write")
    async def api_subscribe(
        request: Request, body: SubscriptionBody, found: Caller = seen
    ) -> Response:
        """Subscribe a system at the client's site to events about its patients: the answer
        holds the secret each delivery is signed with, this once."""
        console = console_of(request)
        key = request.headers.get("idempotency-key")
        owner = actor_of(found.client)
        if key is not None:
            if not KEY.fullmatch(key):
                raise Problem(400, "Idempotency-Key: 1-64 of A-Z, a-z, 0-9, '.', '_', ':', '-'")
            fingerprint = _fingerprint(request, await request.body())
            claim = console.clients.claim(owner, key, fingerprint, console.now())
            if isinstance(claim, Mismatch):
                raise Problem(422, f"{key} was used for another request")
            if isinstance(claim, Answered):
                return Response(
                    claim.body,
                    status_code=claim.status_code,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
        try:
            sub = console.store.add_subscriber(
                body.name,
                body.url,
                found.client.site_id,
                purpose=body.purpose,
                kinds=",".join(body.kinds) if body.kinds is not None else None,
                by=owner,
                at=console.now(),
            )
        except SubscriberRefused as exc:
            raise Problem(422 if "exists" not in str(exc) else 409, str(exc)) from None
        shown: dict[str, Any] = sub.as_json()
        if key is not None:  # a retry gets the subscription, not the secret
            kept = shown | {"secret": None, "note": "the secret was shown once"}
            console.clients.answer(owner, key, 201, json.dumps(kept))
        return answered(request, 201, json.dumps(shown | {"secret": sub.secret}))

    @app.post(f"{API}/subscribers/{{name}}/disable", tags=["subscribers"])
    @grant("subscribers:write")
    async def api_unsubscribe(request: Request, name: str, found: Caller = seen) -> Response:
        """Nothing more is sent to this subscriber (disabling it twice is a 409)."""
        console = console_of(request)
        sub = _of_site(request, found, name)
        try:
            console.store.disable_subscriber(sub.name, console.now())
        except SubscriberRefused as exc:
            raise Problem(409, str(exc)) from None
        return answered(request, 200, json.dumps({"message": f"subscriber {sub.name} disabled"}))

    @app.post(f"{API}/subscribers/{{name}}/replay", tags=["subscribers"])
    @grant("subscribers:write")
    async def api_replay(
        request: Request, name: str, body: ReplayBody, found: Caller = seen
    ) -> Response:
        """Send the events of a period again, under their first event IDs."""
        console = console_of(request)
        sub = _of_site(request, found, name)
        since = datetime.combine(body.since, time(), UTC)
        until = datetime.combine(body.until, time(), UTC) + timedelta(days=1)
        if until <= since:
            raise Problem(422, "to: before from")
        queued = console.store.replay(since, until, sub.name)
        message = f"{queued} event deliveries queued again"
        return answered(request, 200, json.dumps({"message": message, "queued": queued}))

    @app.get(f"{API}/subscribers/dead-letters", tags=["subscribers"])
    @grant("subscribers:read")
    async def api_subscriber_dead_letters(request: Request, found: Caller = seen) -> Response:
        """Deliveries to the site's subscribers given up on (retries spent, or refused)."""
        store = console_of(request).store
        mine = {s.name for s in store.subscribers(found.client.site_id)}
        found_letters = [d.as_json() for d in store.undelivered() if d.subscriber in mine]
        return answered(request, 200, json.dumps(found_letters))
