"""Who is asking, and may they: the session cookie, CSRF tokens, security headers and the
rule every route declares (deny by default: a route without a rule is refused to all, and
the route-enumeration test fails on it)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.store.accounts import Role, User

SESSION_COOKIE = "carepath_session"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """Every answer: the headers above; pages (PHI) are never cached. Plain ASGI: Starlette's
    BaseHTTPMiddleware ran each request in a task of its own, a third of a page's time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cached = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if not cached:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_token(session_token: str) -> str:
    """The form token of a session: derived from the session's secret (which only the
    HttpOnly cookie carries), so another site's page can neither read nor forge it."""
    return hashlib.sha256(f"carepath-csrf:{session_token}".encode()).hexdigest()


def csrf_holds(session_token: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(csrf_token(session_token), offered)


@dataclass(frozen=True)
class Rule:
    """Who may use a route: these roles, and for a patient's route only those who may see
    that patient (`patient` True)."""

    roles: frozenset[Role]
    patient: bool = False
    passive: bool = False  # a page's own refresh: it does not keep an idle session alive


PUBLIC = Rule(frozenset(Role))  # sign-in itself; nothing behind it
RULES: dict[str, Rule] = {}
"""A route's endpoint name to its rule: filled by `allow`, read by the access check."""


def allow(*roles: Role, patient: bool = False, passive: bool = False) -> Callable[[Any], Any]:
    def mark(endpoint: Any) -> Any:
        RULES[endpoint.__name__] = Rule(frozenset(roles), patient, passive)
        return endpoint

    return mark


class NotSignedIn(Exception):
    """No open session: a page goes to sign-in, anything else answers 401."""


class Forbidden(Exception):
    """Signed in, but this role may not use this route (403)."""


class NotFound(Exception):
    """Nothing here for this user: also what another caseload's patient looks like (404)."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"


@dataclass(frozen=True)
class Visitor:
    """The signed-in user of this request, with their session's form token."""

    user: User
    csrf: str
    session_token: str


@dataclass
class RateLimit:
    """A token bucket per client, in this process (each copy of the application limits on
    its own: a limit, not a quota)."""

    per_minute: float = 600.0
    burst: float = 60.0
    _buckets: dict[str, tuple[float, datetime]] = field(default_factory=dict)

    def wait(self, client: str, at: datetime) -> float:
        """0 if the client may go now (and a token is taken), else the seconds to wait."""
        tokens, then = self._buckets.get(client, (self.burst, at))
        rate = self.per_minute / 60
        tokens = min(self.burst, tokens + max(0.0, (at - then).total_seconds()) * rate)
        if tokens < 1:
            self._buckets[client] = (tokens, at)
            return (1 - tokens) / rate
        self._buckets[client] = (tokens - 1, at)
        return 0.0
