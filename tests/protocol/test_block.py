"""Block headers, hashes, signatures, receipts hashes and state roots."""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import nacl.signing
import pytest
from helpers import GENESIS_TIME_MS, PRODUCER_ID, Chain, key_pair

import weall.protocol.rules as rules
from weall.protocol import canonical
from weall.protocol.block import (
    END_BLOCK_HOOKS,
    HEADER_FIELDS,
    block_hash,
    build_block,
    receipts_hash,
    verify_block_signature,
)
from weall.protocol.encoding import b32_encode, decode_pubkey, decode_sig
from weall.protocol.genesis import genesis_hash
from weall.protocol.rules import END_BLOCK_ORDER
from weall.protocol.state import next_state_root


def sha256_text(data: bytes) -> str:
    return b32_encode(hashlib.sha256(data).digest())


def busy_chain() -> Chain:
    """A chain of four blocks with posts, comments, follows, a failure and an empty block."""
    chain = Chain()
    post_id = chain.ok("@alice", "CONTENT_POST_CREATE", {"body": "first"})["post_id"]
    chain.block(
        chain.tx(
            "@bob", "CONTENT_COMMENT_CREATE", {"parent_id": post_id, "body": "re"}
        ),
        chain.tx("@carol", "FOLLOW_SET", {"target": "@alice", "following": True}),
        chain.tx("@erin", "ACCOUNT_REGISTER", {}),
        chain.tx("@dave", "PROFILE_UPDATE", {}),  # fails: sets no field
    )
    chain.block()
    chain.block(
        chain.tx("@alice", "CONTENT_POST_EDIT", {"post_id": post_id, "body": "edited"}),
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": "like"}
        ),
    )
    return chain


# -- genesis block ------------------------------------------------------------------------


def test_genesis_block_height_0() -> None:
    assert Chain().genesis.header["height"] == 0


def test_genesis_block_prev_hash_is_genesis_hash() -> None:
    chain = Chain()
    assert chain.genesis.header["prev_hash"] == genesis_hash(chain.document)


def test_genesis_hash_is_hash_of_canonical_document() -> None:
    chain = Chain()
    assert genesis_hash(chain.document) == sha256_text(canonical.dumps(chain.document))


def test_genesis_block_fields() -> None:
    header = Chain().genesis.header
    assert header["timestamp_ms"] == GENESIS_TIME_MS
    assert header["tx_ids"] == []
    assert header["producer"] == key_pair(PRODUCER_ID).pubkey
    assert header["receipts_hash"] == sha256_text(b"[]")


def test_genesis_block_state_root() -> None:
    chain = Chain()
    expected = next_state_root(
        genesis_hash(chain.document), chain.genesis.state.changes()
    )
    assert chain.genesis.header["state_root"] == expected


def test_genesis_block_signature_verifies() -> None:
    genesis = Chain().genesis
    assert verify_block_signature(genesis.header, genesis.sig)


def test_genesis_state_root_depends_on_document() -> None:
    first = Chain().genesis.header["state_root"]
    other = Chain(genesis_time_ms=GENESIS_TIME_MS + 1).genesis.header["state_root"]
    assert first != other


# -- header, hash and signature ---------------------------------------------------------------


def test_header_fields() -> None:
    chain = Chain()
    header = chain.block().header
    assert tuple(header) == HEADER_FIELDS


def test_header_links_previous() -> None:
    chain = Chain()
    first = chain.block()
    second = chain.block()
    assert second.header["prev_hash"] == first.hash
    assert second.header["height"] == 2
    assert first.header["prev_hash"] == chain.genesis.hash


def test_block_hash_known_bytes() -> None:
    result = Chain().block()
    expected = sha256_text(b"weall/block/v1\n" + canonical.dumps(result.header))
    assert result.hash == expected


def test_block_hash_function_matches() -> None:
    result = Chain().block()
    assert block_hash(result.header) == result.hash


