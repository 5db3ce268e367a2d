"""Payload shape checks shared by the handlers; failures are ``invalid_payload``."""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.encoding import is_account_id

__all__ = [
    "CID_RE",
    "GROUP_ID_RE",
    "bump_counter",
    "expect_fields",
    "get_account_id",
    "get_bool",
    "get_cid",
    "get_int",
    "get_object_id",
    "get_text",
    "invalid",
    "not_found",
]

# CIDv1 in base32 as Kubo prints it with cid-version=1.
CID_RE: Final = re.compile(r"b[a-z2-7]{20,120}")
GROUP_ID_RE: Final = re.compile(r"[a-z0-9_-]{3,32}")
_HASH_RE: Final = re.compile(r"b[a-z2-7]{52}")
# C0 control characters other than tab (0x09) and newline (0x0a).
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f]")


def invalid(message: str, **details: Any) -> TxRejected:
    return TxRejected("invalid_payload", message, details or None)


def not_found(what: str, ident: str) -> TxRejected:
    return TxRejected("not_found", f"{what} {ident} not found", {"id": ident})


def expect_fields(
    payload: dict[str, Any],
    required: AbstractSet[str],
    optional: AbstractSet[str] = frozenset(),
) -> None:
    missing = sorted(required - payload.keys())
    if missing:
        raise invalid(f"payload is missing {', '.join(missing)}")
    extra = sorted(payload.keys() - required - optional)
    if extra:
        raise invalid(f"payload has unknown fields {', '.join(extra)[:200]}")


def get_text(
    payload: dict[str, Any], name: str, max_chars: int, *, allow_empty: bool = False
) -> str:
    value = payload.get(name)
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    if not allow_empty and not value.strip():
        raise invalid(f"{name} must not be empty")
    if len(value) > max_chars:
        raise invalid(f"{name} exceeds {max_chars} characters", max_chars=max_chars)
    if _CONTROL_RE.search(value):
        raise invalid(f"{name} contains control characters")
    return value


def get_int(payload: dict[str, Any], name: str, low: int, high: int) -> int:
    value = payload.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise invalid(f"{name} must be an integer in {low}..{high}")
    return value


def get_bool(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value


def get_account_id(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not is_account_id(value):
        raise invalid(f"{name} must be an account id")
    return str(value)


def get_object_id(payload: dict[str, Any], name: str) -> str:
    """An id of a post, comment, request, proposal, dispute or pin (a tx id)."""
    value = payload.get(name)
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise invalid(f"{name} must be an id (b followed by 52 base32 characters)")
    return value


def get_cid(value: Any, name: str) -> str:
    if not isinstance(value, str) or not CID_RE.fullmatch(value):
        raise invalid(f"{name} must be a CIDv1 in base32")
    return value


def bump_counter(state: Any, name: str, delta: int = 1) -> None:
    counter = state.get("counter", name) or {"n": 0}
    counter["n"] += delta
    state.put("counter", name, counter)
