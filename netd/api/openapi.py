"""The OpenAPI 3.1 document of the API, generated from the route table and pydantic models.

Served at ``/openapi.json`` so the API can be fuzzed (schemathesis) and clients generated. The
route table in ``server.py`` is the single source: a route added there appears here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from .schemas import ErrorBody


@dataclass(frozen=True)
class Route:
    """One API operation."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    query: tuple[tuple[str, bool], ...] = ()  # (name, required) of string query parameters
    query_schemas: dict[str, dict[str, Any]] | None = None  # a parameter's own schema, if any
    responses: tuple[tuple[int, str, Any], ...] = ()  # extra (status, description, model)


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    return schema


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    """The OpenAPI document for ``routes``."""
    defs: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    error = {"application/json": {"schema": _schema(ErrorBody, defs)}}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                str(route.status): {
                    "description": "success",
                    "content": {
                        "application/json": {
                            "schema": _schema(route.response, defs) if route.response else {}
                        }
                    },
                },
                "4XX": {"description": "invalid request", "content": error},
                "5XX": {"description": "server error", "content": error},
            },
        }
        for status, description, model in route.responses:
            op["responses"][str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": _schema(model, defs)}},
            }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"{(\w+)}", route.path)
        ]
        params += [
            {
                "name": q,
                "in": "query",
                "required": required,
                # A required parameter given empty is refused like a missing one.
                "schema": (route.query_schemas or {}).get(q)
                or ({"type": "string", "minLength": 1} if required else {"type": "string"}),
            }
            for q, required in route.query
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.body, defs)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "netd API",
            "version": version,
            "description": "netd's local API on its Unix socket",
        },
        "paths": paths,
        "components": {"schemas": defs},
    }
