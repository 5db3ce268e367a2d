"""Transactions of a follower's own operator account, submitted to the upstream.

On a producer node the pinner sends ``system_tx`` requests to the producer,
which signs the ``IPFS_PIN_CONFIRM`` with the node key. A follower has no
producer key, so it signs with its own operator key (``WEALL_NODE_KEY_PATH``)
and submits through the upstream. ``IPFS_PIN_HEAL`` and a pin request on
another account's behalf are signed by the producer alone, so a follower
never submits either.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
import trio

from weall.errors import UpstreamError
from weall.follow.upstream import UpstreamClient
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

__all__ = ["OperatorSigner", "batch_results"]

log = logging.getLogger(__name__)

OWN_TX_TYPES: Final = ("IPFS_PIN_REQUEST", "IPFS_PIN_CONFIRM")
_NONCE_RETRY_CODES: Final = ("nonce_too_low", "nonce_conflict")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message, "details": {}}}


def batch_results(status: int, document: Any) -> dict[str, Any]:
    """Turn the upstream's ``/v1/tx/batch`` reply into the producer socket's ``submit`` reply."""
    if (
        status != 200
        or not isinstance(document, dict)
        or not isinstance(document.get("results"), list)
    ):
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return {"ok": False, "error": error}
        return _error("unavailable", f"the upstream returned HTTP {status} to a batch")
    results = []
    for result in document["results"]:
        entry = dict(result) if isinstance(result, dict) else {"ok": False}
        entry["http"] = entry.pop("http_status", 200 if entry.get("ok") else 400)
        results.append(entry)
    return {"ok": True, "results": results}


class OperatorSigner:
    """Signs and submits the operator account's transactions, one at a time.

    The next nonce is the larger of the upstream's committed ``next_nonce``
    and one past the last nonce this process had accepted, so several
    transactions can be pending at once.
    """

    def __init__(
        self, key: keys.KeyPair | None, chain_id: str, client: UpstreamClient
    ) -> None:
        self.key = key
        self.chain_id = chain_id
        self.client = client
        self._lock = trio.Lock()
        self._next_nonce = 0

    async def submit(self, tx_type: Any, payload: Any) -> dict[str, Any]:
        """Sign ``tx_type`` with ``payload`` and submit it; return the producer-style reply."""
        rejection = self._rejection(tx_type, payload)
        if rejection is not None:
            return rejection
        async with self._lock:
            try:
                result = await self._submit_once(tx_type, payload, refresh=False)
                code = result.get("error", {}).get("code")
                if code in _NONCE_RETRY_CODES:
                    result = await self._submit_once(tx_type, payload, refresh=True)
            except UpstreamError as exc:
                log.warning(
                    "operator transaction not submitted type=%s: %s", tx_type, exc
                )
                return _error("unavailable", f"the upstream is not reachable: {exc}")
        log.info(
            "operator transaction submitted type=%s tx_id=%s code=%s",
            tx_type,
            result.get("tx_id"),
            result.get("error", {}).get("code"),
        )
        return {"ok": True, "result": result}

    def _rejection(self, tx_type: Any, payload: Any) -> dict[str, Any] | None:
        """Return the error reply for a transaction this follower must not sign, else ``None``."""
        if tx_type == "IPFS_PIN_HEAL":
            return _error(
                "role_required",
                "IPFS_PIN_HEAL is signed by the producer only; "
                "a follower reports shortfalls in its logs",
            )
        if tx_type not in OWN_TX_TYPES or not isinstance(payload, dict):
            return _error(
                "invalid_request",
                f"system_tx: tx_type one of {list(OWN_TX_TYPES)} and a payload",
            )
        if "on_behalf_of" in payload:
            return _error(
                "role_required",
                "only the producer may request a pin on_behalf_of an account; through a "
                "follower node, the account submits IPFS_PIN_REQUEST itself",
            )
        if self.key is None or self.key.account is None:
            return _error(
                "unavailable",
                "this follower has no operator key with an account "
                "(WEALL_NODE_KEY_PATH)",
            )
        return None

    async def _submit_once(
        self, tx_type: str, payload: dict[str, Any], *, refresh: bool
    ) -> dict[str, Any]:
        """Sign with the next nonce (the committed one when ``refresh``) and submit once."""
        assert self.key is not None
        assert self.key.account is not None
        account = self.key.account
        status, document = await self.client.get_json(f"/v1/accounts/{account}")
        committed = (
            document.get("next_nonce")
            if status == 200 and isinstance(document, dict)
            else None
        )
        if not isinstance(committed, int):
            return _error("unknown_signer", f"the upstream has no account {account}")
        nonce = committed if refresh else max(committed, self._next_nonce)

        envelope = build_envelope(
            self.key,
            chain_id=self.chain_id,
            tx_type=tx_type,
            signer=account,
            nonce=nonce,
            payload=payload,
        )
        status, body = await self.client.post("/v1/tx/submit", orjson.dumps(envelope))

        try:
            result = orjson.loads(body)
        except orjson.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            return _error(
                "unavailable", f"the upstream returned HTTP {status} without JSON"
            )
        result["http"] = status
        if status in (200, 202):
            self._next_nonce = nonce + 1
        return result
