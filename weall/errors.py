"""Exceptions of the WeAll node.

::

    WeallError
    ├── ConfigError          a setting is missing or invalid; names the variable
    ├── StartupError         the node refuses to start (genesis, schema, lock, damage)
    ├── StorageError         SQLite failed underneath an operation
    │   └── StorageFullError the disk or filesystem is full
    ├── ClosedError          an object was used after close()
    ├── IpcError             the producer socket is unreachable or broke mid-request
    ├── UpstreamError        a follower's upstream node is unreachable or returned an error
    ├── UpstreamRejected     a follower found a block or answer of its upstream invalid
    ├── ProtocolError        a protocol rule failed; carries a stable ``code``
    │   ├── EncodingError    a key, signature, hash or JSON text is malformed
    │   └── TxRejected       admission or application of a transaction failed
    └── IpfsError            an IPFS backend operation failed; carries a stable ``code``

``ProtocolError.code`` values are the stable error codes of the HTTP API;
``docs/errors.md`` lists every one with its HTTP status.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "HTTP_STATUS",
    "ClosedError",
    "ConfigError",
    "EncodingError",
    "IpcError",
    "IpfsError",
    "ProtocolError",
    "StartupError",
    "StorageError",
    "StorageFullError",
    "TxRejected",
    "UpstreamError",
    "UpstreamRejected",
    "WeallError",
]


class WeallError(Exception):
    """Base class of every error the node raises on purpose."""


class ConfigError(WeallError):
    """A setting is missing or has a value outside what is allowed."""

    def __init__(self, variable: str, value: object, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"{variable}: {allowed} (got {value!r})")


class StartupError(WeallError):
    """The node must not start; the message says what was found and what to do."""


class StorageError(WeallError):
    """SQLite failed underneath an operation."""


class StorageFullError(StorageError):
    """The filesystem that holds the database has no space left."""


class ClosedError(WeallError):
    """An object was used after it was closed."""


class IpcError(WeallError):
    """The producer socket could not be reached or broke during a request."""


class UpstreamError(WeallError):
    """A follower's upstream node could not be reached, timed out or returned an error."""


class UpstreamRejected(WeallError):
    """A follower found what its upstream served invalid, so it stops following it.

    Attributes:
        height: the height of the first invalid block, or ``None`` when the
            upstream's chain identity (chain id, genesis) differs.
        reason: what failed, for logs and the follower's status.
    """

    def __init__(self, height: int | None, reason: str) -> None:
        self.height = height
        self.reason = reason
        where = "chain identity" if height is None else f"block {height}"
        super().__init__(f"{where}: {reason}")


class ProtocolError(WeallError):
    """A protocol rule failed.

    Attributes:
        code: the stable error code, as sent in the HTTP error body.
        details: JSON-compatible extra facts, for example ``unlock_at_ms``.
    """

    def __init__(
        self, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        self.code = code
        self.message = message
        self.details = details or {}
        super().__init__(f"{code}: {message}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


class EncodingError(ProtocolError):
    """A key, signature, hash or JSON text does not decode."""


class TxRejected(ProtocolError):
    """A transaction failed admission or its type rules."""


class IpfsError(WeallError):
    """An IPFS backend operation failed.

    ``code`` is one of:

    - ``ipfs_unavailable``: the daemon could not be reached, after retries;
    - ``ipfs_timeout``: the daemon accepted the call but did not reply in time;
    - ``ipfs_failed``: the daemon returned an error or a malformed reply;
    - ``not_found``: the content (``cid``) is not in the store, or the daemon
      did not find it within its ``timeout``;
    - ``invalid_cid``: the text is not a CID that the node can store;
    - ``invalid_block``: a stored block does not decode as dag-pb or UnixFS;
    - ``not_a_file``: the CID names a UnixFS directory or another non-file;
    - ``corrupt_block``: a stored block does not match its hash;
    - ``storage_full``: the filesystem of the local store has no space left.

    Attributes:
        code: the stable error code.
        message: what failed, with the values involved.
        cid: the CID concerned, when there is one.
    """

    def __init__(self, code: str, message: str, *, cid: str | None = None) -> None:
        self.code = code
        self.message = message
        self.cid = cid
        super().__init__(f"{code}: {message}")


# Stable error code -> HTTP status. Codes missing here answer 400.
HTTP_STATUS: Final[dict[str, int]] = {
    "invalid_json": 400,
    "invalid_envelope": 400,
    "invalid_payload": 400,
    "invalid_request": 400,
    "wrong_chain": 400,
    "bad_signature": 400,
    "nonce_too_low": 409,
    "nonce_too_high": 409,
    "nonce_conflict": 409,
    "account_exists": 409,
    "duplicate": 200,
    "unknown_signer": 404,
    "not_found": 404,
    "key_not_allowed": 403,
    "key_revoked": 409,
    "tier_required": 403,
    "role_required": 403,
    "not_assigned": 403,
    "economics_locked": 403,
    "forbidden": 403,
    "insufficient_jurors": 409,
    "insufficient_operators": 409,
    "conflict": 409,
    "insufficient_balance": 409,
    "reward_pool_empty": 409,
    "unsupported_type": 400,
    "session_invalid": 401,
    "session_expired": 401,
    "session_revoked": 401,
    "session_scope": 401,
    "session_replay": 401,
    "session_clock_skew": 401,
    "session_bad_signature": 401,
    "session_missing": 401,
    "too_large": 413,
    "request_timeout": 408,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "storage_full": 503,
    "unavailable": 503,
    "method_not_allowed": 405,
}
