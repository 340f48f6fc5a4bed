"""The case managers' console and the API for other systems (/api/v1): one ASGI application
served by CarePath itself (FastAPI, server-rendered pages, htmx vendored under static/;
JSON under /api/v1). `create_app` builds it around a `Console`; `web.serve` runs it on
uvicorn."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from infra.store.accounts import Role
from web import (
    api,
    enrolment,
    groups,
    patients,
    signin,
    staff,
    surveys,
    whatif,
)
from web.api_security import API, BodyLimit, Problem, problem_response
from web.context import Console, console_of, page
from web.openapi import document_text, install_api
from web.security import (
    RULES,
    SESSION_COOKIE,
    Forbidden,
    NotFound,
    NotSignedIn,
    SecurityHeaders,
    Visitor,
    allow,
    csrf_holds,
    csrf_token,
)
from web.signin import HOME

FORM_BYTES = 64 * 1024  # the largest form (an attendance sheet) is a few kilobytes


async def signed_in(request: Request) -> Visitor:
    """The request's user, checked against its route's rule; a form also carries the
    session's CSRF token. Deny by default: a route without a rule is refused."""
    console = console_of(request)
    route = request.scope.get("route")
    rule = RULES.get(getattr(getattr(route, "endpoint", None), "__name__", ""))
    token = request.cookies.get(SESSION_COOKIE)
    touch = rule is None or not rule.passive
    user = token and console.identity.session_user(token, console.now(), console.idle, touch)
    if not token or not user:
        raise NotSignedIn()
    if rule is None or user.role not in rule.roles:
        console.record(request, user, f"{request.method} {_path_of(request)}", outcome="denied")
        raise Forbidden()
    if request.method != "GET":
        if int(request.headers.get("content-length") or 0) > FORM_BYTES:
            raise Forbidden()
        form = await request.form()
        offered = request.headers.get("x-csrf-token") or form.get("csrf")
        if not csrf_holds(token, offered if isinstance(offered, str) else None):
            console.record(request, user, f"{request.method} {_path_of(request)}", outcome="denied")
            raise Forbidden()
    return Visitor(user=user, csrf=csrf_token(token), session_token=token)


def _path_of(request: Request) -> str:
    """The route's template (/patients/{patient_id}), never the concrete path: the access
    log names patients in its own column."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "?"))


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="CarePath console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.exception_handler(NotSignedIn)
    async def _to_sign_in(request: Request, exc: NotSignedIn) -> Response:
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse("/sign-in", status_code=303)
        response = PlainTextResponse("sign in first", status_code=401)
        response.headers["HX-Redirect"] = "/sign-in"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, "error.html", 403, message="Your role may not open this page.")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return page(request, "error.html", 404, message="Nothing here.")

    @app.exception_handler(404)
    async def _no_route(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(API):
            return problem_response(Problem(404, "no such route"))
        return page(request, "error.html", 404, message="Nothing here.")

    signin.install(app)

    seen = Depends(signed_in)

    @app.post("/sign-out")
    @allow(*Role)
    async def sign_out(request: Request, visitor: Visitor = seen) -> Response:
        console.identity.end_session(visitor.session_token, console.now())
        console.record(request, visitor.user, "sign out")
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/")
    @allow(*Role)
    async def home(visitor: Visitor = seen) -> Response:
        return RedirectResponse(HOME[visitor.user.role], status_code=303)

    patients.install(app, signed_in)
    enrolment.install(app, signed_in)
    staff.install(app, signed_in)
    whatif.install(app, signed_in)
    groups.install(app, signed_in)
    surveys.install(app)
    install_api(app)
    api.problem_handlers(app)
    document = document_text()  # made once: the routes do not change while serving

    @app.get(f"{API}/openapi.json", include_in_schema=False)
    async def api_openapi() -> Response:
        """Open to all: it describes the API, nothing of a patient."""
        return Response(document, media_type="application/json")

    return app