def test_block_signature_verifies_with_nacl() -> None:
    result = Chain().block()
    message = b"weall/block/v1\n" + canonical.dumps(result.header)
    verify_key = nacl.signing.VerifyKey(decode_pubkey(result.header["producer"]))
    assert verify_key.verify(message, decode_sig(result.sig)) == message


def test_block_signature_verifies() -> None:
    result = Chain().block()
    assert verify_block_signature(result.header, result.sig)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("height", 7),
        ("timestamp_ms", GENESIS_TIME_MS + 5),
        ("state_root", "b" + "a" * 52),
        ("tx_ids", ["b" + "a" * 52]),
        ("chain_id", "weall-other"),
    ],
)
def test_block_signature_covers_field(field: str, value: Any) -> None:
    result = Chain().block()
    tampered = {**result.header, field: value}
    assert not verify_block_signature(tampered, result.sig)


def test_block_signature_by_other_key_fails() -> None:
    result = Chain().block()
    tampered = {**result.header, "producer": key_pair("@alice").pubkey}
    assert not verify_block_signature(tampered, result.sig)


@pytest.mark.parametrize("sig", ["", "u", "uAA", "x" * 87])
def test_block_signature_malformed_is_false(sig: str) -> None:
    assert not verify_block_signature(Chain().block().header, sig)


def test_unsigned_build_same_hash() -> None:
    chain = Chain()
    signed_result = build_block(
        chain.state,
        chain.head,
        [],
        timestamp_ms=chain.now_ms,
        genesis=chain.info,
        producer_pubkey=chain.producer_key.pubkey,
        sign=chain.producer_key.sign,
    )
    unsigned = build_block(
        chain.state,
        chain.head,
        [],
        timestamp_ms=chain.now_ms,
        genesis=chain.info,
        producer_pubkey=chain.producer_key.pubkey,
        sign=None,
    )
    assert unsigned.sig == ""
    assert unsigned.hash == signed_result.hash


@pytest.mark.parametrize("offset", [0, -1], ids=["equal", "earlier"])
def test_timestamp_must_increase(offset: int) -> None:
    chain = Chain()
    with pytest.raises(ValueError, match="timestamp"):
        chain.block(timestamp_ms=chain.head["timestamp_ms"] + offset)


# -- receipts and tx ids ----------------------------------------------------------------------


def test_tx_ids_in_order() -> None:
    chain = Chain()
    envs = [
        chain.tx("@bob", "PROFILE_UPDATE", {"bio": "b"}),
        chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"}),
    ]
    assert chain.block(*envs).header["tx_ids"] == [env.tx_id for env in envs]


def test_receipts_hash_known_bytes() -> None:
    chain = Chain()
    result = chain.block(
        chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"}),
        chain.tx("@bob", "PROFILE_UPDATE", {}),
    )
    assert result.header["receipts_hash"] == sha256_text(
        canonical.dumps(result.receipts)
    )


def test_receipts_hash_function_matches() -> None:
    receipts = [
        {"ok": True, "post_id": "b" + "a" * 52},
        {"ok": False, "code": "conflict"},
    ]
    assert receipts_hash(receipts) == sha256_text(canonical.dumps(receipts))


def test_receipts_hash_covers_failures() -> None:
    ok = receipts_hash([{"ok": True}])
    assert ok != receipts_hash([{"ok": False, "code": "conflict", "message": "x"}])


def test_receipts_in_order() -> None:
    chain = Chain()
    result = chain.block(
        chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"}),
        chain.tx("@bob", "PROFILE_UPDATE", {}),
    )
    assert [r["ok"] for r in result.receipts] == [True, False]


# -- state roots ---------------------------------------------------------------------------------


