"""Who is calling the API, and may they: a bearer token names an API client, each route
declares the scope it needs (`grant`, deny by default: a route without a grant is refused to
every client, and the route-enumeration test fails on it), patient routes answer 404 for
another site's patient, every client has a rate limit, and a request body a size limit.
Every refusal is an RFC 9457 problem (application/problem+json) in one line."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.store.access_log import Touch
from infra.store.api_clients import ApiClient
from web.context import console_of
from web.security import client_address

API = "/api/v1"
API_BYTES = 64 * 1024  # the largest body (an enrolment, a week's sheet) is a few kilobytes
PROBLEM = "application/problem+json"
ROLE = "api client"  # the access log's role column for every API client


@dataclass(frozen=True)
class Grant:
    """What a route needs: this scope, and for a patient's route a patient of the client's
    site (`patient` True)."""

    scope: str
    patient: bool = False


GRANTS: dict[str, Grant] = {}
"""A route's endpoint name to its grant: filled by `grant`, read by `caller`."""
OPEN = frozenset({"api_openapi"})
"""The API's only route open to all: its OpenAPI document."""
SIGNED = frozenset({"api_webhook"})
"""The API's routes that a webhook sender's signature opens instead of a token."""


def grant(scope: str, patient: bool = False) -> Callable[[Any], Any]:
    def mark(endpoint: Any) -> Any:
        GRANTS[endpoint.__name__] = Grant(scope, patient)
        return endpoint

    return mark


class Problem(Exception):
    """An answer other than success: its status and the one line that says why."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_body(status: int, detail: str) -> str:
    title = HTTPStatus(status).phrase
    return json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})


def problem_response(problem: Problem) -> Response:
    return Response(
        problem_body(problem.status, problem.detail),
        status_code=problem.status,
        media_type=PROBLEM,
        headers=problem.headers,
    )


@dataclass(frozen=True)
class Caller:
    client: ApiClient
    grant: Grant


def action_of(request: Request) -> str:
    """The route's template (`POST /api/v1/patients/{patient_id}/discharge`), never the
    concrete path: the access log names patients in its own column."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '?')}".replace(API, "api", 1)


def log_call(
    request: Request,
    actor: str,
    action: str,
    patient_id: str | None = None,
    outcome: str = "allowed",
    along: Callable[[Any], object] | None = None,
) -> None:
    """The call in the access log; `along`: a write to commit with its entry."""
    log_touches(request, actor, action, [Touch(patient_id, outcome)], along)


def log_touches(
    request: Request,
    actor: str,
    action: str,
    touched: Sequence[Touch],
    along: Callable[[Any], object] | None = None,
) -> None:
    """The call in the access log, an entry for each patient it touched (a webhook's
    bundle touches several), in one transaction with `along`."""
    console = console_of(request)
    console.access.append_many(
        console.now(), actor, ROLE, action, touched, client_address(request), along
    )


def actor_of(client: ApiClient) -> str:
    # Prefixed like the command line's `cli:` entries: a client and a console user may
    # share a name, the access log must not confuse them.
    return f"api:{client.name}"


async def caller(request: Request) -> Caller:
    """The request's client, checked against its route's grant and its rate limit."""
    console = console_of(request)
    route = request.scope.get("route")
    rule = GRANTS.get(getattr(getattr(route, "endpoint", None), "__name__", ""))
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    now = console.now()
    client = console.clients.holder(token.strip(), now) if scheme.lower() == "bearer" else None
    if client is None:
        log_call(request, "-", action_of(request), outcome="denied")
        raise Problem(
            401, "a valid bearer token is needed", {"WWW-Authenticate": 'Bearer realm="carepath"'}
        )
    if rule is None or rule.scope not in client.scopes:
        log_call(request, actor_of(client), action_of(request), outcome="denied")
        needed = rule.scope if rule else "none: this route is closed"
        raise Problem(
            403,
            f"client {client.name} lacks the scope this needs ({needed})",
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    wait = console.api_limit.wait(client.name, now)
    if wait:
        log_call(request, actor_of(client), action_of(request), outcome="refused")
        raise Problem(
            429,
            f"client {client.name} is over its rate limit: retry in {wait:.0f} s",
            {"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    found = Caller(client, rule)
    request.state.actor = actor_of(client)
    return found


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Bodies of /api requests over `limit` bytes are refused (413), whether they say their
    length or stream it."""

    def __init__(self, app: ASGIApp, limit: int = API_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Problem(413, f"a request body has at most {self.limit // 1024} KiB")
        )
        await response(scope, receive, send)
