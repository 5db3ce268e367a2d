"""The follower-only part of the api: relayed writes.

Submissions (``POST /v1/tx/submit`` and ``/v1/tx/batch``) go to the upstream
unchanged, and its status and body come back unchanged, so a client sees the
producer's reply. Every read stays local.
"""

from __future__ import annotations

import orjson

from weall.api.proxy import IpAddress
from weall.errors import UpstreamError
from weall.follow.upstream import UpstreamClient

__all__ = ["forwarding_headers", "relay_submission"]


def forwarding_headers(client: IpAddress | None) -> dict[str, str]:
    """Name the submitting client in both forwarding headers a node may read.

    The upstream reads the one its ``WEALL_FORWARDED_HEADER`` names, and only
    when this follower's address is in its ``WEALL_TRUSTED_PROXIES``. Else it
    counts every relayed submission against the follower's own rate limit.
    """
    if client is None:
        return {}
    host = f'"[{client}]"' if client.version == 6 else str(client)
    return {"X-Forwarded-For": str(client), "Forwarded": f"for={host}"}


async def relay_submission(
    upstream: UpstreamClient, path: str, body: bytes, client: IpAddress | None = None
) -> tuple[int, bytes]:
    """POST ``body`` to the upstream's ``path``; return its status and JSON body.

    Raises:
        UpstreamError: the upstream is unreachable, or its reply is neither
            JSON nor a status a node sends (2xx, 4xx or 503).
    """
    status, reply = await upstream.post(path, body, headers=forwarding_headers(client))
    if not (200 <= status < 500 or status == 503):
        raise UpstreamError(f"POST {path} at {upstream.base_url}: HTTP {status}")
    try:
        document = orjson.loads(reply)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            f"POST {path} at {upstream.base_url}: the reply is not JSON"
        ) from None
    if not isinstance(document, dict):
        raise UpstreamError(
            f"POST {path} at {upstream.base_url}: the reply is not a JSON object"
        )
    return status, reply