def test_state_root_chains_from_previous() -> None:
    chain = Chain()
    prev_root = chain.head["state_root"]
    result = chain.block(chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"}))
    assert result.header["state_root"] == next_state_root(
        prev_root, result.state.changes()
    )


def test_state_root_covers_only_changed_entries() -> None:
    chain = Chain()
    result = chain.block(chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"}))
    assert [(kind, key) for kind, key, _ in result.state.changes()] == [
        ("account", "@alice")
    ]


def test_empty_block_state_root() -> None:
    chain = Chain()
    prev_root = chain.head["state_root"]
    result = chain.block()
    assert result.header["tx_ids"] == []
    assert result.header["state_root"] == next_state_root(
        prev_root, result.state.changes()
    )


def test_replay_reproduces_every_header() -> None:
    chain = busy_chain()
    original = [chain.genesis.header] + [result.header for result, _ in chain.blocks]
    assert chain.replay() == original


def test_replay_reproduces_every_root() -> None:
    chain = busy_chain()
    roots = [chain.genesis.header["state_root"]] + [
        r.header["state_root"] for r, _ in chain.blocks
    ]
    assert [header["state_root"] for header in chain.replay()] == roots


def test_build_is_deterministic() -> None:
    chain = busy_chain()
    other = busy_chain()
    assert other.state.entries == chain.state.entries


def test_roots_differ_per_block() -> None:
    chain = busy_chain()
    roots = [r.header["state_root"] for r, _ in chain.blocks]
    assert len(set(roots)) == len(roots)


def _two_block_chain(bio: str) -> Chain:
    chain = Chain()
    chain.block(chain.tx("@alice", "PROFILE_UPDATE", {"bio": bio}))
    chain.block(chain.tx("@bob", "PROFILE_UPDATE", {"bio": "same"}))
    return chain


def test_changed_tx_changes_root() -> None:
    first = _two_block_chain("one")
    second = _two_block_chain("two")
    assert (
        first.blocks[0][0].header["state_root"]
        != second.blocks[0][0].header["state_root"]
    )


def test_changed_tx_changes_later_roots() -> None:
    first = _two_block_chain("one")
    second = _two_block_chain("two")
    assert (
        first.blocks[1][0].header["state_root"]
        != second.blocks[1][0].header["state_root"]
    )


def test_failed_tx_changes_root() -> None:
    # Its nonce is consumed, which is a state change like any other.
    with_failure = Chain()
    with_failure.block(with_failure.tx("@alice", "PROFILE_UPDATE", {}))
    empty = Chain()
    empty.block()
    assert with_failure.head["state_root"] != empty.head["state_root"]


def test_timestamp_changes_hash_not_root() -> None:
    first = Chain()
    first.block(timestamp_ms=GENESIS_TIME_MS + 10)
    second = Chain()
    second.block(timestamp_ms=GENESIS_TIME_MS + 20)
    assert first.head["state_root"] == second.head["state_root"]
    assert block_hash(first.head) != block_hash(second.head)


def test_build_block_leaves_base_unchanged() -> None:
    chain = Chain()
    before = dict(chain.state.entries)
    build_block(
        chain.state,
        chain.head,
        [chain.tx("@alice", "PROFILE_UPDATE", {"bio": "a"})],
        timestamp_ms=chain.now_ms,
        genesis=chain.info,
        producer_pubkey=chain.producer_key.pubkey,
        sign=None,
    )
    assert chain.state.entries == before


def test_end_block_hooks_run_in_fixed_order() -> None:
    names = [f"{hook.__module__}.{hook.__name__}" for hook in END_BLOCK_HOOKS]
    assert names == [
        "weall.protocol.rules.disputes.expire_disputes",
        "weall.protocol.rules.governance.close_proposals",
        "weall.protocol.rules.poh.expire_requests",
    ]
    assert tuple(END_BLOCK_HOOKS) == END_BLOCK_ORDER


def test_end_block_hooks_installed_once() -> None:
    importlib.reload(rules)
    assert len(END_BLOCK_HOOKS) == len(set(END_BLOCK_HOOKS)) == 3
