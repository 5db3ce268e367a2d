"""MemoryState, Overlay and the running state root."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weall.protocol import canonical
from weall.protocol.encoding import b32_encode
from weall.protocol.state import MemoryState, Overlay, next_state_root

ROOT = "b" + "a" * 52


def base_state() -> MemoryState:
    return MemoryState(
        {
            ("post", "a1"): {"n": 1},
            ("post", "a2"): {"n": 2},
            ("post", "a3"): {"n": 3},
            ("post", "b1"): {"n": 4},
            ("comment", "a1"): {"n": 5},
        }
    )


def keys_of(rows: list[tuple[str, dict]]) -> list[str]:
    return [key for key, _ in rows]


# -- MemoryState ----------------------------------------------------------------------


def test_memory_get_missing() -> None:
    assert base_state().get("post", "zz") is None


def test_memory_get_returns_copy() -> None:
    state = base_state()
    state.get("post", "a1")["n"] = 99
    assert state.get("post", "a1") == {"n": 1}


def test_memory_scan_prefix_in_order() -> None:
    assert keys_of(base_state().scan("post", "a")) == ["a1", "a2", "a3"]


def test_memory_scan_filters_kind() -> None:
    assert keys_of(base_state().scan("comment")) == ["a1"]


def test_memory_scan_after_limit() -> None:
    assert keys_of(base_state().scan("post", after="a1", limit=2)) == ["a2", "a3"]


def test_memory_scan_reverse_after() -> None:
    assert keys_of(base_state().scan("post", reverse=True, after="b1")) == [
        "a3",
        "a2",
        "a1",
    ]


def test_memory_apply_puts_and_deletes() -> None:
    state = base_state()
    state.apply([("post", "a1", None), ("post", "c1", {"n": 6})])
    assert state.get("post", "a1") is None
    assert state.get("post", "c1") == {"n": 6}


def test_memory_apply_copies_values() -> None:
    state = MemoryState()
    value = {"n": [1]}
    state.apply([("post", "x", value)])
    value["n"].append(2)
    assert state.get("post", "x") == {"n": [1]}


# -- Overlay reads and writes -----------------------------------------------------------


def test_overlay_reads_through() -> None:
    assert Overlay(base_state()).get("post", "a2") == {"n": 2}


def test_overlay_put_shadows_base() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "a2", {"n": 20})
    assert overlay.get("post", "a2") == {"n": 20}


def test_overlay_leaves_base_untouched() -> None:
    base = base_state()
    overlay = Overlay(base)
    overlay.put("post", "a2", {"n": 20})
    overlay.delete("post", "a1")
    assert base.get("post", "a2") == {"n": 2}
    assert base.get("post", "a1") == {"n": 1}


def test_overlay_delete_hides_base() -> None:
    overlay = Overlay(base_state())
    overlay.delete("post", "a1")
    assert overlay.get("post", "a1") is None


def test_overlay_put_copies_value() -> None:
    overlay = Overlay(MemoryState())
    value = {"n": 1}
    overlay.put("post", "x", value)
    value["n"] = 2
    assert overlay.get("post", "x") == {"n": 1}


def test_overlay_get_returns_copy() -> None:
    overlay = Overlay(MemoryState())
    overlay.put("post", "x", {"n": 1})
    overlay.get("post", "x")["n"] = 2
    assert overlay.get("post", "x") == {"n": 1}


def test_overlay_changes_sorted() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "z", {"n": 1})
    overlay.delete("comment", "a1")
    overlay.put("account", "@x", {"n": 2})
    assert overlay.changes() == [
        ("account", "@x", {"n": 2}),
        ("comment", "a1", None),
        ("post", "z", {"n": 1}),
    ]


# -- child overlays ----------------------------------------------------------------------


def test_child_sees_parent_writes() -> None:
    parent = Overlay(base_state())
    parent.put("post", "p", {"n": 1})
    assert parent.child().get("post", "p") == {"n": 1}


def test_child_discarded_leaves_parent_unchanged() -> None:
    parent = Overlay(base_state())
    parent.put("post", "p", {"n": 1})
    child = parent.child()
    child.put("post", "q", {"n": 2})
    child.delete("post", "a1")
    child.put("post", "p", {"n": 3})
    # A handler that raises never merges its child.
    assert parent.changes() == [("post", "p", {"n": 1})]
    assert parent.get("post", "a1") == {"n": 1}


def test_child_merge_applies_writes_and_deletes() -> None:
    parent = Overlay(base_state())
    child = parent.child()
    child.put("post", "q", {"n": 2})
    child.delete("post", "a1")
    child.merge_into_parent()
    assert parent.get("post", "q") == {"n": 2}
    assert parent.get("post", "a1") is None
    assert parent.changes() == [("post", "a1", None), ("post", "q", {"n": 2})]


def test_merge_of_top_overlay_fails() -> None:
    with pytest.raises(AssertionError):
        Overlay(MemoryState()).merge_into_parent()


# -- Overlay.scan ---------------------------------------------------------------------------


def test_scan_merges_puts() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "a25", {"n": 9})
    assert keys_of(overlay.scan("post", "a")) == ["a1", "a2", "a25", "a3"]


def test_scan_hides_deletes() -> None:
    overlay = Overlay(base_state())
    overlay.delete("post", "a2")
    assert keys_of(overlay.scan("post", "a")) == ["a1", "a3"]


def test_scan_shows_overlay_values() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "a2", {"n": 20})
    assert dict(overlay.scan("post", "a"))["a2"] == {"n": 20}


def test_scan_limit_refills_after_deletes() -> None:
    overlay = Overlay(base_state())
    overlay.delete("post", "a1")
    overlay.delete("post", "a2")
    assert keys_of(overlay.scan("post", limit=2)) == ["a3", "b1"]


def test_scan_after_skips_overlay_keys() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "a0", {"n": 0})
    overlay.put("post", "a9", {"n": 9})
    assert keys_of(overlay.scan("post", "a", after="a2")) == ["a3", "a9"]


def test_scan_reverse_with_deletes() -> None:
    overlay = Overlay(base_state())
    overlay.delete("post", "b1")
    overlay.put("post", "a0", {"n": 0})
    assert keys_of(overlay.scan("post", reverse=True, limit=3)) == ["a3", "a2", "a1"]


def test_scan_reverse_after() -> None:
    overlay = Overlay(base_state())
    overlay.put("post", "a25", {"n": 9})
    overlay.delete("post", "a1")
    assert keys_of(overlay.scan("post", reverse=True, after="a3")) == ["a25", "a2"]


def test_scan_nested_child_over_parent_deletes() -> None:
    parent = Overlay(base_state())
    parent.delete("post", "a1")
    child = parent.child()
    child.put("post", "a1", {"n": 100})
    child.delete("post", "a3")
    assert keys_of(child.scan("post", "a")) == ["a1", "a2"]
    assert keys_of(parent.scan("post", "a")) == ["a2", "a3"]


operation = st.tuples(
    st.sampled_from(["put", "delete"]),
    st.sampled_from(["a", "b"]),
    st.text(alphabet="abcé", min_size=1, max_size=3),
)


@given(
    base_keys=st.lists(st.text(alphabet="abcé", min_size=1, max_size=3), max_size=10),
    layers=st.lists(st.lists(operation, max_size=8), min_size=1, max_size=3),
    prefix=st.sampled_from(["", "a", "b", "é"]),
    after=st.none() | st.text(alphabet="abcé", max_size=2),
    limit=st.none() | st.integers(min_value=0, max_value=6),
    reverse=st.booleans(),
)
def test_scan_matches_flattened_state(
    base_keys: list[str],
    layers: list[list[tuple[str, str, str]]],
    prefix: str,
    after: str | None,
    limit: int | None,
    reverse: bool,
) -> None:
    # A stack of overlays scans like one MemoryState with every write applied.
    base = MemoryState(
        {(kind, key): {"k": key} for key in base_keys for kind in ("a", "b")}
    )
    flat = MemoryState(dict(base.entries))
    top: Overlay | MemoryState = base
    for ops in layers:
        top = Overlay(top)
        for op, kind, key in ops:
            if op == "put":
                top.put(kind, key, {"v": key})
                flat.apply([(kind, key, {"v": key})])
            else:
                top.delete(kind, key)
                flat.apply([(kind, key, None)])
    options = {"after": after, "limit": limit, "reverse": reverse}
    assert top.scan("a", prefix, **options) == flat.scan("a", prefix, **options)


# -- next_state_root ------------------------------------------------------------------------


def test_state_root_known_bytes() -> None:
    changes = [("account", "@a", {"n": 1}), ("post", "p", None)]
    hashed = ROOT.encode() + b'[["account","@a",{"n":1}],["post","p",null]]'
    expected = b32_encode(hashlib.sha256(hashed).digest())
    assert next_state_root(ROOT, changes) == expected


def test_state_root_of_no_changes() -> None:
    expected = b32_encode(hashlib.sha256(ROOT.encode() + b"[]").digest())
    assert next_state_root(ROOT, []) == expected


def test_state_root_depends_on_previous() -> None:
    other = "b" + "b" * 52
    assert next_state_root(ROOT, []) != next_state_root(other, [])


def test_state_root_depends_on_value() -> None:
    first = next_state_root(ROOT, [("post", "p", {"n": 1})])
    assert first != next_state_root(ROOT, [("post", "p", {"n": 2})])


def test_state_root_distinguishes_delete() -> None:
    first = next_state_root(ROOT, [("post", "p", {})])
    assert first != next_state_root(ROOT, [("post", "p", None)])


def test_state_root_uses_canonical_values() -> None:
    changes = [("post", "p", {"b": 1, "a": "é"})]
    hashed = ROOT.encode() + canonical.dumps([["post", "p", {"a": "é", "b": 1}]])
    assert next_state_root(ROOT, changes) == b32_encode(hashlib.sha256(hashed).digest())


def test_state_root_raw_matches_parsed() -> None:
    from weall.protocol.state import state_root_of_raw

    overlay = Overlay(MemoryState())
    overlay.put("account", "@zed", {"id": "@zed", "b": [1, 2], "a": {"ü": "é"}})
    overlay.put("post", "p1", {"body": "x"})
    overlay.delete("follow", "@a/@b")
    assert state_root_of_raw("bprev", overlay.raw_changes()) == next_state_root(
        "bprev", overlay.changes()
    )
