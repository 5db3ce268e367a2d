"""The OpenAPI document: quart-schema's, plus the error responses of every route.

quart-schema documents what each route declares with ``document``. Every
route can also fail in the shared ways (invalid input, unknown id, rate
limit, node unavailable, and for bodies too large or too slow), so this
provider adds those status codes with the ``ErrorBody`` schema to every
operation that does not document them itself. Routes hidden with
``quart_schema.hide`` (the dashboard's HTML and assets) are left out.
"""

from __future__ import annotations

from typing import Any, Final

from quart_schema import OpenAPIProvider

from weall.api.schemas import ErrorBody

__all__ = ["NodeOpenAPIProvider"]

_REF_TEMPLATE: Final = "#/components/schemas/{model}"
_ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorBody"}
_ALL_METHODS: Final = {
    400: "invalid request (query, path or body)",
    404: "no such route or object",
    429: "rate limited; see Retry-After",
    503: "the node cannot serve this right now (database, producer)",
}
_BODY_METHODS: Final = {
    401: "session signature missing or invalid",
    403: "gate, role or economics lock",
    408: "the request body did not arrive in time",
    409: "conflict (nonce, existing object)",
    413: "the request body is too large",
}


def _error_response(description: str, status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "seconds until a request will be accepted",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


class NodeOpenAPIProvider(OpenAPIProvider):
    """Adds the shared error responses and the ``ErrorBody`` schema."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorBody.model_json_schema(ref_template=_REF_TEMPLATE)
        components.update(error_schema.pop("$defs", {}))
        components["ErrorBody"] = error_schema
        for path_item in document["paths"].values():
            for method, operation in path_item.items():
                self._add_errors(method, operation)
        return document

    @staticmethod
    def _add_errors(method: str, operation: dict[str, Any]) -> None:
        # quart-schema shares one responses dict between the methods of a rule.
        responses = dict(operation.get("responses", {}))
        if not any(str(code).startswith("2") for code in responses):
            # A route registered without ``document`` still gets a success
            # response, without a body schema, so the document lists every route.
            responses[200] = {"description": "success; the body is not described here"}
        errors = dict(_ALL_METHODS)
        if method in ("post", "put", "patch"):
            errors.update(_BODY_METHODS)
        for status, description in errors.items():
            responses.setdefault(status, _error_response(description, status))
        operation["responses"] = {
            str(code): value
            for code, value in sorted(responses.items(), key=lambda item: int(item[0]))
        }
