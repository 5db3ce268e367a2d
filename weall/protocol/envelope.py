"""The transaction envelope, its signing bytes and its id.

Signing bytes are ``weall/tx/v1`` and a newline, followed by the canonical
JSON of the envelope without ``sig``. The tx id is the hash of the signing
bytes, so it does not depend on the signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from weall.errors import EncodingError, ProtocolError, TxRejected
from weall.protocol import canonical
from weall.protocol.encoding import decode_pubkey, decode_sig, hash_bytes, is_account_id
from weall.protocol.keys import KeyPair, verify

__all__ = [
    "ENVELOPE_FIELDS",
    "MAX_ENVELOPE_BYTES",
    "MAX_NONCE",
    "Envelope",
    "build_envelope",
    "checked_envelope",
    "parse_envelope",
    "signing_bytes",
]

SIGNING_PREFIX: Final = b"weall/tx/v1\n"
ENVELOPE_FIELDS: Final = frozenset(
    {"chain_id", "tx_type", "signer", "nonce", "payload", "pubkey", "sig"}
)
_UNSIGNED_FIELDS: Final = tuple(sorted(ENVELOPE_FIELDS - {"sig"}))
MAX_ENVELOPE_BYTES: Final = 64 * 1024
MAX_NONCE: Final = canonical.MAX_SAFE_INT
MAX_TX_TYPE_CHARS: Final = 64


@dataclass(frozen=True)
class Envelope:
    """A structurally valid envelope; its signature is checked by ``verify_signature``."""

    chain_id: str
    tx_type: str
    signer: str
    nonce: int
    payload: dict[str, Any]
    pubkey: str
    sig: str | None
    tx_id: str
    # None when the envelope came from ``checked_envelope``; the signing bytes
    # are then encoded again on first use.
    signing_body: bytes | None = field(default=None, repr=False, compare=False)
    # The decoded signature, kept by ``parse_envelope`` for ``verify_signature``.
    sig_bytes: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def signing_bytes(self) -> bytes:
        if self.signing_body is None:
            unsigned = {
                "chain_id": self.chain_id,
                "tx_type": self.tx_type,
                "signer": self.signer,
                "nonce": self.nonce,
                "payload": self.payload,
                "pubkey": self.pubkey,
            }
            object.__setattr__(self, "signing_body", signing_bytes(unsigned))
        assert self.signing_body is not None
        return self.signing_body

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "chain_id": self.chain_id,
            "tx_type": self.tx_type,
            "signer": self.signer,
            "nonce": self.nonce,
            "payload": self.payload,
            "pubkey": self.pubkey,
        }
        if self.sig is not None:
            document["sig"] = self.sig
        return document

    def verify_signature(self) -> None:
        if self.sig is None:
            raise TxRejected("bad_signature", "sig is missing")
        raw_key = decode_pubkey(self.pubkey)
        raw_sig = self.sig_bytes if self.sig_bytes is not None else decode_sig(self.sig)
        if not verify(raw_key, self.signing_bytes, raw_sig):
            raise TxRejected(
                "bad_signature", "sig does not verify for pubkey over the signing bytes"
            )


def signing_bytes(unsigned: dict[str, Any], *, checked: bool = False) -> bytes:
    return SIGNING_PREFIX + canonical.dumps(unsigned, checked=checked)


def _invalid(message: str) -> TxRejected:
    return TxRejected("invalid_envelope", message)


def parse_envelope(
    document: Any, *, allow_unsigned: bool = False, checked: bool = False
) -> Envelope:
    """Check the shape of an already parsed envelope (no state, no signature check).

    ``checked`` means ``document`` came from ``canonical.loads_strict``, so
    its values are known to be canonical JSON and are not walked again.

    Raises:
        TxRejected: ``invalid_envelope``, ``unsupported_type`` (a well-formed
            tx_type that is not in the type table) or ``too_large``.
    """
    from weall.protocol.txtypes import TX_TYPES

    if not isinstance(document, dict):
        raise _invalid("envelope must be a JSON object")
    fields = set(document)
    required = ENVELOPE_FIELDS - ({"sig"} if allow_unsigned else set())
    if missing := sorted(required - fields):
        raise _invalid(f"missing fields: {', '.join(missing)}")
    if extra := sorted(fields - ENVELOPE_FIELDS):
        raise _invalid(f"unknown fields: {', '.join(extra)[:200]}")
    chain_id, tx_type, signer = (
        document["chain_id"],
        document["tx_type"],
        document["signer"],
    )
    nonce, payload, pubkey = document["nonce"], document["payload"], document["pubkey"]
    sig = document.get("sig")
    if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= 64:
        raise _invalid("chain_id must be a string of 1 to 64 characters")
    if not isinstance(tx_type, str) or not 1 <= len(tx_type) <= MAX_TX_TYPE_CHARS:
        raise _invalid(
            f"tx_type must be a string of 1 to {MAX_TX_TYPE_CHARS} characters"
        )
    if tx_type not in TX_TYPES:
        raise TxRejected(
            "unsupported_type",
            f"tx_type {tx_type!r} is not a type this node supports",
            {"tx_type": tx_type},
        )
    if not is_account_id(signer):
        raise _invalid("signer must be @ followed by 3 to 32 of [a-z0-9_]")
    if (
        isinstance(nonce, bool)
        or not isinstance(nonce, int)
        or not 0 <= nonce <= MAX_NONCE
    ):
        raise _invalid("nonce must be a non-negative integer")
    if not isinstance(payload, dict):
        raise _invalid("payload must be a JSON object")
    sig_bytes = None
    try:
        decode_pubkey(pubkey)
        if sig is not None or not allow_unsigned:
            sig_bytes = decode_sig(sig)
    except EncodingError as exc:
        raise _invalid(exc.message) from None
    unsigned = {k: document[k] for k in _UNSIGNED_FIELDS}
    try:
        body = signing_bytes(unsigned, checked=checked)
    except ProtocolError as exc:
        raise _invalid(f"not canonical JSON: {exc.message}") from None
    # The canonical envelope is the signing body without its prefix, plus
    # `"sig":"u...",` (6 + 2 + 87 + 1 bytes) when signed.
    size = len(body) - len(SIGNING_PREFIX) + (96 if sig is not None else 0)
    if size > MAX_ENVELOPE_BYTES:
        raise TxRejected(
            "too_large", f"canonical envelope exceeds {MAX_ENVELOPE_BYTES} bytes"
        )
    return Envelope(
        chain_id=chain_id,
        tx_type=tx_type,
        signer=signer,
        nonce=nonce,
        payload=payload,
        pubkey=pubkey,
        sig=sig,
        tx_id=hash_bytes(body),
        signing_body=body,
        sig_bytes=sig_bytes,
    )


def checked_envelope(document: dict[str, Any], tx_id: str) -> Envelope:
    """Rebuild an envelope that ``parse_envelope`` accepted elsewhere, with its tx id.

    For the producer, whose only clients (the node's own actors, over an
    owner-only socket) parsed and signature-checked each envelope and send its
    tx id along, so the canonical encoding and hash are not computed twice.
    Only the types are checked here: a wrong tx id from a faulty client would
    be stored as given.

    Raises:
        TxRejected: ``invalid_envelope`` when a field has the wrong type.
    """
    try:
        chain_id = document["chain_id"]
        tx_type = document["tx_type"]
        signer = document["signer"]
        nonce = document["nonce"]
        payload = document["payload"]
        pubkey = document["pubkey"]
        sig = document.get("sig")
    except (KeyError, TypeError):
        raise _invalid("checked envelope is missing a field") from None
    if not (
        isinstance(chain_id, str)
        and isinstance(tx_type, str)
        and isinstance(signer, str)
        and type(nonce) is int
        and isinstance(payload, dict)
        and isinstance(pubkey, str)
        and (sig is None or isinstance(sig, str))
        and isinstance(tx_id, str)
        and len(tx_id) == 53
        and len(document) <= len(ENVELOPE_FIELDS)
    ):
        raise _invalid("checked envelope has a field of the wrong type")
    from weall.protocol.txtypes import TX_TYPES

    if tx_type not in TX_TYPES:
        raise _invalid(f"unknown tx_type {tx_type[:64]!r}")
    return Envelope(
        chain_id=chain_id,
        tx_type=tx_type,
        signer=signer,
        nonce=nonce,
        payload=payload,
        pubkey=pubkey,
        sig=sig,
        tx_id=tx_id,
    )


def build_envelope(
    key: KeyPair,
    *,
    chain_id: str,
    tx_type: str,
    signer: str,
    nonce: int,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """Build and sign an envelope with ``key`` (the client side)."""
    unsigned = {
        "chain_id": chain_id,
        "tx_type": tx_type,
        "signer": signer,
        "nonce": nonce,
        "payload": payload,
        "pubkey": key.pubkey,
    }
    return {**unsigned, "sig": key.sign(signing_bytes(unsigned))}
