"""Role index and deterministic assignment of jurors and storage operators.

The ``role`` state kind indexes role holders with keys ``"{role}/{account_id}"``
and values ``{"since_height": h}``. Genesis writes it for bootstrap accounts
and ``grant_role``/``revoke_role`` keep it in step with the ``roles`` list of
the account record, so an assignment reads one prefix of one kind instead
of every account.

Assignment orders the eligible accounts by id and starts at an index derived
from the request id. The seed is SHA-256 over the request id's text form,
its ASCII bytes (``b`` followed by 52 base32 characters, as clients see
it), not over the 32 digest bytes that the text encodes. The first 8 bytes
of the seed, read big-endian, modulo the number of eligible accounts give
the start index, and the next N accounts from there, wrapping around, are
assigned. Every replica reads the same entries, so every replica assigns the
same accounts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

from weall.errors import TxRejected
from weall.protocol.encoding import decode_hash
from weall.protocol.state import Overlay, StateReader

__all__ = [
    "add_juror_tasks",
    "assign",
    "clear_juror_tasks",
    "delete_if_present",
    "eligible_accounts",
    "grant_role",
    "has_role",
    "juror_tasks",
    "pick_accounts",
    "revoke_role",
    "role_holders",
    "start_index",
]


def role_holders(state: StateReader, role: str) -> list[str]:
    """Return the account ids that hold ``role``, ordered by id.

    The cost is one scan of the ``role`` index over the holders of this role.
    """
    prefix = f"{role}/"
    # Keys share the prefix, so key order is account id order.
    return [key[len(prefix) :] for key, _ in state.scan("role", prefix)]


def has_role(state: StateReader, role: str, account_id: str) -> bool:
    """Return whether ``account_id`` currently holds ``role``."""
    return state.get("role", f"{role}/{account_id}") is not None


def grant_role(state: Overlay, account_id: str, role: str, height: int) -> None:
    """Add ``role`` to the account record and to the role index.

    Raises:
        TxRejected: ``conflict`` when the account already holds the role.
    """
    account = state.get("account", account_id)
    if account is None:
        raise TxRejected("unknown_signer", f"account {account_id} does not exist")
    if role in account["roles"] or has_role(state, role, account_id):
        raise TxRejected(
            "conflict", f"{account_id} already holds role {role}", {"role": role}
        )
    account["roles"] = sorted([*account["roles"], role])
    state.put("account", account_id, account)
    state.put("role", f"{role}/{account_id}", {"since_height": height})


def revoke_role(state: Overlay, account_id: str, role: str) -> None:
    """Remove ``role`` from the account record and from the role index."""
    account = state.get("account", account_id)
    if account is not None and role in account["roles"]:
        account["roles"] = [r for r in account["roles"] if r != role]
        state.put("account", account_id, account)
    delete_if_present(state, "role", f"{role}/{account_id}")


def delete_if_present(state: Overlay, kind: str, key: str) -> None:
    """Delete an entry only when it exists.

    Deleting a missing entry would still add a change to the block and so to
    its state root.
    """
    if state.get(kind, key) is not None:
        state.delete(kind, key)


def start_index(request_id: str, count: int) -> int:
    """Return the start index for ``request_id`` among ``count`` eligible accounts.

    Args:
        request_id: a tx id in the hash text form; the text is checked, then
            its ASCII bytes are hashed.
        count: the number of eligible accounts, at least 1.
    """
    decode_hash(request_id, "request_id")
    seed = hashlib.sha256(request_id.encode("ascii")).digest()
    return int.from_bytes(seed[:8], "big") % count


def pick_accounts(candidates: Sequence[str], request_id: str, count: int) -> list[str]:
    """Take ``count`` of ``candidates`` (already ordered by id), wrapping around.

    ``count`` must not exceed ``len(candidates)``.
    """
    if count > len(candidates):
        raise ValueError(f"cannot pick {count} of {len(candidates)} candidates")
    if count == 0:
        return []
    start = start_index(request_id, len(candidates))
    return [candidates[(start + i) % len(candidates)] for i in range(count)]


def eligible_accounts(
    state: StateReader,
    role: str,
    exclude: Collection[str],
    accept: Callable[[str], bool] | None = None,
) -> list[str]:
    """Return the holders of ``role`` not in ``exclude`` that pass ``accept``, by id."""
    return [
        account
        for account in role_holders(state, role)
        if account not in exclude and (accept is None or accept(account))
    ]


def assign(
    state: StateReader,
    *,
    role: str,
    request_id: str,
    count: int,
    exclude: Collection[str],
    code: str,
    accept: Callable[[str], bool] | None = None,
) -> list[str]:
    """Assign ``count`` holders of ``role`` to the request ``request_id``.

    Args:
        state: the state to read the role index from.
        role: the role the assigned accounts must hold.
        request_id: the id of the request (a tx id); it seeds the start index.
        count: how many accounts to assign.
        exclude: accounts that are not eligible, such as the applicant.
        code: the error code when too few are eligible, ``insufficient_jurors``
            or ``insufficient_operators``.
        accept: an extra eligibility test, such as free storage capacity.

    Raises:
        TxRejected: ``code`` when fewer than ``count`` accounts are eligible.
    """
    eligible = eligible_accounts(state, role, exclude, accept)
    if len(eligible) < count:
        details: dict[str, Any] = {"required": count, "eligible": len(eligible)}
        raise TxRejected(
            code,
            f"{count} accounts with role {role} are needed; {len(eligible)} are eligible",
            details,
        )
    return pick_accounts(eligible, request_id, count)


def add_juror_tasks(
    state: Overlay, jurors: Sequence[str], object_id: str, task: dict[str, Any]
) -> None:
    """Index ``object_id`` as pending work of each juror (kind ``juror_task``).

    ``task`` describes the work, for example ``{"type": "poh_async",
    "height": 12, "expires_at_height": 10012}``.
    """
    for juror in jurors:
        state.put("juror_task", f"{juror}/{object_id}", {"id": object_id, **task})


def clear_juror_tasks(state: Overlay, jurors: Sequence[str], object_id: str) -> None:
    """Remove the ``juror_task`` entries of ``object_id`` that remain."""
    for juror in jurors:
        delete_if_present(state, "juror_task", f"{juror}/{object_id}")


def juror_tasks(
    state: StateReader,
    juror_id: str,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return the open requests and disputes that wait for a verdict of ``juror_id``.

    Args:
        state: the state to read.
        juror_id: the juror's account id.
        after: an object id to continue after (a cursor).
        limit: the maximum number of tasks to return.

    Returns:
        The task entries in object id order, each with ``id``, ``type``,
        ``height`` and ``expires_at_height``.
    """
    prefix = f"{juror_id}/"
    cursor = None if after is None else prefix + after
    return [
        value
        for _, value in state.scan("juror_task", prefix, after=cursor, limit=limit)
    ]
