"""The API's OpenAPI 3 document: made from /api/v1's routes, served at /api/v1/openapi.json
and kept in the repository as docs/openapi.json (a test fails when the two differ).
`python -m web.openapi` rewrites the kept copy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from web import api, api_groups, api_subscribers, api_surveys, webhooks
from web.api_security import API, GRANTS, PROBLEM, SIGNED

KEPT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details: `detail` is the command line's one line.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
REFUSALS = {
    "401": "no valid bearer token",
    "403": "the client lacks this route's scope",
    "404": "no such patient or task at the client's site",
    "409": "refused by the journey's rules (nothing changed)",
    "413": "the body is over 64 KiB",
    "422": "bad input",
    "429": "over the client's rate limit (see Retry-After)",
    "503": "the engine (Temporal or a worker) does not answer",
}


def install_api(app: FastAPI) -> None:
    """Every /api/v1 route: the one list the console's app and this document share."""
    api.install(app)
    api_subscribers.install(app)
    api_groups.install(app)
    api_surveys.install(app)
    webhooks.install(app)


def api_document() -> dict[str, Any]:
    app = FastAPI()
    install_api(app)
    routes = [r for r in app.routes if getattr(r, "path", "").startswith(API)]
    document = get_openapi(
        title="CarePath API",
        version="1",
        openapi_version="3.1.0",
        description=(
            "The command line's operations for other systems. Every call carries a bearer "
            "token (`starter.py api-clients add NAME --scopes ... --site ...`); each "
            "operation names the scope it needs and answers only for the client's site. "
            "Every POST honours an `Idempotency-Key` header: a retry with the same key and "
            "body acts once and gets the first answer (`Idempotent-Replayed: true`)."
        ),
        routes=routes,
    )
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    document["security"] = [{"bearer": []}]
    for methods in document["paths"].values():
        for method, operation in methods.items():
            name = operation["operationId"].split("_api_v1")[0]
            if name in SIGNED:
                operation["security"] = []  # the signature is the credential
                needs = "Signed: `webhook-id`, `webhook-timestamp`, `webhook-signature`."
            else:
                needs = f"Scope: `{GRANTS[name].scope}`."
            operation["description"] = (operation.get("description", "") + "\n\n" + needs).strip()
            if method == "post":
                operation.setdefault("parameters", []).append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
                    }
                )
            responses = operation["responses"]
            responses.pop("422", None)  # FastAPI's own shape; ours is a problem
            for code, why in REFUSALS.items():
                responses[code] = {
                    "description": why,
                    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
    schemas = components["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def document_text() -> str:
    return json.dumps(api_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    KEPT.write_text(document_text(), encoding="utf-8")
    print(f"wrote {KEPT}", file=sys.stderr)
