"""The served OpenAPI document: FastAPI's, completed with what every route of a kind answers.

A route declares the codes that are its own (``answers.declared``: a conflict, the engine
outcomes it passes on). What follows from the route's shape is added here, from its
dependencies and parameters, so that no route can forget it:

- a path parameter: 404 ``not_found`` (an unknown id, or another's);
- a query, path or body parameter: 422 ``invalid_request`` (FastAPI's own 422 entry names a
  ``HTTPValidationError`` body; ours is the ``ErrorBody`` of every error);
- a body: 413 ``payload_too_large``;
- a patient's token (``deps.patient_of``): 401 ``unauthenticated``;
- an admin's token (``deps.admin``): 401, and 403 ``forbidden`` (another hospital's);
- the services (``deps.services_of``: the store behind them): 503 ``unavailable``.

A method a path does not take answers 405 with ``Allow`` (``app.py``); it is no operation, so it
is in no operation's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api import deps, errors

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def install(app: FastAPI, routes: Callable[[FastAPI], list[APIRoute]]) -> None:
    """Serve the completed document (built once, on first use, like FastAPI's)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(generate(), routes(app))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def shape_codes(route: APIRoute) -> list[errors.Code]:
    """The codes that follow from a route's dependencies and parameters."""
    calls: set[Any] = set()
    params = {"path": False, "query": False, "body": False}
    stack: list[Dependant] = [route.dependant]
    while stack:
        dependant = stack.pop()
        calls.add(dependant.call)
        params["path"] |= bool(dependant.path_params)
        params["query"] |= bool(dependant.query_params)
        params["body"] |= bool(dependant.body_params)
        stack.extend(dependant.dependencies)
    codes: list[errors.Code] = []
    if params["path"]:
        codes.append(errors.NOT_FOUND)
    if any(params.values()):
        codes.append(errors.INVALID_REQUEST)
    if params["body"]:
        codes.append(errors.PAYLOAD_TOO_LARGE)
    if deps.patient_of in calls or deps.admin in calls:
        codes.append(errors.UNAUTHENTICATED)
    if deps.admin in calls:
        codes.append(errors.FORBIDDEN)
    if deps.services_of in calls:
        codes.append(errors.UNAVAILABLE)
    return codes


def complete(doc: dict[str, Any], routes: list[APIRoute]) -> None:
    """Add each operation's shape codes to its answers; every error answer an ``ErrorBody``."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = errors.ErrorBody.model_json_schema()
    for route in routes:
        if not route.include_in_schema:
            continue
        by_status: dict[int, list[errors.Code]] = {}
        for code in shape_codes(route):
            by_status.setdefault(code.status, []).append(code)
        for method in route.methods:
            answers = doc["paths"][route.path_format][method.lower()].setdefault("responses", {})
            for status, codes in by_status.items():
                entry = answers.setdefault(str(status), {})
                described = entry.get("description", "")
                if described == "Validation Error":  # FastAPI's: ours names the code
                    described = ""
                entry["description"] = errors.describe(codes, described)
            for status, entry in answers.items():
                if int(status) >= 400:
                    entry["content"] = {"application/json": {"schema": ERROR_BODY}}
            ordered = dict(sorted(answers.items()))
            answers.clear()
            answers.update(ordered)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
