"""The OpenAPI document covers every route, and a live node conforms to it.

The schemathesis run generates requests from ``/openapi.json`` (valid and
invalid ones) for every operation, sends them to a live node on loopback and
checks each answer: no 5xx, a documented status code, and a body that
matches the documented schema. The examples per operation and the whole run
are bounded so the run stays under two minutes on a loaded machine.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from weall.api.app import create_app
from weall.config import Config

from ._live import World

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 12
RUN_BUDGET_S = 100.0
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Quart's own routes: static files (no folder exists) and the document itself.
UNDOCUMENTED = {"static", "openapi"}


def _documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
    }


def _rule_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}").replace("{path:", "{")


def test_openapi_lists_every_route() -> None:
    app = create_app(Config(), None)  # type: ignore[arg-type]
    document = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    documented = _documented_operations(document)
    hidden = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in UNDOCUMENTED or getattr(
            view, "_quart_schema_hidden", False
        ):
            hidden.append(rule.rule)
            continue
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            assert (_rule_path(rule.rule), method) in documented, (rule.rule, method)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert any(code.startswith("2") for code in operation["responses"]), (
                path,
                method,
            )
            assert "400" in operation["responses"], (path, method)
            assert "429" in operation["responses"], (path, method)
    assert "/openapi.json" in hidden


def test_openapi_documents_request_bodies() -> None:
    app = create_app(Config(), None)  # type: ignore[arg-type]
    document = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    submit = document["paths"]["/v1/tx/submit"]["post"]
    body_schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert set(body_schema["required"]) == {
        "chain_id",
        "tx_type",
        "signer",
        "nonce",
        "payload",
        "pubkey",
        "sig",
    }
    assert body_schema["additionalProperties"] is False
    assert set(submit["responses"]) >= {
        "200",
        "202",
        "400",
        "403",
        "409",
        "413",
        "429",
        "503",
    }
    assert "requestBody" in document["paths"]["/v1/tx/batch"]["post"]


def test_openapi_served_by_live_node(world: World) -> None:
    response = world.node.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["paths"]["/v1/chain/head"]["get"]["responses"]["200"]


def _known_ids(world: World) -> dict[str, dict[str, str]]:
    """Path parameters of real objects, so that generated cases also reach 200 answers."""
    ids = world.ids
    return {
        "/v1/accounts/{account_id}": {"account_id": "@founder"},
        "/v1/accounts/{account_id}/posts": {"account_id": "@founder"},
        "/v1/content/{object_id}": {"object_id": ids["post"]},
        "/v1/gov/proposals/{object_id}": {"object_id": ids["proposal"]},
        "/v1/disputes/{object_id}": {"object_id": ids["dispute"]},
        "/v1/poh/requests/{object_id}": {"object_id": ids["poh_request"]},
        "/v1/groups/{group_id}": {"group_id": ids["group"]},
        "/v1/media/{cid}/status": {"cid": ids["cid"]},
        "/v1/pins/{pin_id}": {"pin_id": ids["pin"]},
        "/v1/blocks/{height}": {"height": "1"},
    }


def _run_operation(
    operation: Any,
    mode: Any,
    base_url: str,
    deadline: float,
    path_parameters: dict[str, str] | None,
    statuses: Counter[int],
) -> None:

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=base_url, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid input to make.
        assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label


def test_live_node_conforms_to_openapi(world: World) -> None:
    base_url = world.node.url
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    known = _known_ids(world)
    deadline = time.monotonic() + RUN_BUDGET_S
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:
        for mode in (
            schemathesis.GenerationMode.POSITIVE,
            schemathesis.GenerationMode.NEGATIVE,
        ):
            _run_operation(operation, mode, base_url, deadline, None, statuses)
        if operation.path in known:
            _run_operation(
                operation,
                schemathesis.GenerationMode.POSITIVE,
                base_url,
                deadline,
                known[operation.path],
                statuses,
            )
    sent = sum(statuses.values())
    assert sent >= len(operations) * 4, f"only {sent} requests sent within the budget"
    assert sum(n for code, n in statuses.items() if code < 300) >= len(known), statuses
    assert sum(n for code, n in statuses.items() if 400 <= code < 500) > 0, statuses
    assert not [code for code in statuses if code >= 500], statuses
    # The node is still healthy after the run.
    assert httpx.get(f"{base_url}/health", timeout=10).json()["ok"] is True
