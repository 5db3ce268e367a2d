"""A pinner's view of a node it reaches over HTTP (``WEALL_PINNER_NODE_URL``).

A pinner that runs on its own machine, with its own operator key and IPFS
store, reads its assignments from ``GET /v1/operators/{id}/pins``, fetches
content from ``GET /v1/media/{cid}``, and signs its ``IPFS_PIN_CONFIRM``
transactions with its key and submits them to ``POST /v1/tx/submit``.

Every call is one attempt with a timeout: the pinner's loop retries with its
own backoff, so a node that restarts is only a pause.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import httpx
import orjson
import trio

from weall.media.chain import MAX_PINS_PAGE, Assignments, SourceError
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

__all__ = ["HttpPinSource", "NodeClient"]

log = logging.getLogger(__name__)

TIMEOUT_S: Final = 30.0
# Content transfers may be long; this bounds each read, not the whole body.
MEDIA_READ_TIMEOUT_S: Final = 120.0
# The producer admits nonces up to next + 63, so a signer never needs to
# probe further than that past the committed next nonce.
MAX_NONCE_PROBES: Final = 64


class NodeClient:
    """One node's HTTP API, as the standalone pinner calls it."""

    def __init__(self, base_url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: proxy variables must not send the calls elsewhere.
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, trust_env=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """Send one request and return the status and the decoded JSON body.

        Raises:
            SourceError: the node could not be reached, timed out, or sent no JSON.
        """
        content = None if body is None else orjson.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        try:
            response = await self._client.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise SourceError(
                f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise SourceError(
                f"{method} {self.base_url}{path}: HTTP {response.status_code} without a JSON body"
            ) from None
        return response.status_code, document

    async def chain_id(self) -> str:
        status, document = await self.request_json("GET", "/v1/state/snapshot")
        chain_id = document.get("chain_id") if isinstance(document, dict) else None
        if status != 200 or not isinstance(chain_id, str):
            raise SourceError(
                f"GET /v1/state/snapshot returned HTTP {status} without a chain id"
            )
        return chain_id

    async def next_nonce(self, account: str) -> int | None:
        """Return the committed next nonce of ``account``, or ``None`` when it does not exist."""
        status, document = await self.request_json(
            "GET", f"/v1/accounts/{quote(account)}"
        )
        if status == 404:
            return None
        nonce = document.get("next_nonce") if isinstance(document, dict) else None
        if status != 200 or not isinstance(nonce, int):
            raise SourceError(f"GET /v1/accounts/{account} returned HTTP {status}")
        return nonce

    async def operator_pins(self, operator: str) -> Assignments:
        """Read every page of ``GET /v1/operators/{operator}/pins``.

        The pages may come from different heights; a pin that moves between
        pages meanwhile shows up at the next poll.
        """
        pins: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": MAX_PINS_PAGE}
        path = f"/v1/operators/{quote(operator)}/pins"
        while True:
            status, page = await self.request_json("GET", path, params=params)
            if status == 404:
                return Assignments(height=0, exists=False, active=False)
            if (
                status != 200
                or not isinstance(page, dict)
                or not isinstance(page.get("pins"), list)
            ):
                raise SourceError(f"GET {path} returned HTTP {status}")
            pins.extend(page["pins"])
            if page.get("next_cursor") is None:
                return Assignments(
                    height=int(page["height"]),
                    exists=True,
                    active=bool(page["active"]),
                    pins=pins,
                )
            params = {"limit": MAX_PINS_PAGE, "cursor": page["next_cursor"]}

    async def tx_status(self, tx_id: str) -> str | None:
        status, document = await self.request_json("GET", f"/v1/tx/{quote(tx_id)}")
        if status == 404:
            return None
        if status != 200 or not isinstance(document, dict):
            raise SourceError(f"GET /v1/tx/{tx_id} returned HTTP {status}")
        return str(document.get("status"))

    @asynccontextmanager
    async def open_media(self, cid: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream ``GET /v1/media/{cid}``.

        Raises:
            SourceError: the node does not have the content or could not send it.
        """
        timeout = httpx.Timeout(TIMEOUT_S, read=MEDIA_READ_TIMEOUT_S)
        try:
            async with self._client.stream(
                "GET", f"/v1/media/{quote(cid)}", timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise SourceError(
                        f"GET /v1/media/{cid} returned HTTP {response.status_code}: "
                        f"{response.text[:200]}"
                    )
                yield response.aiter_bytes()
        except httpx.HTTPError as exc:
            raise SourceError(
                f"GET /v1/media/{cid}: {type(exc).__name__}: {exc}"
            ) from exc


class HttpPinSource:
    """The pinner's view of a node over HTTP, signing with the operator's own key.

    The next nonce is the larger of the node's committed ``next_nonce`` and
    one past the last nonce this process had accepted, so several
    confirmations can be pending at once. A ``nonce_conflict`` (a pending
    transaction from an earlier run of this pinner holds the nonce) moves on
    to the next nonce, at most ``MAX_NONCE_PROBES`` times.
    """

    def __init__(
        self,
        client: NodeClient,
        key: keys.KeyPair,
        *,
        expected_chain_id: str | None = None,
    ) -> None:
        if key.account is None:
            raise ValueError("the operator key must name its account")
        self.client = client
        self.key = key
        self.account: str = key.account
        self.expected_chain_id = expected_chain_id
        self._chain_id: str | None = None
        self._lock = trio.Lock()
        self._next_nonce = 0

    async def chain_id(self) -> str:
        """Return the node's chain id, read once.

        Raises:
            SourceError: the node is unreachable, or its chain is not
                ``expected_chain_id``, in which case nothing is ever signed.
        """
        if self._chain_id is None:
            chain_id = await self.client.chain_id()
            if (
                self.expected_chain_id is not None
                and chain_id != self.expected_chain_id
            ):
                raise SourceError(
                    f"the node at {self.client.base_url} runs chain {chain_id!r}, "
                    f"not WEALL_CHAIN_ID={self.expected_chain_id!r}"
                )
            self._chain_id = chain_id
        return self._chain_id

    async def assignments(self, operator: str) -> Assignments:
        return await self.client.operator_pins(operator)

    async def tx_status(self, tx_id: str) -> str | None:
        return await self.client.tx_status(tx_id)

    def open_media(self, cid: str) -> Any:
        return self.client.open_media(cid)

    async def confirm(self, pin_id: str, ok: bool) -> dict[str, Any]:
        async with self._lock:
            return await self._submit("IPFS_PIN_CONFIRM", {"pin_id": pin_id, "ok": ok})

    async def _submit(self, tx_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        chain_id = await self.chain_id()
        committed = await self.client.next_nonce(self.account)
        if committed is None:
            raise SourceError(f"the node has no account {self.account}")
        nonce = max(committed, self._next_nonce)
        result: dict[str, Any] = {}
        for _ in range(MAX_NONCE_PROBES):
            envelope = build_envelope(
                self.key,
                chain_id=chain_id,
                tx_type=tx_type,
                signer=self.account,
                nonce=nonce,
                payload=payload,
            )
            status, document = await self.client.request_json(
                "POST", "/v1/tx/submit", body=envelope
            )
            result = document if isinstance(document, dict) else {"ok": False}
            code = (result.get("error") or {}).get("code")
            if status in (200, 202):
                self._next_nonce = nonce + 1
                return result
            if code == "nonce_conflict":
                nonce += 1
            elif code == "nonce_too_low":
                nonce = max(nonce + 1, await self.client.next_nonce(self.account) or 0)
            else:
                return result
        return result
