"""Chain parameters: the genesis-posture defaults and the dev chain's.

``params`` in a genesis document may set any key below; a key it omits takes
the genesis-posture default. ``ECONOMIC_PARAMS`` can change only through an
economic action, which the economics lock blocks.

``reward_pool_account`` and ``treasury_account`` name the genesis accounts
whose balances pay rewards and passed treasury spends. No balance is ever
created after genesis, so a genesis that gives them no balance (or does not
list them) has no rewards and no treasury to spend.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import ProtocolError
from weall.protocol.encoding import is_account_id

__all__ = [
    "DAY_MS",
    "DEV_OVERRIDES",
    "ECONOMIC_PARAMS",
    "GENESIS_DEFAULTS",
    "merge_params",
    "validate_params",
]

DAY_MS: Final = 86_400_000

GENESIS_DEFAULTS: Final[dict[str, Any]] = {
    "block_interval_ms": 1000,
    "heartbeat_ms": 30_000,
    "max_block_txs": 10_000,
    "economics_lock_days": 90,
    "replication_factor": 3,
    "pin_confirm_timeout_blocks": 100,
    "poh_async_jurors": 3,
    "poh_async_threshold": 2,
    "poh_live_jurors": 5,
    "poh_live_threshold": 3,
    "poh_request_expiry_blocks": 10_000,
    "dispute_jurors": 3,
    "dispute_expiry_blocks": 10_000,
    "gov_quorum": 3,
    "gov_min_voting_blocks": 10,
    "gov_max_voting_blocks": 100_000,
    "session_max_ttl_ms": 30 * DAY_MS,
    "max_post_chars": 5000,
    "max_comment_chars": 2000,
    "max_display_name_chars": 64,
    "max_bio_chars": 500,
    "max_keys": 8,
    "max_session_keys": 16,
    "reactions": ["like", "love", "laugh", "sad", "angry"],
    "reward_amount": 10,
    "reward_interval_blocks": 1000,
    "reward_pool_account": "@rewards",
    "treasury_account": "@treasury",
    "treasury_voting_blocks": 1000,
    "gates": {},
}

# The dev chain runs with one founder and one node: every juror count,
# threshold and replication factor is 1.
DEV_OVERRIDES: Final[dict[str, Any]] = {
    "replication_factor": 1,
    "poh_async_jurors": 1,
    "poh_async_threshold": 1,
    "poh_live_jurors": 1,
    "poh_live_threshold": 1,
    "dispute_jurors": 1,
    "gov_quorum": 1,
    "gov_min_voting_blocks": 1,
}

ECONOMIC_PARAMS: Final = frozenset(
    {
        "economics_lock_days",
        "reward_amount",
        "reward_interval_blocks",
        "reward_pool_account",
        "treasury_account",
        "treasury_voting_blocks",
    }
)
# Parameters whose value is an account id.
_ACCOUNT_PARAMS: Final = ("reward_pool_account", "treasury_account")

_INT_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "block_interval_ms": (10, 3_600_000),
    "heartbeat_ms": (100, 86_400_000),
    "max_block_txs": (1, 100_000),
    "economics_lock_days": (0, 36_500),
    "replication_factor": (1, 64),
    "pin_confirm_timeout_blocks": (1, 10**9),
    "poh_async_jurors": (1, 64),
    "poh_async_threshold": (1, 64),
    "poh_live_jurors": (1, 64),
    "poh_live_threshold": (1, 64),
    "poh_request_expiry_blocks": (1, 10**9),
    "dispute_jurors": (1, 64),
    "dispute_expiry_blocks": (1, 10**9),
    "gov_quorum": (1, 10**9),
    "gov_min_voting_blocks": (1, 10**9),
    "gov_max_voting_blocks": (1, 10**9),
    "session_max_ttl_ms": (1000, 3650 * DAY_MS),
    "max_post_chars": (1, 60_000),
    "max_comment_chars": (1, 60_000),
    "max_display_name_chars": (1, 1000),
    "max_bio_chars": (1, 10_000),
    "max_keys": (1, 64),
    "max_session_keys": (1, 256),
    "reward_amount": (0, 10**15),
    "reward_interval_blocks": (1, 10**9),
    "treasury_voting_blocks": (1, 10**9),
}


def merge_params(overrides: dict[str, Any]) -> dict[str, Any]:
    params = dict(GENESIS_DEFAULTS)
    params.update(overrides)
    validate_params(params)
    return params


def validate_params(params: dict[str, Any]) -> None:
    """Raise ``ProtocolError('invalid_payload')`` for an unknown or out-of-range key."""
    from weall.protocol.txtypes import TX_TYPES  # late: txtypes imports params

    for key, value in params.items():
        if key in _INT_LIMITS:
            low, high = _INT_LIMITS[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not low <= value <= high
            ):
                raise ProtocolError(
                    "invalid_payload",
                    f"params.{key}: must be an integer in {low}..{high}",
                )
        elif key in _ACCOUNT_PARAMS:
            if not is_account_id(value):
                raise ProtocolError(
                    "invalid_payload",
                    f"params.{key}: must be an account id (@ and 3 to 32 of [a-z0-9_])",
                )
        elif key == "reactions":
            if (
                not isinstance(value, list)
                or not value
                or len(value) > 32
                or not all(isinstance(r, str) and 1 <= len(r) <= 32 for r in value)
                or len(set(value)) != len(value)
            ):
                raise ProtocolError(
                    "invalid_payload", "params.reactions: 1 to 32 distinct names"
                )
        elif key == "gates":
            if not isinstance(value, dict):
                raise ProtocolError(
                    "invalid_payload", "params.gates: must be an object"
                )
            for tx_type, tier in value.items():
                if tx_type not in TX_TYPES:
                    raise ProtocolError(
                        "invalid_payload",
                        f"params.gates: unknown tx type {tx_type[:64]!r}",
                    )
                if tx_type == "ACCOUNT_REGISTER":
                    # Admission never gates it: the signer has no account,
                    # so no tier, until this transaction creates one.
                    raise ProtocolError(
                        "invalid_payload",
                        "params.gates.ACCOUNT_REGISTER: registration has no gate "
                        "and cannot be given one",
                    )
                if isinstance(tier, bool) or tier not in (0, 1, 2):
                    raise ProtocolError(
                        "invalid_payload", f"params.gates.{tx_type}: tier 0, 1 or 2"
                    )
        else:
            raise ProtocolError("invalid_payload", f"params.{key}: unknown parameter")
    if params["poh_async_threshold"] > params["poh_async_jurors"]:
        raise ProtocolError(
            "invalid_payload", "params.poh_async_threshold exceeds poh_async_jurors"
        )
    if params["poh_live_threshold"] > params["poh_live_jurors"]:
        raise ProtocolError(
            "invalid_payload", "params.poh_live_threshold exceeds poh_live_jurors"
        )
    if params["reward_pool_account"] == params["treasury_account"]:
        raise ProtocolError(
            "invalid_payload",
            "params.reward_pool_account and params.treasury_account must differ",
        )
    if params["gov_min_voting_blocks"] > params["gov_max_voting_blocks"]:
        raise ProtocolError(
            "invalid_payload",
            "params.gov_min_voting_blocks exceeds gov_max_voting_blocks",
        )
