"""Hypothesis fuzzing of the transaction routes of a live node.

Every malformed, mis-typed, oversized, mis-encoded or mis-signed body gets a
4xx with a stable error code, and afterwards the state, the producer's pool
and the signer's next nonce are exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weall.protocol import keys
from weall.protocol.encoding import b64url_encode

from ._live import World, envelope, next_nonce, stable_state

pytestmark = pytest.mark.slow

EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ENVELOPE_FIELDS = ("chain_id", "tx_type", "signer", "nonce", "payload", "pubkey", "sig")
JSON_CODES = {"invalid_json"}
SHAPE_CODES = {"invalid_json", "invalid_envelope"}


def _post_raw(world: World, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{world.node.url}{path}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30.0,
    )


def _assert_rejected(
    response: httpx.Response, codes: set[str], status: int | None = None
) -> str:
    assert 400 <= response.status_code < 500, (
        response.status_code,
        response.text[:300],
    )
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["ok"] is False
    assert error["error"]["code"] in codes, error
    assert isinstance(error["error"]["message"], str)
    return str(error["error"]["code"])


@pytest.fixture
def unchanged(world: World) -> Any:
    """Check that a test leaves the state, pool and nonces as it found them."""
    before = stable_state(world)
    yield
    assert stable_state(world) == before


def _valid(
    world: World, nonce: int | None = None, body: str = "fuzz"
) -> dict[str, Any]:
    nonce = next_nonce(world.node, "@founder") + 1000 if nonce is None else nonce
    return envelope(world, world.founder, "CONTENT_POST_CREATE", {"body": body}, nonce)


# -- JSON level -------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=300))
def test_fuzz_random_bytes(world: World, unchanged: None, body: bytes) -> None:
    response = _post_raw(world, "/v1/tx/submit", body)
    _assert_rejected(response, SHAPE_CODES)


@FUZZ
@given(text=st.text(max_size=200).filter(lambda t: t.strip() != ""))
def test_fuzz_malformed_json(world: World, unchanged: None, text: str) -> None:
    body = ("{" + text).encode("utf-8", "surrogatepass")
    response = _post_raw(world, "/v1/tx/submit", body)
    _assert_rejected(response, SHAPE_CODES)


@FUZZ
@given(field=st.sampled_from(ENVELOPE_FIELDS))
def test_fuzz_duplicate_keys(world: World, unchanged: None, field: str) -> None:
    document = _valid(world)
    text = json.dumps(document)
    duplicated = text[:-1] + f", {json.dumps(field)}: {json.dumps(document[field])}}}"
    response = _post_raw(world, "/v1/tx/submit", duplicated.encode())
    _assert_rejected(response, JSON_CODES, 400)


@FUZZ
@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False)
        .map(repr)
        .filter(lambda r: "." in r or "e" in r),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e3", "1.0", "-0.0"]),
    ),
    where=st.sampled_from(["nonce", "payload"]),
)
def test_fuzz_floats(world: World, unchanged: None, value: str, where: str) -> None:
    document = _valid(world)
    marker = '"__float__"'
    if where == "nonce":
        document["nonce"] = "__float__"
    else:
        document["payload"] = {"body": "x", "extra": "__float__"}
    text = json.dumps(document).replace(marker, value)
    response = _post_raw(world, "/v1/tx/submit", text.encode())
    _assert_rejected(response, JSON_CODES, 400)


@FUZZ
@given(
    number=st.one_of(
        st.integers(min_value=2**53, max_value=10**400),
        st.integers(max_value=-(2**53), min_value=-(10**400)),
    ),
    where=st.sampled_from(["nonce", "payload"]),
)
def test_fuzz_huge_integers(
    world: World, unchanged: None, number: int, where: str
) -> None:
    document = _valid(world)
    if where == "nonce":
        document["nonce"] = "__int__"
    else:
        document["payload"] = {"body": "x", "count": "__int__"}
    text = json.dumps(document).replace('"__int__"', str(number))
    response = _post_raw(world, "/v1/tx/submit", text.encode())
    _assert_rejected(response, JSON_CODES, 400)


@FUZZ
@given(depth=st.integers(min_value=33, max_value=20_000), kind=st.sampled_from("[{"))
def test_fuzz_deep_nesting(
    world: World, unchanged: None, depth: int, kind: str
) -> None:
    inner = (
        "[" * depth + "]" * depth
        if kind == "["
        else '{"a":' * depth + "1" + "}" * depth
    )
    text = json.dumps(_valid(world)).replace('"fuzz"', inner)
    response = _post_raw(world, "/v1/tx/submit", text.encode())
    _assert_rejected(response, JSON_CODES | {"too_large"})


@FUZZ
@given(
    bad=st.sampled_from(
        [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
    ),
    field=st.sampled_from(["body", "signer", "chain_id"]),
)
def test_fuzz_invalid_utf8(
    world: World, unchanged: None, bad: bytes, field: str
) -> None:
    document = _valid(world)
    if field == "body":
        document["payload"]["body"] = "__bad__"
    else:
        document[field] = "__bad__"
    body = json.dumps(document).encode().replace(b"__bad__", b"ok" + bad + b"ok")
    response = _post_raw(world, "/v1/tx/submit", body)
    _assert_rejected(response, JSON_CODES, 400)


# -- envelope level ---------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(field=st.sampled_from(ENVELOPE_FIELDS), value=JSON_VALUES)
def test_fuzz_wrong_types(
    world: World, unchanged: None, field: str, value: Any
) -> None:
    document = _valid(world)
    if type(value) is type(document[field]) and field != "payload":
        value = [value]
    if field == "payload" and isinstance(value, dict):
        value = [value]
    document[field] = value
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, SHAPE_CODES | {"bad_signature", "wrong_chain"})


@FUZZ
@given(
    missing=st.sets(st.sampled_from(ENVELOPE_FIELDS), min_size=1),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in ENVELOPE_FIELDS),
        JSON_VALUES,
        max_size=2,
    ),
)
def test_fuzz_envelope_fields(
    world: World, unchanged: None, missing: set[str], extra: dict[str, Any]
) -> None:
    document = {k: v for k, v in _valid(world).items() if k not in missing}
    document.update(extra)
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, SHAPE_CODES, 400)


@FUZZ
@given(
    size=st.integers(min_value=64 * 1024, max_value=900 * 1024),
    field=st.sampled_from(["body", "chain_id", "tx_type", "signer", "pubkey", "sig"]),
)
def test_fuzz_oversize_fields(
    world: World, unchanged: None, size: int, field: str
) -> None:
    document = _valid(world)
    if field == "body":
        document["payload"]["body"] = "x" * size
    else:
        document[field] = "z" * size
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, {"too_large", "invalid_envelope", "invalid_payload"})


@FUZZ
@given(body_size=st.integers(min_value=1024 * 1024 + 1, max_value=3 * 1024 * 1024))
def test_fuzz_body_over_request_limit(
    world: World, unchanged: None, body_size: int
) -> None:
    document = _valid(world)
    document["payload"]["body"] = "x" * body_size
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, {"too_large"}, 413)


def _mangle(text: str, how: str) -> str:
    mangles: dict[str, Callable[[str], str]] = {
        "truncate": lambda t: t[: len(t) // 2],
        "extend": lambda t: t + t[1:5],
        "prefix": lambda t: "m" + t[1:],
        "padding": lambda t: t + "==",
        "alphabet": lambda t: t[:-3] + "!!!",
        "empty": lambda t: "",
        "case": lambda t: t.upper(),
    }
    return mangles[how](text)


MANGLES = ["truncate", "extend", "prefix", "padding", "alphabet", "empty", "case"]


@FUZZ
@given(field=st.sampled_from(["pubkey", "sig"]), how=st.sampled_from(MANGLES))
def test_fuzz_bad_key_and_signature_encodings(
    world: World, unchanged: None, field: str, how: str
) -> None:
    document = _valid(world)
    document[field] = _mangle(document[field], how)
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, {"invalid_envelope", "bad_signature"}, 400)


@FUZZ
@given(raw=st.binary(min_size=64, max_size=64))
def test_fuzz_signature_of_random_bytes(
    world: World, unchanged: None, raw: bytes
) -> None:
    document = _valid(world)
    document["sig"] = b64url_encode(raw)
    response = world.node.post("/v1/tx/submit", json=document)
    _assert_rejected(response, {"bad_signature", "invalid_envelope"}, 400)


@FUZZ
@given(body=st.text(min_size=1, max_size=50))
def test_fuzz_signature_by_wrong_key(world: World, unchanged: None, body: str) -> None:
    nonce = next_nonce(world.node, "@founder")
    other = keys.generate("@founder")
    # Signed by another key but naming the founder's public key.
    forged = envelope(world, other, "CONTENT_POST_CREATE", {"body": body}, nonce)
    forged["pubkey"] = world.founder.pubkey
    _assert_rejected(
        world.node.post("/v1/tx/submit", json=forged), {"bad_signature"}, 400
    )
    # Signed and named by a key that is not one of the founder's.
    foreign = envelope(world, other, "CONTENT_POST_CREATE", {"body": body}, nonce)
    _assert_rejected(
        world.node.post("/v1/tx/submit", json=foreign), {"key_not_allowed"}, 403
    )


@FUZZ
@given(
    body=st.text(min_size=1, max_size=50),
    field=st.sampled_from(["body", "nonce", "tx_type", "signer"]),
)
def test_fuzz_signature_over_other_bytes(
    world: World, unchanged: None, body: str, field: str
) -> None:
    nonce = next_nonce(world.node, "@founder")
    document = envelope(
        world, world.founder, "CONTENT_POST_CREATE", {"body": body}, nonce
    )
    if field == "body":
        document["payload"] = {"body": body + "!"}
    elif field == "nonce":
        document["nonce"] = nonce + 1
    elif field == "tx_type":
        document["tx_type"] = "CONTENT_COMMENT_CREATE"
    else:
        document["signer"] = "@alice"
    _assert_rejected(
        world.node.post("/v1/tx/submit", json=document), {"bad_signature"}, 400
    )


@FUZZ
@given(items=st.lists(JSON_VALUES, min_size=0, max_size=5))
def test_fuzz_batch_bodies(world: World, unchanged: None, items: list[Any]) -> None:
    response = world.node.post("/v1/tx/batch", json={"envelopes": items})
    if not items:
        _assert_rejected(response, {"invalid_request"}, 400)
        return
    assert response.status_code == 200, response.text[:300]
    for result in response.json()["results"]:
        assert result["ok"] is False
        assert 400 <= result["http_status"] < 500
        assert result["error"]["code"] in SHAPE_CODES
