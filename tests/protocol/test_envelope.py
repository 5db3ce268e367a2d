"""The transaction envelope: its shape, signing bytes, id, size and signature."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.signing
import pytest
from helpers import Chain, key_pair, sign_envelope

from weall.errors import EncodingError, TxRejected
from weall.protocol import canonical
from weall.protocol.encoding import b32_encode, decode_pubkey, decode_sig
from weall.protocol.envelope import (
    ENVELOPE_FIELDS,
    MAX_ENVELOPE_BYTES,
    build_envelope,
    checked_envelope,
    parse_envelope,
)
from weall.protocol.keys import from_seed

# Known-answer test vector: seed 00 01 .. 1f, CONTENT_POST_CREATE by @alice with nonce 7.
KAT_KEY = from_seed(bytes(range(32)), "@alice")
KAT_PUBKEY = "z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd"
KAT_SIGNING_BYTES = (
    b'weall/tx/v1\n{"chain_id":"weall-dev","nonce":7,"payload":{"body":"h\xc3\xa9llo"},'
    b'"pubkey":"z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd","signer":"@alice",'
    b'"tx_type":"CONTENT_POST_CREATE"}'
)
KAT_TX_ID = "bhknny7ybqmrzjgxyjv3ckvpvnzle4bdcswobh4xnxs7dj3lhdijq"
KAT_SIG = "usDCsh13HZWtNe63KG-yFSQyYnVchBpLPuRZM3S1JpKmyC6zeuAtit1mzMQQExVp4embVV39CmZgpAMqCV1IOBQ"


def kat_document() -> dict[str, Any]:
    return build_envelope(
        KAT_KEY,
        chain_id="weall-dev",
        tx_type="CONTENT_POST_CREATE",
        signer="@alice",
        nonce=7,
        payload={"body": "héllo"},
    )


def alice_document(**changes: Any) -> dict[str, Any]:
    document = sign_envelope("@alice", "CONTENT_POST_CREATE", {"body": "hi"}, 1)
    document.update(changes)
    return document


def rejection(document: Any, **options: Any) -> TxRejected:
    with pytest.raises(TxRejected) as caught:
        parse_envelope(document, **options)
    return caught.value


# -- known-answer test ----------------------------------------------------------------


def test_kat_pubkey() -> None:
    assert KAT_KEY.pubkey == KAT_PUBKEY


def test_kat_signing_bytes() -> None:
    assert parse_envelope(kat_document()).signing_bytes == KAT_SIGNING_BYTES


def test_kat_tx_id() -> None:
    assert parse_envelope(kat_document()).tx_id == KAT_TX_ID


def test_kat_tx_id_is_sha256_of_signing_bytes() -> None:
    assert b32_encode(hashlib.sha256(KAT_SIGNING_BYTES).digest()) == KAT_TX_ID


def test_kat_sig() -> None:
    assert kat_document()["sig"] == KAT_SIG


def test_kat_sig_verifies_with_nacl() -> None:
    verify_key = nacl.signing.VerifyKey(decode_pubkey(KAT_PUBKEY))
    assert (
        verify_key.verify(KAT_SIGNING_BYTES, decode_sig(KAT_SIG)) == KAT_SIGNING_BYTES
    )


def test_kat_verify_signature_passes() -> None:
    parse_envelope(kat_document()).verify_signature()


def test_tx_id_ignores_sig() -> None:
    unsigned = {k: v for k, v in kat_document().items() if k != "sig"}
    assert parse_envelope(unsigned, allow_unsigned=True).tx_id == KAT_TX_ID


def test_to_json_round_trips() -> None:
    env = parse_envelope(kat_document())
    assert env.to_json() == kat_document()


def test_signing_bytes_ignore_field_order() -> None:
    reordered = dict(reversed(list(kat_document().items())))
    assert parse_envelope(reordered).tx_id == KAT_TX_ID


# -- shape ---------------------------------------------------------------------------


def test_envelope_has_seven_fields() -> None:
    assert {
        "chain_id",
        "tx_type",
        "signer",
        "nonce",
        "payload",
        "pubkey",
        "sig",
    } == ENVELOPE_FIELDS


@pytest.mark.parametrize("field", sorted(ENVELOPE_FIELDS))
def test_envelope_rejects_missing_field(field: str) -> None:
    document = alice_document()
    del document[field]
    error = rejection(document)
    assert error.code == "invalid_envelope"
    assert field in error.message


@pytest.mark.parametrize("extra", ["id", "tx_id", "Sig", "timestamp"])
def test_envelope_rejects_extra_field(extra: str) -> None:
    error = rejection(alice_document(**{extra: 1}))
    assert error.code == "invalid_envelope"
    assert extra in error.message


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"chain_id": ""}, id="chain-empty"),
        pytest.param({"chain_id": "c" * 65}, id="chain-65"),
        pytest.param({"chain_id": 1}, id="chain-int"),
        pytest.param({"tx_type": None}, id="type-null"),
        pytest.param({"tx_type": ""}, id="type-empty"),
        pytest.param({"tx_type": "T" * 65}, id="type-65"),
        pytest.param({"tx_type": ["PROFILE_UPDATE"]}, id="type-list"),
        pytest.param({"signer": "alice"}, id="signer-no-at"),
        pytest.param({"signer": "@Al"}, id="signer-invalid"),
        pytest.param({"nonce": -1}, id="nonce-negative"),
        pytest.param({"nonce": True}, id="nonce-bool"),
        pytest.param({"nonce": "1"}, id="nonce-string"),
        pytest.param({"nonce": 1.0}, id="nonce-float"),
        pytest.param({"nonce": 2**53}, id="nonce-above-max"),
        pytest.param({"payload": []}, id="payload-array"),
        pytest.param({"payload": None}, id="payload-null"),
        pytest.param({"payload": {"body": 1.5}}, id="payload-float"),
        pytest.param({"payload": {"n": 2**60}}, id="payload-big-int"),
        pytest.param({"pubkey": "z6Mk"}, id="pubkey-short"),
        pytest.param({"pubkey": None}, id="pubkey-null"),
        pytest.param({"sig": "u" + "A" * 85}, id="sig-short"),
        pytest.param({"sig": None}, id="sig-null"),
        pytest.param({"sig": 5}, id="sig-int"),
    ],
)
def test_envelope_rejects_field_value(changes: dict[str, Any]) -> None:
    assert rejection(alice_document(**changes)).code == "invalid_envelope"


@pytest.mark.parametrize(
    "tx_type",
    ["NOPE", "content_post_create", "T" * 64, "ACCOUNT_REGISTER "],
    ids=["unknown", "lower-case", "64-chars", "trailing-space"],
)
def test_envelope_unknown_type_is_unsupported(tx_type: str) -> None:
    error = rejection(alice_document(tx_type=tx_type))
    assert error.code == "unsupported_type"
    assert error.details == {"tx_type": tx_type}
    assert error.http_status == 400


@pytest.mark.parametrize(
    "document", [None, [], "x", 5], ids=["null", "array", "string", "int"]
)
def test_envelope_rejects_non_object(document: Any) -> None:
    assert rejection(document).code == "invalid_envelope"


def test_envelope_accepts_max_nonce() -> None:
    document = sign_envelope("@alice", "PROFILE_UPDATE", {"bio": ""}, 2**53 - 1)
    assert parse_envelope(document).nonce == 2**53 - 1


# -- size ------------------------------------------------------------------------------


def sized_document(size: int, *, signed: bool = True) -> dict[str, Any]:
    """An envelope whose canonical JSON is exactly ``size`` bytes."""

    def build(body_chars: int) -> dict[str, Any]:
        document = sign_envelope(
            "@alice", "CONTENT_POST_CREATE", {"body": "x" * body_chars}, 1
        )
        if not signed:
            del document["sig"]
        return document

    overhead = len(canonical.dumps(build(0)))
    document = build(size - overhead)
    assert len(canonical.dumps(document)) == size
    return document


def test_size_limit_is_64_kib() -> None:
    assert MAX_ENVELOPE_BYTES == 65536


def test_size_limit_accepts_exactly_64_kib() -> None:
    assert parse_envelope(sized_document(MAX_ENVELOPE_BYTES)).nonce == 1


def test_size_limit_rejects_one_byte_more() -> None:
    assert rejection(sized_document(MAX_ENVELOPE_BYTES + 1)).code == "too_large"


def test_size_limit_counts_multibyte_characters() -> None:
    # 2 bytes of UTF-8 per character: 40,000 characters are 80,000 bytes.
    document = sign_envelope("@alice", "CONTENT_POST_CREATE", {"body": "é" * 40_000}, 1)
    assert rejection(document).code == "too_large"


def test_size_limit_unsigned_accepts_exactly_64_kib() -> None:
    document = sized_document(MAX_ENVELOPE_BYTES, signed=False)
    assert parse_envelope(document, allow_unsigned=True).sig is None


def test_size_limit_unsigned_rejects_one_byte_more() -> None:
    document = sized_document(MAX_ENVELOPE_BYTES + 1, signed=False)
    assert rejection(document, allow_unsigned=True).code == "too_large"


# -- signatures --------------------------------------------------------------------------


def verify_error(document: dict[str, Any], **options: Any) -> TxRejected:
    env = parse_envelope(document, **options)
    with pytest.raises(TxRejected) as caught:
        env.verify_signature()
    return caught.value


def test_signature_by_wrong_key() -> None:
    # Signed by @bob's key while naming @alice's key as pubkey.
    document = alice_document()
    document["sig"] = sign_envelope(
        "@alice", "CONTENT_POST_CREATE", {"body": "hi"}, 1, key=key_pair("@bob")
    )["sig"]
    assert verify_error(document).code == "bad_signature"


def test_signature_of_other_bytes() -> None:
    other = sign_envelope("@alice", "CONTENT_POST_CREATE", {"body": "other"}, 1)
    assert verify_error(alice_document(sig=other["sig"])).code == "bad_signature"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"nonce": 2}, id="nonce"),
        pytest.param({"payload": {"body": "hj"}}, id="payload"),
        pytest.param({"chain_id": "weall-other"}, id="chain-id"),
        pytest.param({"tx_type": "PROFILE_UPDATE"}, id="tx-type"),
        pytest.param({"signer": "@bob"}, id="signer"),
        pytest.param({"pubkey": key_pair("@bob").pubkey}, id="pubkey"),
    ],
)
def test_signature_covers_field(changes: dict[str, Any]) -> None:
    assert verify_error(alice_document(**changes)).code == "bad_signature"


def test_unsigned_rejected_by_default() -> None:
    document = alice_document()
    del document["sig"]
    assert rejection(document).code == "invalid_envelope"


def test_unsigned_parses_when_allowed() -> None:
    document = alice_document()
    del document["sig"]
    assert parse_envelope(document, allow_unsigned=True).sig is None


def test_unsigned_null_sig_parses_when_allowed() -> None:
    assert parse_envelope(alice_document(sig=None), allow_unsigned=True).sig is None


def test_unsigned_fails_signature_check() -> None:
    document = alice_document()
    del document["sig"]
    error = verify_error(document, allow_unsigned=True)
    assert error.code == "bad_signature"
    assert "missing" in error.message


def test_allow_unsigned_still_checks_a_given_sig() -> None:
    other = sign_envelope("@alice", "CONTENT_POST_CREATE", {"body": "other"}, 1)
    document = alice_document(sig=other["sig"])
    assert verify_error(document, allow_unsigned=True).code == "bad_signature"


def test_allow_unsigned_still_checks_sig_form() -> None:
    assert (
        rejection(alice_document(sig="uAA"), allow_unsigned=True).code
        == "invalid_envelope"
    )


# -- chain id ----------------------------------------------------------------------------


def test_wrong_chain_rejected_at_admission() -> None:
    chain = Chain()
    document = sign_envelope(
        "@alice", "CONTENT_POST_CREATE", {"body": "hi"}, 1, chain_id="weall-other"
    )
    env = parse_envelope(document)
    env.verify_signature()
    with pytest.raises(TxRejected) as caught:
        chain.admit(env)
    assert caught.value.code == "wrong_chain"


def test_duplicate_key_in_wire_text_is_invalid_json() -> None:
    text = canonical.dumps(alice_document()).replace(
        b'"nonce":1', b'"nonce":1,"nonce":2'
    )
    with pytest.raises(EncodingError) as caught:
        canonical.loads_strict(text)
    assert caught.value.code == "invalid_json"


# -- envelopes rebuilt from a checked document and its tx id ----------------------------


def test_checked_envelope_equals_parsed() -> None:
    document = kat_document()
    parsed = parse_envelope(document)
    rebuilt = checked_envelope(document, parsed.tx_id)
    assert rebuilt == parsed
    assert rebuilt.signing_bytes == KAT_SIGNING_BYTES
    rebuilt.verify_signature()


def test_checked_parse_skips_nothing_observable() -> None:
    document = kat_document()
    assert parse_envelope(document, checked=True) == parse_envelope(document)
    assert parse_envelope(document, checked=True).tx_id == KAT_TX_ID


@pytest.mark.parametrize(
    "changes",
    [
        {"nonce": "7"},
        {"nonce": True},
        {"payload": []},
        {"tx_type": "NO_SUCH_TYPE"},
        {"sig": 5},
        {"extra": 1},
    ],
    ids=[
        "nonce-text",
        "nonce-bool",
        "payload-list",
        "unknown-type",
        "sig-int",
        "extra",
    ],
)
def test_checked_envelope_rejects_wrong_types(changes: dict[str, Any]) -> None:
    document = {**kat_document(), **changes}
    with pytest.raises(TxRejected) as caught:
        checked_envelope(document, KAT_TX_ID)
    assert caught.value.code == "invalid_envelope"


def test_checked_envelope_rejects_malformed_tx_id() -> None:
    with pytest.raises(TxRejected):
        checked_envelope(kat_document(), "b123")
