"""Text forms of keys, signatures, hashes and account ids.

The reference encoders below use only the standard library, so each encoder
of ``weall.protocol.encoding`` is checked against an independent
implementation as well as for round trips.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata

import multibase
import pytest
from hypothesis import given
from hypothesis import strategies as st

from weall.errors import EncodingError
from weall.protocol import encoding
from weall.protocol.keys import from_seed

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

LEADING_ZEROS = [
    pytest.param(b"\x00", id="one-zero"),
    pytest.param(b"\x00\x00\x00", id="only-zeros"),
    pytest.param(b"\x00\x00\x01\x02", id="zeros-then-data"),
    pytest.param(b"\x00" + bytes(range(1, 32)), id="32-bytes"),
    pytest.param(b"\x00" * 31 + b"\xff", id="31-zeros-ff"),
    pytest.param(b"\x00" * 64, id="64-zeros"),
]

CODECS = [
    pytest.param(encoding.b58_encode, encoding.b58_decode, id="base58btc"),
    pytest.param(encoding.b32_encode, encoding.b32_decode, id="base32"),
    pytest.param(encoding.b64url_encode, encoding.b64url_decode, id="base64url"),
]


def reference_b58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = B58_ALPHABET[rest] + digits
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "z" + "1" * zeros + digits


def reference_b32(data: bytes) -> str:
    return "b" + base64.b32encode(data).decode().lower().rstrip("=")


def reference_b64url(data: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- round trips with leading zero bytes -------------------------------------------


@pytest.mark.parametrize(("encode", "decode"), CODECS)
@pytest.mark.parametrize("data", LEADING_ZEROS)
def test_codec_round_trips_leading_zeros(encode, decode, data: bytes) -> None:
    assert decode(encode(data)) == data


@pytest.mark.parametrize(("encode", "decode"), CODECS)
def test_codec_round_trips_empty(encode, decode) -> None:
    assert decode(encode(b"")) == b""


@given(st.binary(max_size=80))
def test_b58_matches_reference(data: bytes) -> None:
    assert encoding.b58_encode(data) == reference_b58(data)


@given(st.binary(max_size=80))
def test_b32_matches_reference(data: bytes) -> None:
    assert encoding.b32_encode(data) == reference_b32(data)


@given(st.binary(max_size=80))
def test_b64url_matches_reference(data: bytes) -> None:
    assert encoding.b64url_encode(data) == reference_b64url(data)


@given(st.binary(max_size=80))
def test_codecs_round_trip_any_bytes(data: bytes) -> None:
    assert encoding.b58_decode(encoding.b58_encode(data)) == data
    assert encoding.b32_decode(encoding.b32_encode(data)) == data
    assert encoding.b64url_decode(encoding.b64url_encode(data)) == data


def test_b58_keeps_each_leading_zero() -> None:
    assert encoding.b58_encode(b"\x00\x00\x01") == "z112"


def test_pubkey_round_trips_leading_zero_key() -> None:
    raw = b"\x00\x00" + bytes(range(30))
    assert encoding.decode_pubkey(encoding.encode_pubkey(raw)) == raw


def test_sig_round_trips_leading_zeros() -> None:
    raw = b"\x00" * 8 + bytes(range(56))
    assert encoding.decode_sig(encoding.encode_sig(raw)) == raw


def test_hash_round_trips_leading_zeros() -> None:
    digest = b"\x00" * 4 + bytes(range(28))
    assert encoding.decode_hash(encoding.encode_hash(digest)) == digest


# -- the py-multibase fault that encoding.py works around --------------------------


def test_multibase_version_is_2_0_0() -> None:
    # The fault tests below describe this version, so revisit them on an upgrade.
    assert importlib.metadata.version("py-multibase") == "2.0.0"


def test_multibase_base58btc_encode_drops_zeros() -> None:
    encoded = bytes(multibase.encode("base58btc", b"\x00\x01"))
    assert encoded == b"z2", (
        "py-multibase keeps leading zeros now; b58_encode may use it"
    )


def test_multibase_base58btc_decode_drops_zeros() -> None:
    decoded = bytes(multibase.decode(b"z12"))
    assert decoded == b"\x01", (
        "py-multibase keeps leading zeros now; b58_decode may use it"
    )


def test_multibase_base16_decode_drops_zeros() -> None:
    decoded = bytes(multibase.decode(b"f0001"))
    assert decoded == b"\x01", "py-multibase base16 keeps leading zeros now"


@pytest.mark.parametrize("data", LEADING_ZEROS)
def test_multibase_base32_keeps_zeros(data: bytes) -> None:
    # encoding.py uses py-multibase for base32 and base64url, so both must keep zeros.
    assert bytes(multibase.decode(multibase.encode("base32", data))) == data


@pytest.mark.parametrize("data", LEADING_ZEROS)
def test_multibase_base64url_keeps_zeros(data: bytes) -> None:
    assert bytes(multibase.decode(multibase.encode("base64url", data))) == data


# -- text forms ----------------------------------------------------------------------


def test_pubkey_starts_with_z6mk() -> None:
    assert from_seed(bytes(32)).pubkey.startswith("z6Mk")


@given(st.binary(min_size=32, max_size=32))
def test_pubkey_form_for_any_key(raw: bytes) -> None:
    text = encoding.encode_pubkey(raw)
    assert text.startswith("z6Mk")
    assert len(text) == 48


def test_pubkey_is_multicodec_ed25519() -> None:
    raw = bytes(range(32))
    assert encoding.b58_decode(encoding.encode_pubkey(raw)) == b"\xed\x01" + raw


@given(st.binary(min_size=64, max_size=64))
def test_sig_form(raw: bytes) -> None:
    text = encoding.encode_sig(raw)
    assert text.startswith("u")
    assert len(text) == 87


@given(st.binary(max_size=200))
def test_hash_form(data: bytes) -> None:
    text = encoding.hash_bytes(data)
    assert text.startswith("b")
    assert len(text) == 53


def test_hash_bytes_known_answer() -> None:
    expected = reference_b32(hashlib.sha256(b"weall").digest())
    assert encoding.hash_bytes(b"weall") == expected


def test_hash_bytes_empty_known_answer() -> None:
    assert (
        encoding.hash_bytes(b"")
        == "b4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
    )


@pytest.mark.parametrize(
    ("function", "size"),
    [
        pytest.param(encoding.encode_pubkey, 31, id="pubkey-31"),
        pytest.param(encoding.encode_pubkey, 33, id="pubkey-33"),
        pytest.param(encoding.encode_sig, 63, id="sig-63"),
        pytest.param(encoding.encode_hash, 33, id="hash-33"),
    ],
)
def test_encoder_rejects_wrong_size(function, size: int) -> None:
    with pytest.raises(ValueError, match="bytes"):
        function(bytes(size))


# -- decoder rejections --------------------------------------------------------------


@pytest.mark.parametrize(
    ("decode", "text"),
    [
        pytest.param(encoding.b58_decode, "Z11", id="b58-prefix"),
        pytest.param(encoding.b58_decode, "z0OIl", id="b58-alphabet"),
        pytest.param(encoding.b32_decode, "BAA", id="b32-prefix"),
        pytest.param(encoding.b32_decode, "bAA", id="b32-upper"),
        pytest.param(encoding.b32_decode, "baa=", id="b32-padding"),
        pytest.param(encoding.b32_decode, "bab", id="b32-stray-bits"),
        pytest.param(encoding.b64url_decode, "mAA", id="b64-prefix"),
        pytest.param(encoding.b64url_decode, "uAA==", id="b64-padding"),
        pytest.param(encoding.b64url_decode, "uA+/", id="b64-standard-alphabet"),
        pytest.param(encoding.b64url_decode, "uAB", id="b64-stray-bits"),
    ],
)
def test_decoder_rejects(decode, text: str) -> None:
    with pytest.raises(ValueError, match="base58btc|base32|base64url"):
        decode(text)


def _pubkey_with(prefix: bytes, raw: bytes) -> str:
    return encoding.b58_encode(prefix + raw)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="not-a-string"),
        pytest.param("", id="empty"),
        pytest.param("z6Mk", id="prefix-only"),
        pytest.param(_pubkey_with(b"\xed\x01", bytes(31)), id="31-byte-key"),
        pytest.param(_pubkey_with(b"\xed\x01", bytes(33)), id="33-byte-key"),
        pytest.param(_pubkey_with(b"\xe7\x01", bytes(33)), id="secp256k1-codec"),
        pytest.param("z6Mk" + "0" * 44, id="bad-alphabet"),
        pytest.param("z6Mk" + "1" * 100, id="too-long"),
    ],
)
def test_decode_pubkey_rejects(text: object) -> None:
    with pytest.raises(EncodingError) as caught:
        encoding.decode_pubkey(text)
    assert caught.value.code == "invalid_envelope"


def test_decode_pubkey_uses_given_code() -> None:
    with pytest.raises(EncodingError) as caught:
        encoding.decode_pubkey("nope", code="invalid_payload")
    assert caught.value.code == "invalid_payload"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="not-a-string"),
        pytest.param("u" + "A" * 85, id="85-chars"),
        pytest.param("u" + "A" * 87, id="87-chars"),
        pytest.param("b" + "a" * 86, id="wrong-prefix"),
        pytest.param("u" + "A" * 85 + "B", id="stray-bits"),
        pytest.param("u" + "A" * 85 + "=", id="padding"),
    ],
)
def test_decode_sig_rejects(text: object) -> None:
    with pytest.raises(EncodingError) as caught:
        encoding.decode_sig(text)
    assert caught.value.code == "invalid_envelope"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="not-a-string"),
        pytest.param("b" + "a" * 51, id="51-chars"),
        pytest.param("b" + "a" * 53, id="53-chars"),
        pytest.param("B" + "A" * 52, id="upper-case"),
        pytest.param("z" + "a" * 52, id="wrong-prefix"),
        pytest.param("b" + "a" * 51 + "b", id="stray-bits"),
    ],
)
def test_decode_hash_rejects(text: object) -> None:
    with pytest.raises(EncodingError) as caught:
        encoding.decode_hash(text, "post_id")
    assert caught.value.code == "invalid_payload"
    assert "post_id" in caught.value.message


# -- account ids -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["@abc", "@a_1", "@" + "z" * 32, "@000", "@founder"])
def test_account_id_accepts(value: str) -> None:
    assert encoding.is_account_id(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("@ab", id="too-short"),
        pytest.param("@" + "a" * 33, id="too-long"),
        pytest.param("abc", id="no-at"),
        pytest.param("@Abc", id="upper-case"),
        pytest.param("@ab-c", id="dash"),
        pytest.param("@abc\n", id="trailing-newline"),
        pytest.param("@abc ", id="trailing-space"),
        pytest.param("@ábc", id="non-ascii"),
        pytest.param(None, id="none"),
        pytest.param(123, id="int"),
    ],
)
def test_account_id_rejects(value: object) -> None:
    assert not encoding.is_account_id(value)
