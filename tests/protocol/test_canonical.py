"""Canonical JSON: the byte form that is hashed and signed, and its strict parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weall.errors import EncodingError
from weall.protocol import canonical

MAX = canonical.MAX_SAFE_INT


def nested_arrays(levels: int, inner: str = "") -> str:
    return "[" * levels + inner + "]" * levels


# -- output form -------------------------------------------------------------------


def test_dumps_sorts_keys() -> None:
    assert canonical.dumps({"b": 1, "a": 2, "c": 3}) == b'{"a":2,"b":1,"c":3}'


def test_dumps_sorts_nested_keys() -> None:
    assert canonical.dumps({"x": {"b": 1, "a": 2}}) == b'{"x":{"a":2,"b":1}}'


def test_dumps_sorts_by_code_point() -> None:
    # UTF-16 order would put U+1F600 (a surrogate pair) before U+FFFF.
    value = {"\U0001f600": 1, "\uffff": 2, "é": 3, "z": 4, "Z": 5, "": 6}
    expected = '{"":6,"Z":5,"z":4,"é":3,"\uffff":2,"\U0001f600":1}'.encode()
    assert canonical.dumps(value) == expected


def test_dumps_sorts_prefix_keys_first() -> None:
    assert (
        canonical.dumps({"sig": 1, "signer": 2, "si": 3})
        == b'{"si":3,"sig":1,"signer":2}'
    )


def test_dumps_writes_raw_utf8() -> None:
    assert canonical.dumps({"name": "Zoë 😀"}) == '{"name":"Zoë 😀"}'.encode()


def test_dumps_has_no_u_escapes_for_non_ascii() -> None:
    assert b"\\u" not in canonical.dumps(["é", "日本", "😀"])


def test_dumps_escapes_control_characters() -> None:
    assert canonical.dumps(["a\nb\x01"]) == b'["a\\nb\\u0001"]'


def test_dumps_has_no_whitespace() -> None:
    assert canonical.dumps({"a": [1, 2, {"b": None}], "c": True}) == (
        b'{"a":[1,2,{"b":null}],"c":true}'
    )


def test_dumps_writes_tuples_as_arrays() -> None:
    assert canonical.dumps((1, "a")) == b'[1,"a"]'


def test_dumps_keeps_list_order() -> None:
    assert canonical.dumps([3, 1, 2]) == b"[3,1,2]"


def test_dumps_accepts_safe_int_bounds() -> None:
    assert canonical.dumps([MAX, -MAX]) == b"[9007199254740991,-9007199254740991]"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX, max_value=MAX)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_dumps_round_trips_through_loads_strict(value: object) -> None:
    assert canonical.loads_strict(canonical.dumps(value)) == value


@given(json_values)
def test_dumps_is_a_fixed_point(value: object) -> None:
    encoded = canonical.dumps(value)
    assert canonical.dumps(canonical.loads_strict(encoded)) == encoded


# -- rejections by loads_strict ------------------------------------------------------

INVALID_JSON = [
    pytest.param(b'{"a":1,"a":2}', id="duplicate-key"),
    pytest.param(b'{"a":1,"a":1}', id="duplicate-key-same-value"),
    pytest.param(b'{"x":{"k":1,"k":2}}', id="duplicate-key-nested"),
    pytest.param(b'[{"p":[{"k":1,"k":2}]}]', id="duplicate-key-deep"),
    pytest.param(b'{"\\u0061":1,"a":2}', id="duplicate-key-escaped"),
    pytest.param(b"1.5", id="float"),
    pytest.param(b"1.0", id="float-integral"),
    pytest.param(b'{"a":[0.1]}', id="float-nested"),
    pytest.param(b"1e3", id="exponent"),
    pytest.param(b"1E3", id="exponent-upper"),
    pytest.param(b"-2e-1", id="exponent-negative"),
    pytest.param(b"NaN", id="nan"),
    pytest.param(b"[Infinity]", id="infinity"),
    pytest.param(b"-Infinity", id="minus-infinity"),
    pytest.param(b"9007199254740992", id="above-max-int"),
    pytest.param(b"-9007199254740992", id="below-min-int"),
    pytest.param(b"1" * 5000, id="huge-int"),
    pytest.param(b'{"n":18446744073709551616}', id="u64-overflow"),
    pytest.param(b'"\xff"', id="invalid-utf8"),
    pytest.param(b'"\xc3"', id="truncated-utf8"),
    pytest.param(b'"\xed\xa0\x80"', id="utf8-encoded-surrogate"),
    pytest.param(b'"\\ud800"', id="lone-surrogate-escape"),
    pytest.param(b'{"\\udc00":1}', id="lone-surrogate-key"),
    pytest.param(nested_arrays(33).encode(), id="nesting-33"),
    pytest.param(nested_arrays(33, "1").encode(), id="nesting-33-with-value"),
    pytest.param(nested_arrays(100_000).encode(), id="nesting-100000"),
    pytest.param(b'{"a":1} x', id="trailing-text"),
    pytest.param(b"{}{}", id="two-values"),
    pytest.param(b"[1] [2]", id="two-arrays"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   ", id="whitespace-only"),
    pytest.param(b"{'a':1}", id="single-quotes"),
    pytest.param(b'{"a":1,}', id="trailing-comma"),
    pytest.param(b"01", id="leading-zero"),
    pytest.param(b"\xef\xbb\xbf{}", id="byte-order-mark"),
    pytest.param(b'"a\x01b"', id="raw-control-character"),
    pytest.param(b"true false", id="two-literals"),
]


@pytest.mark.parametrize("data", INVALID_JSON)
def test_loads_strict_rejects(data: bytes) -> None:
    with pytest.raises(EncodingError) as caught:
        canonical.loads_strict(data)
    assert caught.value.code == "invalid_json"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# The same inputs as text, where they have a text form.
INVALID_TEXT = [param for param in INVALID_JSON if _is_utf8(param.values[0])]


@pytest.mark.parametrize("data", INVALID_TEXT)
def test_loads_strict_rejects_text_input(data: bytes) -> None:
    with pytest.raises(EncodingError) as caught:
        canonical.loads_strict(data.decode("utf-8"))
    assert caught.value.code == "invalid_json"


def test_loads_strict_names_duplicate_key() -> None:
    with pytest.raises(EncodingError, match="duplicate object key 'k'"):
        canonical.loads_strict(b'{"x":{"k":1,"k":2}}')


def test_loads_strict_names_invalid_utf8_offset() -> None:
    with pytest.raises(EncodingError, match="byte 3"):
        canonical.loads_strict(b'["a\xff"]')


# -- what loads_strict accepts -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"9007199254740991", MAX, id="max-int"),
        pytest.param(b"-9007199254740991", -MAX, id="min-int"),
        pytest.param(b"-0", 0, id="minus-zero"),
        pytest.param(
            b' \t\r\n{"a" : [ 1 , 2 ] }\n ',
            {"a": [1, 2]},
            id="insignificant-whitespace",
        ),
        pytest.param(b'"\\u00e9"', "é", id="u-escape"),
        pytest.param(b'"\\ud83d\\ude00"', "\U0001f600", id="surrogate-pair-escape"),
        pytest.param('"😀"'.encode(), "\U0001f600", id="raw-utf8"),
        pytest.param(
            nested_arrays(32, "1").encode(),
            eval(nested_arrays(32, "1")),
            id="nesting-32",
        ),
        pytest.param(b"null", None, id="null"),
    ],
)
def test_loads_strict_accepts(data: bytes, expected: object) -> None:
    assert canonical.loads_strict(data) == expected


def test_loads_strict_accepts_memoryview() -> None:
    assert canonical.loads_strict(memoryview(b"[1]")) == [1]


# -- check_value and dumps on Python values -----------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.0, id="float"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(MAX + 1, id="above-max-int"),
        pytest.param(-MAX - 1, id="below-min-int"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({"a": {2.5}}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param({"\udfff": 1}, id="lone-surrogate-key"),
        pytest.param(eval(nested_arrays(33)), id="nesting-33"),
    ],
)
def test_dumps_rejects(value: object) -> None:
    with pytest.raises(EncodingError) as caught:
        canonical.dumps(value)
    assert caught.value.code == "invalid_json"


def test_nesting_limit_ignores_contents() -> None:
    # A depth limit counts containers, so an empty innermost array and one
    # holding a value are accepted or rejected alike.
    assert canonical.dumps(eval(nested_arrays(32))) == nested_arrays(32).encode()
    assert (
        canonical.dumps(eval(nested_arrays(32, "1"))) == nested_arrays(32, "1").encode()
    )


def test_nesting_limit_counts_objects() -> None:
    value: object = 1
    for _ in range(canonical.MAX_DEPTH + 1):
        value = {"a": value}
    with pytest.raises(EncodingError):
        canonical.check_value(value)
