"""Follower nodes: a verified copy of the chain, pulled from an upstream node.

A node with ``WEALL_UPSTREAM_URL`` set runs the follower actor in the
producer's place. It fetches blocks from the upstream's ``GET /v1/blocks``,
checks the genesis producer's signature, replays every transaction over its
own committed state and commits a block only when every state root and
receipts hash matches. It serves the same read routes and forwards
submissions to the upstream.

- ``upstream``: the HTTP client of the upstream (timeouts, retries).
- ``verify``: the checks of a served block, pure.
- ``sync``: the loop that fetches, verifies and commits.
- ``operator``: the operator account's own transactions.
- ``setup``: the first start, from the upstream's block 0.
"""

from __future__ import annotations

__all__: list[str] = []
