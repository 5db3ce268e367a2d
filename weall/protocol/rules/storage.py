"""Storage operators and IPFS pins: requests, confirmations and healing.

A pin request assigns ``replication_factor`` operators with enough free
capacity, other than the pin's owner (``on_behalf_of`` when set, otherwise
the signer), and each confirms with ``ok`` true or false. The factor is copied
into the pin when it is requested, so a later change of the parameter
applies to new pins only. A target counts as confirmed only while its
operator still holds role node_operator.

A pin has a shortfall when fewer than its replication factor of targets are
confirmed ok and at least one target is bad: it reported ``ok: false``, its
operator withdrew, or ``pin_confirm_timeout_blocks`` passed since it was
assigned without a confirmation (``height - assigned_height >= timeout``).
``IPFS_PIN_HEAL`` replaces the bad targets.

One CID has one pin: a second request for a CID that already has a pin is
rejected as ``conflict`` with the existing ``pin_id`` in the details, so the
same bytes never take the capacity of twice the operators.

Accounts that genesis gives role node_operator have no operator record until
one is needed. Until then they count as operators with unlimited capacity
(``2**53 - 1`` bytes) and nothing used.

State kinds:
    ``storage_operator`` (key account id): ``{"capacity_bytes", "used_bytes",
    "enrolled_height", "withdrawn_height"}``; ``used_bytes`` counts the sizes
    of the pins assigned to the operator and not yet released by a heal.
    ``pin`` (key pin id): the pin, its targets and their confirmations.
    ``media`` (key CID): ``{"pin_id", "owner"}``; posts may use a CID listed here.
    ``operator_pin`` (key ``"{operator}/{pin_id}"``): the pins assigned to an
    operator, with ``cid``, ``size_bytes``, ``assigned_height`` and ``ok``.
    ``pin_unsettled`` (key pin id): pins with fewer confirmed ok targets than
    their replication factor; ``pins_with_shortfall`` reads only these.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.canonical import MAX_SAFE_INT
from weall.protocol.rules._assign import (
    assign,
    delete_if_present,
    eligible_accounts,
    grant_role,
    has_role,
    pick_accounts,
    revoke_role,
)
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_account_id,
    get_bool,
    get_cid,
    get_int,
    get_object_id,
    not_found,
)
from weall.protocol.state import Overlay, StateReader
from weall.protocol.txtypes import NODE_OPERATOR, PRODUCER, TxContext, handler

__all__ = [
    "UNLIMITED_CAPACITY",
    "assigned_pins",
    "operator_record",
    "pin_id_for_cid",
    "pin_status",
    "pins_with_shortfall",
]

UNLIMITED_CAPACITY: Final = MAX_SAFE_INT
# A pin keeps only its most recent released targets, for inspection.
MAX_RELEASED_HISTORY: Final = 16

# Target states reported by pin_status.
PENDING: Final = "pending"  # assigned, not confirmed, not yet overdue
CONFIRMED: Final = "ok"  # confirmed ok by an operator that still holds the role
FAILED: Final = "failed"  # the operator reported ok: false
WITHDRAWN: Final = "withdrawn"  # the operator no longer holds role node_operator
OVERDUE: Final = "overdue"  # pin_confirm_timeout_blocks passed without a confirmation
BAD_STATES: Final = frozenset({FAILED, WITHDRAWN, OVERDUE})


def operator_record(state: StateReader, account_id: str) -> dict[str, Any] | None:
    """Return the operator record of ``account_id``, or ``None`` if it never was an operator.

    A genesis operator without a stored record gets the default record with
    unlimited capacity.
    """
    record = state.get("storage_operator", account_id)
    if record is None and has_role(state, NODE_OPERATOR, account_id):
        record = {
            "capacity_bytes": UNLIMITED_CAPACITY,
            "used_bytes": 0,
            "enrolled_height": 0,
            "withdrawn_height": None,
        }
    return record


def _free_bytes(state: StateReader, account_id: str) -> int:
    record = operator_record(state, account_id)
    return 0 if record is None else record["capacity_bytes"] - record["used_bytes"]


def _change_used(state: Overlay, account_id: str, delta: int) -> None:
    record = operator_record(state, account_id)
    if record is None:  # pragma: no cover - assigned operators always have a record
        return
    record["used_bytes"] = max(0, record["used_bytes"] + delta)
    state.put("storage_operator", account_id, record)


def pin_id_for_cid(state: StateReader, cid: str) -> str | None:
    """Return the id of the pin of ``cid``, if it has one."""
    entry = state.get("media", cid)
    return None if entry is None else str(entry["pin_id"])


def _target_state(
    state: StateReader, target: dict[str, Any], height: int, timeout: int
) -> str:
    if not has_role(state, NODE_OPERATOR, target["operator"]):
        return WITHDRAWN
    confirmation = target["confirmation"]
    if confirmation is not None:
        return CONFIRMED if confirmation["ok"] else FAILED
    if height - target["assigned_height"] >= timeout:
        return OVERDUE
    return PENDING


def pin_status(
    state: StateReader, pin_id: str, height: int, params: dict[str, Any]
) -> dict[str, Any] | None:
    """Compute the replication status of a pin at ``height``.

    Args:
        state: the state to read.
        pin_id: the pin's id (the id of its ``IPFS_PIN_REQUEST``).
        height: the height to judge timeouts at, normally the next block's.
        params: the chain params, for ``pin_confirm_timeout_blocks``.

    Returns:
        ``None`` when there is no such pin, else a dict with ``pin_id``,
        ``cid``, ``size_bytes``, ``owner``, ``replication_factor``,
        ``targets`` (each with ``operator``, ``assigned_height``,
        ``confirmation`` and ``state``), ``confirmations`` (the number of
        targets in state ``ok``), ``shortfall`` and ``durable``.
    """
    pin = state.get("pin", pin_id)
    if pin is None:
        return None
    timeout = int(params["pin_confirm_timeout_blocks"])
    targets = [
        {**target, "state": _target_state(state, target, height, timeout)}
        for target in pin["targets"]
    ]
    confirmations = sum(1 for t in targets if t["state"] == CONFIRMED)
    factor = pin["replication_factor"]
    return {
        "pin_id": pin_id,
        "cid": pin["cid"],
        "size_bytes": pin["size_bytes"],
        "owner": pin["owner"],
        "replication_factor": factor,
        "targets": targets,
        "confirmations": confirmations,
        "shortfall": confirmations < factor
        and any(t["state"] in BAD_STATES for t in targets),
        "durable": confirmations >= factor,
    }


def pins_with_shortfall(
    state: StateReader,
    height: int,
    params: dict[str, Any],
    limit: int,
    *,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` statuses of pins that have a shortfall at ``height``.

    Only pins in the ``pin_unsettled`` index are read, in pin id order after
    ``after``. The cost is one ``pin_status`` (a pin read and one role read
    per target) for each unsettled pin passed over, so it grows with the
    number of pins still waiting for confirmations, not with all pins.
    """
    found: list[dict[str, Any]] = []
    cursor = after
    page = max(limit, 64)
    while len(found) < limit:
        entries = state.scan("pin_unsettled", after=cursor, limit=page)
        for pin_id, _ in entries:
            status = pin_status(state, pin_id, height, params)
            if status is not None and status["shortfall"]:
                found.append(status)
                if len(found) == limit:
                    break
        if len(entries) < page:
            break
        cursor = entries[-1][0]
    return found


