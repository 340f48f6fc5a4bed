"""Signing in: a local account's password (the embedded default), or the clinic's identity
provider over OpenID Connect when the settings name one; either way the session is the
console's own (server-side, its token in an HttpOnly, SameSite=Strict cookie)."""

from __future__ import annotations

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from infra.store.accounts import IdentityRefused, Role, User
from web.context import Console, console_of, page
from web.oidc import OidcRefused, Pending
from web.security import PUBLIC, SESSION_COOKIE, allow, client_address
from web.surveys import SURVEY_ENDPOINTS

HOME = {
    Role.case_manager: "/caseload",
    Role.supervisor: "/caseload",
    Role.operator: "/operations",
    Role.auditor: "/access-log",
    Role.facilitator: "/groups",
}
PUBLIC_ENDPOINTS = frozenset({"sign_in_page", "sign_in", "oidc_start", "oidc_callback"}) | (
    SURVEY_ENDPOINTS
)
"""The routes anyone may reach: signing in, with nothing behind it; and the explicit
exception, a survey link's page, whose signed single-use link is its own capability (it
shows the program's questions, nothing of a patient: web.surveys)."""
OIDC_COOKIE = "carepath_oidc"
OIDC_PATH = "/sign-in/oidc"


def _refused(request: Request, console: Console, who: str, why_code: int, message: str) -> Response:
    console.access.append(
        console.now(),
        who[:48] if who.isprintable() else "?",
        "-",
        "sign in",
        outcome="refused",
        address=client_address(request),
    )
    return page(request, "sign_in.html", why_code, error=message, idle=console.idle)


def _open_session(request: Request, console: Console, user: User, response: Response) -> Response:
    token = console.identity.open_session(user.username, client_address(request), console.now())
    console.record(request, user, "sign in")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/",
    )
    return response


def install(app: FastAPI) -> None:
    @app.get("/sign-in", response_class=HTMLResponse)
    @allow(*PUBLIC.roles)
    async def sign_in_page(request: Request) -> Response:
        console = console_of(request)
        return page(request, "sign_in.html", error=None, idle=console.idle)

    @app.post("/sign-in", response_class=HTMLResponse)
    @allow(*PUBLIC.roles)
    async def sign_in(
        request: Request, username: str = Form(max_length=64), password: str = Form(max_length=512)
    ) -> Response:
        console = console_of(request)
        if console.oidc is not None:
            message = "this console signs in through your organisation's identity provider"
            return _refused(request, console, username, 403, message)
        try:
            user = console.identity.sign_in(username, password, console.now())
        except IdentityRefused as exc:
            return _refused(request, console, username, 401, str(exc))
        return _open_session(request, console, user, RedirectResponse(HOME[user.role], 303))

    @app.get(OIDC_PATH)
    @allow(*PUBLIC.roles)
    async def oidc_start(request: Request) -> Response:
        console = console_of(request)
        if console.oidc is None:
            return page(request, "error.html", 404, message="Nothing here.")
        try:
            where, pending = await console.oidc.start()
        except (OidcRefused, OSError) as exc:
            return _refused(
                request, console, "-", 503, f"cannot reach the identity provider: {exc}"
            )
        response = RedirectResponse(where, status_code=303)
        # Lax: the provider's redirect back is a cross-site navigation, which Strict drops.
        response.set_cookie(
            OIDC_COOKIE,
            pending.cookie(),
            max_age=600,
            httponly=True,
            samesite="lax",
            secure=console.secure_cookies,
            path=OIDC_PATH,
        )
        return response

    @app.get(f"{OIDC_PATH}/callback", response_class=HTMLResponse)
    @allow(*PUBLIC.roles)
    async def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
        console = console_of(request)
        if console.oidc is None:
            return page(request, "error.html", 404, message="Nothing here.")
        pending = Pending.from_cookie(request.cookies.get(OIDC_COOKIE))
        try:
            username = await console.oidc.finish(code[:2048], state[:256], pending)
        except (OidcRefused, OSError) as exc:
            return _refused(request, console, "-", 401, f"not signed in: {exc}")
        user = console.identity.user(username)
        if user is None:
            return _refused(request, console, username, 403, f"no console account for {username}")
        # The session's Strict cookie would not ride on this cross-site redirect chain: a
        # page of our own moves on (a same-site navigation).
        response = page(request, "signed_in.html", home=HOME[user.role])
        response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
        return _open_session(request, console, user, response)
