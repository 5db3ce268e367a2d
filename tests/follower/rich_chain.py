"""A chain with an object of every kind, made through a live producer's api.

``write_rich_chain_files`` writes a genesis with three jurors and a tier-1
account. ``populate`` then signs real transactions with their keys, submits
them in batches to the producer and waits for each batch to commit. The
chain then holds:

- posts (one edited, one deleted), comments and a reply to a comment, a
  reaction, a follow and a profile;
- an approval group with members, pending requests and a group post;
- a governance proposal with three votes, closed, its parameter change
  applied;
- a dispute with its juror's vote, and a PoH request with its review;
- an upload whose pin the producer's own pinner confirmed.

``read_routes`` lists every read route of the api for those objects,
including each page of the cursor-paged routes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.e2e.node import Node
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .chain_builder import CHAIN_ID, BuiltChain, account_key, write_chain_files
from .support import upload_media, wait_for

__all__ = [
    "ACCOUNTS",
    "Objects",
    "RichChain",
    "paged_routes",
    "populate",
    "read_routes",
    "write_rich_chain_files",
]

# Genesis accounts besides @founder (a juror) and @node: two more jurors and
# an account at PoH tier 1, which may join groups but not post.
ACCOUNTS: Final = {
    "@alice": (2, ["juror"]),
    "@bob": (2, ["juror"]),
    "@carol": (1, []),
}
UPLOAD: Final = b"bytes of an upload that the producer's pinner confirms"
# A proposal needs two of its three votes, and it stays open long enough for
# them to commit before it closes.
PARAMS: Final = {"gov_quorum": 2}
VOTING_BLOCKS: Final = 6
FINAL: Final = ("committed", "rejected", "expired")


@dataclass
class Objects:
    """Ids of what ``populate`` created, and every transaction it committed."""

    posts: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    group: str = "readers"
    group_post: str = ""
    proposal: str = ""
    dispute: str = ""
    poh_request: str = ""
    pin: str = ""
    cid: str = ""
    tx_ids: list[str] = field(default_factory=list)


def write_rich_chain_files(workdir: Path) -> BuiltChain:
    """Write the genesis document and key files of the chain ``populate`` fills."""
    extra = [
        {
            "id": account,
            "pubkey": account_key(account).pubkey,
            "poh_tier": tier,
            "roles": roles,
            "balance": 0,
        }
        for account, (tier, roles) in ACCOUNTS.items()
    ]
    return write_chain_files(workdir, extra_accounts=extra, params=PARAMS)


class RichChain:
    """Signs with each account's next nonce and commits batches on one node."""

    def __init__(self, node: Node, chain: BuiltChain) -> None:
        self.node = node
        self.keys = {
            "@founder": chain.founder,
            "@node": chain.node,
            **{account: account_key(account) for account in ACCOUNTS},
            "@dave": keys.generate("@dave"),
        }
        self.nonces: dict[str, int] = {}
        self.objects = Objects()

    def envelope(
        self, account: str, tx_type: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        nonce = self.nonces.get(account)
        if nonce is None:
            response = self.node.get(f"/v1/accounts/{account}")
            nonce = int(response.json()["next_nonce"]) if response.is_success else 0
        self.nonces[account] = nonce + 1
        return build_envelope(
            self.keys[account],
            chain_id=CHAIN_ID,
            tx_type=tx_type,
            signer=account,
            nonce=nonce,
            payload=payload,
        )

    def commit(self, envelopes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit one batch, wait until each is committed with an ok receipt."""
        response = self.node.post("/v1/tx/batch", json={"envelopes": list(envelopes)})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        for result in results:
            assert result["http_status"] == 202, result
        return [self.wait_committed(result["tx_id"]) for result in results]

    def wait_committed(self, tx_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            response = self.node.get(f"/v1/tx/{tx_id}")
            document: dict[str, Any] = response.json()
            ok = response.status_code == 200 and document["status"] in FINAL
            return document if ok else None

        document = wait_for(final, condition=f"{tx_id} final")
        assert document["status"] == "committed", document
        assert document["receipt"]["ok"] is True, document
        self.objects.tx_ids.append(tx_id)
        receipt: dict[str, Any] = document["receipt"]
        return receipt


def _posts_and_group(chain: RichChain) -> None:
    objects = chain.objects
    receipts = chain.commit(
        [
            *(
                chain.envelope("@founder", "CONTENT_POST_CREATE", {"body": f"post {i}"})
                for i in range(6)
            ),
            chain.envelope("@alice", "CONTENT_POST_CREATE", {"body": "disputed"}),
            chain.envelope(
                "@founder",
                "GROUP_CREATE",
                {"group_id": objects.group, "name": "Readers", "policy": "approval"},
            ),
            chain.envelope("@dave", "ACCOUNT_REGISTER", {}),
            chain.envelope("@alice", "PROFILE_UPDATE", {"display_name": "Alice"}),
        ]
    )
    objects.posts = [receipt["post_id"] for receipt in receipts[:7]]


def _proposal(chain: RichChain) -> None:
    (receipt,) = chain.commit(
        [
            chain.envelope(
                "@founder",
                "GOV_PROPOSAL_CREATE",
                {
                    "title": "Longer posts",
                    "body": "Raise max_post_chars to 6000.",
                    "voting_blocks": VOTING_BLOCKS,
                    "action": {
                        "type": "param_change",
                        "key": "max_post_chars",
                        "value": 6000,
                    },
                },
            )
        ]
    )
    chain.objects.proposal = receipt["proposal_id"]


def _votes_comments_requests(chain: RichChain) -> None:
    objects = chain.objects
    first, disputed = objects.posts[0], objects.posts[6]
    receipts = chain.commit(
        [
            *(
                chain.envelope(
                    account,
                    "GOV_VOTE_CAST",
                    {"proposal_id": objects.proposal, "choice": choice},
                )
                for account, choice in (
                    ("@founder", "yes"),
                    ("@alice", "yes"),
                    ("@bob", "no"),
                )
            ),
            *(
                chain.envelope(
                    account,
                    "CONTENT_COMMENT_CREATE",
                    {"parent_id": first, "body": f"comment {i} by {account}"},
                )
                for i, account in enumerate(("@bob", "@alice", "@bob", "@founder"))
            ),
            chain.envelope(
                "@alice", "GROUP_MEMBERSHIP_REQUEST", {"group_id": objects.group}
            ),
            chain.envelope(
                "@carol", "GROUP_MEMBERSHIP_REQUEST", {"group_id": objects.group}
            ),
            chain.envelope(
                "@bob", "DISPUTE_OPEN", {"target_id": disputed, "reason": "spam"}
            ),
            chain.envelope(
                "@dave",
                "POH_ASYNC_REQUEST_OPEN",
                {
                    "evidence_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
                },
            ),
            chain.envelope(
                "@bob", "CONTENT_REACTION_SET", {"target_id": first, "reaction": "like"}
            ),
            chain.envelope(
                "@carol", "FOLLOW_SET", {"target": "@founder", "following": True}
            ),
            chain.envelope(
                "@founder",
                "CONTENT_POST_EDIT",
                {"post_id": objects.posts[1], "body": "post 1, edited"},
            ),
            chain.envelope(
                "@founder", "CONTENT_POST_DELETE", {"post_id": objects.posts[2]}
            ),
        ]
    )
    objects.comments = [receipt["comment_id"] for receipt in receipts[3:7]]
    objects.dispute = receipts[9]["dispute_id"]
    objects.poh_request = receipts[10]["request_id"]


def _decisions(chain: RichChain) -> None:
    objects = chain.objects
    dispute = chain.node.get(f"/v1/disputes/{objects.dispute}").json()
    request = chain.node.get(f"/v1/poh/requests/{objects.poh_request}").json()
    receipts = chain.commit(
        [
            chain.envelope(
                "@founder",
                "GROUP_MEMBERSHIP_DECIDE",
                {"group_id": objects.group, "account": "@alice", "approve": True},
            ),
            chain.envelope(
                dispute["jurors"][0],
                "DISPUTE_VOTE_SUBMIT",
                {"dispute_id": objects.dispute, "verdict": "uphold"},
            ),
            chain.envelope(
                request["jurors"][0],
                "POH_REVIEW_SUBMIT",
                {"request_id": objects.poh_request, "verdict": "approve"},
            ),
            chain.envelope(
                "@alice",
                "CONTENT_COMMENT_CREATE",
                {"parent_id": objects.comments[0], "body": "a reply to comment 0"},
            ),
        ]
    )
    objects.comments.append(receipts[3]["comment_id"])
    # Tier 1 now, so @dave may ask to join; his request stays pending.
    (group_post, _) = chain.commit(
        [
            chain.envelope(
                "@alice",
                "CONTENT_POST_CREATE",
                {"body": "inside the group", "group_id": objects.group},
            ),
            chain.envelope(
                "@dave", "GROUP_MEMBERSHIP_REQUEST", {"group_id": objects.group}
            ),
        ]
    )
    objects.group_post = group_post["post_id"]


def _upload(chain: RichChain) -> None:
    """Upload bytes to the producer; its pin request and its pinner's confirmation commit."""
    objects = chain.objects
    session = keys.generate()
    chain.commit(
        [
            chain.envelope(
                "@founder",
                "ACCOUNT_SESSION_KEY_ISSUE",
                {
                    "pubkey": session.pubkey,
                    "scope": ["IPFS_PIN_REQUEST"],
                    "expires_at_ms": int(time.time() * 1000) + 3_600_000,
                },
            )
        ]
    )
    upload = upload_media(chain.node, session, UPLOAD)
    objects.cid = upload["cid"]
    objects.pin = upload["pin_request_tx_id"]
    chain.wait_committed(objects.pin)

    def confirmed() -> bool:
        pin = chain.node.get(f"/v1/pins/{objects.pin}").json()
        return all(
            target["confirmation"] and target["confirmation"]["ok"]
            for target in pin["targets"]
        )

    wait_for(confirmed, condition="the producer's pinner confirms the upload's pin")


def _close_proposal(chain: RichChain) -> None:
    """Commit posts until the proposal's close height has passed."""
    proposal = chain.objects.proposal
    for number in range(VOTING_BLOCKS + 2):
        status = chain.node.get(f"/v1/gov/proposals/{proposal}").json()["status"]
        if status != "open":
            return
        (receipt,) = chain.commit(
            [
                chain.envelope(
                    "@bob", "CONTENT_POST_CREATE", {"body": f"filler {number}"}
                )
            ]
        )
        chain.objects.posts.append(receipt["post_id"])
    raise AssertionError(f"proposal {proposal} still open")


def populate(node: Node, chain: BuiltChain) -> Objects:
    """Create every object on the producer ``node`` of ``chain``; return their ids."""
    rich = RichChain(node, chain)
    _posts_and_group(rich)
    _proposal(rich)
    _votes_comments_requests(rich)
    _decisions(rich)
    _upload(rich)
    _close_proposal(rich)
    return rich.objects


def paged_routes(
    node: Node, first: str, *, field_name: str = "next_cursor"
) -> list[str]:
    """Follow ``first`` and its cursors on ``node``; return the URL of every page."""
    routes = [first]
    separator = "&" if "?" in first else "?"
    while True:
        cursor = node.get(routes[-1]).json().get(field_name)
        if cursor is None:
            return routes
        assert len(routes) < 100, f"more than 100 pages from {first}"
        routes.append(f"{first}{separator}cursor={cursor}")


def read_routes(node: Node, objects: Objects, accounts: Sequence[str]) -> list[str]:
    """Every read route of the api for ``objects``, paged routes page by page.

    ``node`` (the producer) gives the cursors of each page and the height.
    """
    head = int(node.get("/v1/chain/head").json()["height"])
    routes = [
        "/v1/chain/head",
        "/v1/state/snapshot",
        "/openapi.json",
        "/v1/blocks?from=0&limit=100",
        *(f"/v1/blocks?from={start}&limit=3" for start in range(0, head + 1, 3)),
        *(f"/v1/blocks/{height}" for height in range(head + 1)),
        *(f"/v1/tx/{tx_id}" for tx_id in objects.tx_ids),
        *(f"/v1/accounts/{account}" for account in accounts),
        *(f"/v1/accounts/{account}/posts" for account in accounts),
        *paged_routes(node, "/v1/feed?limit=2"),
        *paged_routes(node, "/v1/accounts/@founder/posts?limit=2"),
        *(f"/v1/content/{item}" for item in objects.posts + objects.comments),
        *paged_routes(node, f"/v1/content/{objects.posts[0]}?limit=2"),
        f"/v1/content/{objects.group_post}",
        f"/v1/groups/{objects.group}",
        f"/v1/groups/{objects.group}?limit=1",
        f"/v1/gov/proposals/{objects.proposal}",
        f"/v1/disputes/{objects.dispute}",
        f"/v1/poh/requests/{objects.poh_request}",
        f"/v1/pins/{objects.pin}",
        f"/v1/media/{objects.cid}/status",
        "/v1/operators/@node/pins",
        *paged_routes(node, "/v1/operators/@node/pins?limit=1"),
    ]
    return routes