def assigned_pins(
    state: StateReader,
    operator_id: str,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return the pins currently assigned to ``operator_id``, in pin id order.

    Each entry has ``pin_id``, ``cid``, ``size_bytes``, ``assigned_height``
    and ``ok`` (``None`` until the operator confirms). ``after`` is a pin id
    to continue after. The cost is one scan of this operator's
    ``operator_pin`` entries.
    """
    prefix = f"{operator_id}/"
    cursor = None if after is None else prefix + after
    return [
        value
        for _, value in state.scan("operator_pin", prefix, after=cursor, limit=limit)
    ]


def _sync_unsettled(state: Overlay, pin: dict[str, Any]) -> None:
    """Keep ``pin_unsettled`` listing the pin exactly while it is not durable."""
    confirmed = sum(
        1
        for t in pin["targets"]
        if t["confirmation"] is not None
        and t["confirmation"]["ok"]
        and has_role(state, NODE_OPERATOR, t["operator"])
    )
    if confirmed < pin["replication_factor"]:
        if state.get("pin_unsettled", pin["id"]) is None:
            state.put("pin_unsettled", pin["id"], {"cid": pin["cid"]})
    else:
        delete_if_present(state, "pin_unsettled", pin["id"])


def _refresh_operator_pins(state: Overlay, operator_id: str) -> None:
    # The operator's role changed, so each of its pins may change durability.
    for entry in assigned_pins(state, operator_id):
        pin = state.get("pin", entry["pin_id"])
        if pin is not None:
            _sync_unsettled(state, pin)


@handler("STORAGE_OPERATOR_ENROLL")
def operator_enroll(ctx: TxContext) -> dict[str, Any]:
    """Grant role node_operator with ``capacity_bytes`` of storage.

    An operator that withdrew and enrolls again keeps its ``used_bytes``,
    and the pins still assigned to it count as confirmed again.
    """
    expect_fields(ctx.payload, {"capacity_bytes"})
    capacity = get_int(ctx.payload, "capacity_bytes", 1, MAX_SAFE_INT)
    grant_role(ctx.state, ctx.signer, NODE_OPERATOR, ctx.height)
    previous = ctx.state.get("storage_operator", ctx.signer)
    record = {
        "capacity_bytes": capacity,
        "used_bytes": 0 if previous is None else previous["used_bytes"],
        "enrolled_height": ctx.height,
        "withdrawn_height": None,
    }
    ctx.state.put("storage_operator", ctx.signer, record)
    if previous is not None:
        _refresh_operator_pins(ctx.state, ctx.signer)
    return {}


@handler("STORAGE_OPERATOR_WITHDRAW")
def operator_withdraw(ctx: TxContext) -> dict[str, Any]:
    """Remove role node_operator, so every pin assigned to the signer gets a bad target.

    The cost grows with the number of pins assigned to the signer, because
    each one is added to ``pin_unsettled``.
    """
    expect_fields(ctx.payload, set())
    record = operator_record(ctx.state, ctx.signer)
    revoke_role(ctx.state, ctx.signer, NODE_OPERATOR)
    if record is not None:
        record["withdrawn_height"] = ctx.height
        ctx.state.put("storage_operator", ctx.signer, record)
    _refresh_operator_pins(ctx.state, ctx.signer)
    return {}


def _pin_owner(ctx: TxContext) -> str:
    if ctx.payload.get("on_behalf_of") is None:
        return ctx.signer
    if PRODUCER not in ctx.account()["roles"]:
        raise TxRejected(
            "role_required",
            "only the producer may pin on behalf of another account",
            {"required_role": PRODUCER},
        )
    owner = get_account_id(ctx.payload, "on_behalf_of")
    if ctx.state.get("account", owner) is None:
        raise not_found("account", owner)
    return owner


def _new_target(
    state: Overlay, pin: dict[str, Any], operator: str, height: int
) -> dict[str, Any]:
    _change_used(state, operator, pin["size_bytes"])
    state.put(
        "operator_pin",
        f"{operator}/{pin['id']}",
        {
            "pin_id": pin["id"],
            "cid": pin["cid"],
            "size_bytes": pin["size_bytes"],
            "assigned_height": height,
            "ok": None,
        },
    )
    return {"operator": operator, "assigned_height": height, "confirmation": None}


@handler("IPFS_PIN_REQUEST")
def pin_request(ctx: TxContext) -> dict[str, Any]:
    """Record a pin of ``cid`` and assign ``replication_factor`` operators to it."""
    expect_fields(ctx.payload, {"cid", "size_bytes"}, {"on_behalf_of"})
    cid = get_cid(ctx.payload["cid"], "cid")
    size = get_int(ctx.payload, "size_bytes", 0, MAX_SAFE_INT)
    owner = _pin_owner(ctx)
    existing = pin_id_for_cid(ctx.state, cid)
    if existing is not None:
        raise TxRejected(
            "conflict", f"{cid} already has a pin", {"pin_id": existing, "cid": cid}
        )

    factor = int(ctx.params["replication_factor"])
    # The owner (the applicant) never stores its own pin, so its replicas
    # are held by other operators.
    operators = assign(
        ctx.state,
        role=NODE_OPERATOR,
        request_id=ctx.tx_id,
        count=factor,
        exclude={owner},
        code="insufficient_operators",
        accept=lambda account: _free_bytes(ctx.state, account) >= size,
    )

    pin: dict[str, Any] = {
        "id": ctx.tx_id,
        "cid": cid,
        "size_bytes": size,
        "owner": owner,
        "requester": ctx.signer,
        "replication_factor": factor,
        "height": ctx.height,
        "targets": [],
        "released": [],
        "heal_count": 0,
    }
    pin["targets"] = [_new_target(ctx.state, pin, op, ctx.height) for op in operators]

    ctx.state.put("pin", ctx.tx_id, pin)
    ctx.state.put("media", cid, {"pin_id": ctx.tx_id, "owner": owner})
    _sync_unsettled(ctx.state, pin)
    bump_counter(ctx.state, "pins")
    return {"pin_id": ctx.tx_id}


@handler("IPFS_PIN_CONFIRM")
def pin_confirm(ctx: TxContext) -> dict[str, Any]:
    """Record an assigned operator's report that it holds the pin (or does not).

    A report may change from ok to not ok and back, but repeating the
    current report is a ``conflict``.
    """
    expect_fields(ctx.payload, {"pin_id", "ok"})
    pin_id = get_object_id(ctx.payload, "pin_id")
    ok = get_bool(ctx.payload, "ok")
    pin = ctx.state.get("pin", pin_id)
    if pin is None:
        raise not_found("pin", pin_id)
    target = next((t for t in pin["targets"] if t["operator"] == ctx.signer), None)
    if target is None:
        raise TxRejected(
            "not_assigned",
            f"{ctx.signer} is not a target of pin {pin_id}",
            {"pin_id": pin_id},
        )
    if target["confirmation"] is not None and target["confirmation"]["ok"] == ok:
        raise TxRejected(
            "conflict",
            f"{ctx.signer} already confirmed pin {pin_id} with ok={str(ok).lower()}",
            {"pin_id": pin_id},
        )
    target["confirmation"] = {"ok": ok, "height": ctx.height}
    ctx.state.put("pin", pin_id, pin)
    index_key = f"{ctx.signer}/{pin_id}"
    entry = ctx.state.get("operator_pin", index_key)
    if entry is not None:
        entry["ok"] = ok
        ctx.state.put("operator_pin", index_key, entry)
    _sync_unsettled(ctx.state, pin)
    return {"pin_id": pin_id}


def _release(
    state: Overlay,
    pin: dict[str, Any],
    target: dict[str, Any],
    reason: str,
    height: int,
) -> None:
    _change_used(state, target["operator"], -pin["size_bytes"])
    delete_if_present(state, "operator_pin", f"{target['operator']}/{pin['id']}")
    released = {**target, "released_height": height, "reason": reason}
    pin["released"] = [*pin["released"], released][-MAX_RELEASED_HISTORY:]


def _replacements(ctx: TxContext, pin: dict[str, Any], count: int) -> list[str]:
    # Operators released from this pin before are not drawn again while the
    # pin's bounded history still lists them, and the owner never is.
    excluded = {t["operator"] for t in pin["targets"]}
    excluded |= {r["operator"] for r in pin["released"]}
    excluded.add(pin["owner"])
    size = pin["size_bytes"]
    eligible = eligible_accounts(
        ctx.state,
        NODE_OPERATOR,
        excluded,
        lambda account: _free_bytes(ctx.state, account) >= size,
    )
    if not eligible:
        raise TxRejected(
            "insufficient_operators",
            f"no operator is eligible to replace a target of pin {pin['id']}",
            {"required": count, "eligible": 0},
        )
    return pick_accounts(eligible, ctx.tx_id, min(count, len(eligible)))


@handler("IPFS_PIN_HEAL")
def pin_heal(ctx: TxContext) -> dict[str, Any]:
    """Replace the bad targets of a pin that has a shortfall.

    Replacements are drawn like an assignment, seeded by this transaction's
    id, from operators with enough free capacity that are neither targets of
    the pin, nor in its history of released targets, nor its owner. When
    fewer operators are eligible than there are bad targets, as many bad
    targets as possible are replaced, in target order.

    Raises:
        TxRejected: ``conflict`` when the pin has no shortfall, and
            ``insufficient_operators`` when no operator is eligible.
    """
    expect_fields(ctx.payload, {"pin_id"})
    pin_id = get_object_id(ctx.payload, "pin_id")
    status = pin_status(ctx.state, pin_id, ctx.height, ctx.params)
    pin = ctx.state.get("pin", pin_id)
    if status is None or pin is None:
        raise not_found("pin", pin_id)
    if not status["shortfall"]:
        raise TxRejected(
            "conflict", f"pin {pin_id} has no shortfall", {"pin_id": pin_id}
        )
    bad = [i for i, t in enumerate(status["targets"]) if t["state"] in BAD_STATES]
    chosen = _replacements(ctx, pin, len(bad))
    for index, operator in zip(bad, chosen, strict=False):
        _release(
            ctx.state,
            pin,
            pin["targets"][index],
            status["targets"][index]["state"],
            ctx.height,
        )
        pin["targets"][index] = _new_target(ctx.state, pin, operator, ctx.height)
    pin["heal_count"] += 1
    ctx.state.put("pin", pin_id, pin)
    _sync_unsettled(ctx.state, pin)
    return {"pin_id": pin_id, "assigned": chosen}
