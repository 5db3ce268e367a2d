"""Text forms of ids, keys, signatures and hashes.

py-multibase 2.0.0 drops leading zero bytes in base58btc (both ways) and when
decoding base16, so base58btc goes through the ``base58`` package, which keeps
them. base32 and base64url go through the standard library's ``base64``,
which gives the same text as py-multibase and is hundreds of times faster. Every function here round-trips inputs that start with ``0x00``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from typing import Final

import base58

from weall.errors import EncodingError

__all__ = [
    "ACCOUNT_ID_RE",
    "ED25519_PUB_PREFIX",
    "b32_decode",
    "b32_encode",
    "b58_decode",
    "b58_encode",
    "b64url_decode",
    "b64url_encode",
    "decode_hash",
    "decode_pubkey",
    "decode_sig",
    "encode_hash",
    "encode_pubkey",
    "encode_sig",
    "hash_bytes",
    "is_account_id",
]

ACCOUNT_ID_RE: Final = re.compile(r"@[a-z0-9_]{3,32}")
ED25519_PUB_PREFIX: Final = b"\xed\x01"
_B32_ALPHABET: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_B64URL_ALPHABET: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
_B58_ALPHABET: Final = frozenset(base58.BITCOIN_ALPHABET.decode())


def is_account_id(value: object) -> bool:
    return isinstance(value, str) and ACCOUNT_ID_RE.fullmatch(value) is not None


def b58_encode(data: bytes) -> str:
    """Multibase base58btc (``z`` prefix)."""
    return "z" + base58.b58encode(data).decode("ascii")


def b58_decode(text: str) -> bytes:
    if not text.startswith("z"):
        raise ValueError("not multibase base58btc")
    body = text[1:]
    if not set(body) <= _B58_ALPHABET:
        raise ValueError("invalid base58btc character")
    return bytes(base58.b58decode(body.encode("ascii")))


def b32_encode(data: bytes) -> str:
    """Multibase base32 lower case without padding (``b`` prefix).

    The standard library's encoder gives the same text as py-multibase's
    and is far faster, and every tx id and block hash goes through here.
    """
    return "b" + base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32_decode(text: str) -> bytes:
    if not text.startswith("b") or not set(text[1:]) <= _B32_ALPHABET:
        raise ValueError("not multibase base32")
    body = text[1:].upper()
    try:
        decoded = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise ValueError(f"invalid base32: {exc}") from None
    if b32_encode(decoded) != text:
        raise ValueError("non-canonical base32")
    return decoded


def b64url_encode(data: bytes) -> str:
    """Multibase base64url without padding (``u`` prefix).

    The standard library gives the same text as py-multibase, hundreds of
    times faster, and every signature goes through here.
    """
    return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    if not text.startswith("u") or not set(text[1:]) <= _B64URL_ALPHABET:
        raise ValueError("not multibase base64url")
    body = text[1:]
    if len(body) % 4 == 1:
        raise ValueError("invalid base64url length")
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if b64url_encode(decoded) != text:
        raise ValueError("non-canonical base64url")
    return decoded


def hash_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` in the hash text form."""
    return b32_encode(hashlib.sha256(data).digest())


def encode_hash(digest: bytes) -> str:
    if len(digest) != 32:
        raise ValueError("a hash is 32 bytes")
    return b32_encode(digest)


def decode_hash(text: object, field: str = "hash") -> bytes:
    if not isinstance(text, str) or len(text) != 53:
        raise EncodingError("invalid_payload", f"{field}: not a hash (b + 52 chars)")
    try:
        digest = b32_decode(text)
    except ValueError as exc:
        raise EncodingError("invalid_payload", f"{field}: {exc}") from None
    if len(digest) != 32:
        raise EncodingError("invalid_payload", f"{field}: not 32 bytes")
    return digest


def encode_pubkey(raw: bytes) -> str:
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return b58_encode(ED25519_PUB_PREFIX + raw)


def decode_pubkey(text: object, code: str = "invalid_envelope") -> bytes:
    """Return the 32 raw key bytes of a ``z6Mk...`` public key."""
    if not isinstance(text, str) or not text.startswith("z6Mk") or len(text) > 60:
        raise EncodingError(code, "pubkey: not a z6Mk... Ed25519 key")
    return _decode_pubkey_cached(text, code)


# The same few keys sign most transactions, and base58 costs about 0.1 ms a
# key; a failure raises, so only valid keys are ever cached.
@functools.lru_cache(maxsize=65536)
def _decode_pubkey_cached(text: str, code: str) -> bytes:
    try:
        data = b58_decode(text)
    except ValueError as exc:
        raise EncodingError(code, f"pubkey: {exc}") from None
    if len(data) != 34 or not data.startswith(ED25519_PUB_PREFIX):
        raise EncodingError(code, "pubkey: not a 0xed01 multicodec Ed25519 key")
    if encode_pubkey(data[2:]) != text:
        raise EncodingError(code, "pubkey: non-canonical encoding")
    return data[2:]


def encode_sig(raw: bytes) -> str:
    if len(raw) != 64:
        raise ValueError("an Ed25519 signature is 64 bytes")
    return b64url_encode(raw)


def decode_sig(text: object, code: str = "invalid_envelope") -> bytes:
    if not isinstance(text, str) or len(text) != 87:
        raise EncodingError(code, "sig: not u + 86 base64url characters")
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise EncodingError(code, f"sig: {exc}") from None
    if len(raw) != 64:
        raise EncodingError(code, "sig: not 64 bytes")
    return raw
