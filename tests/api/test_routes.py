"""Every route of the app: none changes state except by a signed transaction,
and none shows a secret key, a session secret or a file path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from weall.api.app import create_app
from weall.config import Config

from ._live import World, envelope, next_nonce, stable_state

# The only routes that accept a write: each forwards signed transactions
# (the upload is session-signed and makes a signed pin request).
WRITE_ROUTES = {"/v1/tx/submit", "/v1/tx/batch", "/v1/media/upload"}
OTHER_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _rules() -> list[Any]:
    app = create_app(Config(), None)  # type: ignore[arg-type]
    return list(app.url_map.iter_rules())


def _write_rules() -> list[str]:
    return sorted(
        {
            rule.rule
            for rule in _rules()
            if set(rule.methods or ()) - {"GET", "HEAD", "OPTIONS"}
        }
    )


def test_only_transaction_routes_accept_writes() -> None:
    writes = _write_rules()
    assert set(writes) <= WRITE_ROUTES, writes
    assert {"/v1/tx/submit", "/v1/tx/batch"} <= set(writes)


def _bad_bodies(
    world: World,
) -> list[tuple[str, bytes | dict[str, Any] | list[Any], dict[str, str]]]:
    nonce = next_nonce(world.node, "@founder")
    signed = envelope(
        world, world.founder, "CONTENT_POST_CREATE", {"body": "unsigned"}, nonce
    )
    unsigned = {k: v for k, v in signed.items() if k != "sig"}
    wrong_sig = {**signed, "payload": {"body": "changed after signing"}}
    json_type = {"content-type": "application/json"}
    return [
        ("empty", b"", json_type),
        ("object", {}, {}),
        ("unsigned", unsigned, {}),
        ("null sig", {**signed, "sig": None}, {}),
        ("bad sig", wrong_sig, {}),
        ("batch unsigned", {"envelopes": [unsigned]}, {}),
        ("list unsigned", [unsigned], {}),
        ("bytes", b"\x00\xffnot json", {"content-type": "application/octet-stream"}),
    ]


@pytest.mark.slow
def test_write_routes_reject_unsigned_requests(world: World) -> None:
    before = stable_state(world)
    for path in _write_rules():
        for label, body, headers in _bad_bodies(world):
            if isinstance(body, bytes):
                response = world.node.post(path, content=body, headers=headers)
            else:
                response = world.node.post(path, json=body, headers=headers)
            assert response.status_code != 202, (path, label)
            if response.status_code == 200:
                # A batch answers 200 with a result per envelope; each must be an error.
                results = response.json()["results"]
                assert all(not r["ok"] for r in results), (path, label, results)
                continue
            assert 400 <= response.status_code < 500, (
                path,
                label,
                response.status_code,
            )
            assert response.json()["ok"] is False, (path, label)
    assert stable_state(world) == before


@pytest.mark.slow
def test_other_methods_answer_405_json(world: World) -> None:
    before = stable_state(world)
    for rule in _rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", "x", rule.rule)
        for method in OTHER_METHODS:
            if method in (rule.methods or ()):
                continue
            response = world.node.post(path) if method == "POST" else None
            if response is None:
                import httpx

                response = httpx.request(
                    method, f"{world.node.url}{path}", timeout=10.0
                )
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.json()["error"]["code"] == "method_not_allowed"
    assert stable_state(world) == before


def _path_values(world: World) -> dict[str, list[str]]:
    ids = world.ids
    return {
        "height": ["0", "1", "2"],
        "tx_id": [ids["post"], ids["comment"], ids["pin"]],
        "account_id": ["@founder", "@node", "@alice"],
        "group_id": [ids["group"]],
        "cid": [ids["cid"]],
        "pin_id": [ids["pin"]],
        "name": [
            "app.js",
            "style.css",
            "favicon.svg",
            "index.html",
            "../data/keys/founder.key",
        ],
        "filename": [
            "index.html",
            "../data/keys/founder.key",
            "../../data/keys/node.key",
        ],
    }


def _object_ids(world: World, rule: str) -> list[str]:
    ids = world.ids
    if rule.startswith("/v1/content/"):
        return [ids["post"], ids["comment"], ids["node_post"]]
    if rule.startswith("/v1/gov/"):
        return [ids["proposal"]]
    if rule.startswith("/v1/disputes/"):
        return [ids["dispute"]]
    return [ids["poh_request"]]


def _crawl_paths(world: World) -> list[str]:
    values = _path_values(world)
    paths: list[str] = []
    for rule in _rules():
        if "GET" not in (rule.methods or ()):
            continue
        names = re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule.rule)
        if not names:
            paths.append(rule.rule)
            continue
        (name,) = names
        choices = _object_ids(world, rule.rule) if name == "object_id" else values[name]
        for value in choices:
            paths.append(re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", value, rule.rule))
    paths += [
        "/v1/blocks?from=0&limit=100",
        "/v1/feed?limit=100",
        "/nope",
        "/v1/../data/keys/founder.key",
    ]
    return paths


def _secret_strings(world: World) -> list[str]:
    import json

    found = []
    for path in sorted((world.data_dir / "keys").glob("*.key")):
        secret = json.loads(path.read_text())["secret_key"]
        found += [secret, secret[1:]]
    return found


def _path_fragments(data_dir: Path, run_dir: Path) -> list[str]:
    fragments = [str(data_dir.resolve()), str(run_dir.resolve())]
    # Distinctive directory names of the temporary data dir (not "/tmp" alone).
    fragments += [part for part in data_dir.resolve().parts if len(part) > 6]
    return fragments


@pytest.mark.slow
def test_get_routes_expose_no_secrets_or_paths(world: World) -> None:
    secrets = _secret_strings(world)
    assert len(secrets) == 4
    fragments = _path_fragments(world.data_dir, world.node.run_dir)
    before = stable_state(world)
    crawled = 0
    for path in _crawl_paths(world):
        response = world.node.get(path)
        assert response.status_code < 500, (path, response.status_code)
        text = response.text
        crawled += response.status_code == 200
        for secret in secrets:
            assert secret not in text, path
        for fragment in fragments:
            assert fragment not in text, (path, fragment)
        assert "secret" not in text.lower(), path
    assert crawled >= 20
    # Reads change nothing, not even when they name paths outside the API.
    assert stable_state(world) == before
