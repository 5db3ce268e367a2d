"""Ed25519 key pairs, signatures and key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from weall.errors import StartupError
from weall.protocol import keys
from weall.protocol.encoding import (
    b64url_encode,
    decode_pubkey,
    decode_sig,
    encode_pubkey,
)

# RFC 8032, section 7.1, test 1: secret key, public key and the signature of
# the empty message.
RFC_SEED = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
RFC_PUBLIC = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- key pairs and signatures -------------------------------------------------------


def test_from_seed_rfc8032_pubkey() -> None:
    assert keys.from_seed(RFC_SEED).pubkey == encode_pubkey(RFC_PUBLIC)


def test_sign_rfc8032_signature() -> None:
    assert decode_sig(keys.from_seed(RFC_SEED).sign(b"")) == RFC_SIG


def test_verify_accepts_rfc8032_signature() -> None:
    assert keys.verify(RFC_PUBLIC, b"", RFC_SIG)


def test_verify_rejects_other_message() -> None:
    assert not keys.verify(RFC_PUBLIC, b"x", RFC_SIG)


def test_verify_rejects_other_key() -> None:
    other = decode_pubkey(keys.from_seed(bytes(32)).pubkey)
    assert not keys.verify(other, b"", RFC_SIG)


def test_verify_rejects_flipped_signature_bit() -> None:
    flipped = bytes([RFC_SIG[0] ^ 1]) + RFC_SIG[1:]
    assert not keys.verify(RFC_PUBLIC, b"", flipped)


@pytest.mark.parametrize(
    ("pubkey", "signature"),
    [
        pytest.param(b"\x00" * 31, RFC_SIG, id="short-key"),
        pytest.param(RFC_PUBLIC, RFC_SIG[:63], id="short-signature"),
        pytest.param(b"", b"", id="empty"),
    ],
)
def test_verify_returns_false_for_malformed(pubkey: bytes, signature: bytes) -> None:
    assert not keys.verify(pubkey, b"", signature)


def test_generate_makes_distinct_keys() -> None:
    assert keys.generate().pubkey != keys.generate().pubkey


def test_generate_binds_account() -> None:
    assert keys.generate("@alice").account == "@alice"


def test_repr_hides_seed() -> None:
    key = keys.from_seed(RFC_SEED, "@alice")
    assert b64url_encode(RFC_SEED) not in repr(key)
    assert RFC_SEED.hex() not in repr(key)
    assert key.pubkey in repr(key)


# -- key files ----------------------------------------------------------------------


def test_write_key_file_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    assert mode_of(path) == 0o600


def test_write_key_file_creates_private_dir(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    assert mode_of(path.parent) & 0o077 == 0


def test_write_key_file_leaves_no_temp(tmp_path: Path) -> None:
    keys.write_key_file(tmp_path / "node.key", keys.generate("@node"))
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_write_key_file_document(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = keys.from_seed(RFC_SEED, "@node")
    keys.write_key_file(path, key)
    document = json.loads(path.read_text())
    assert document == {
        "account": "@node",
        "pubkey": key.pubkey,
        "secret_key": b64url_encode(RFC_SEED),
    }


def test_write_key_file_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keys.write_key_file(path, keys.generate("@node"))
    assert path.read_bytes() == before


def test_write_key_file_overwrites_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    replacement = keys.generate("@node")
    keys.write_key_file(path, replacement, overwrite=True)
    assert keys.load_key_file(path).pubkey == replacement.pubkey


def test_load_key_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "founder.key"
    key = keys.from_seed(RFC_SEED, "@founder")
    keys.write_key_file(path, key)
    loaded = keys.load_key_file(path)
    assert loaded.pubkey == key.pubkey
    assert loaded.account == "@founder"
    assert loaded.sign(b"m") == key.sign(b"m")


def test_load_key_file_accepts_unbound_key(tmp_path: Path) -> None:
    path = tmp_path / "spare.key"
    keys.write_key_file(path, keys.generate(None))
    assert keys.load_key_file(path).account is None


def test_load_key_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(StartupError, match="not found") as caught:
        keys.load_key_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_key_file_rejects_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    path.chmod(mode)
    with pytest.raises(StartupError) as caught:
        keys.load_key_file(path)
    assert f"{mode:04o}" in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)


def test_load_key_file_public_allowed_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.write_key_file(path, keys.generate("@node"))
    path.chmod(0o644)
    assert keys.load_key_file(path, require_private=False).account == "@node"


def _write_document(path: Path, document: object) -> None:
    path.write_text(json.dumps(document))
    path.chmod(0o600)


def _valid_document() -> dict[str, object]:
    key = keys.from_seed(RFC_SEED, "@node")
    return {
        "account": "@node",
        "pubkey": key.pubkey,
        "secret_key": b64url_encode(RFC_SEED),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"secret_key": None}, "not a valid key file", id="secret-null"),
        pytest.param(
            {"secret_key": "not base64"}, "not a valid key file", id="secret-garbage"
        ),
        pytest.param(
            {"secret_key": b64url_encode(bytes(31))}, "32-byte seed", id="seed-31"
        ),
        pytest.param({"account": "alice"}, "not a valid id", id="bad-account"),
        pytest.param({"pubkey": "z6Mkxyz"}, "pubkey is invalid", id="bad-pubkey"),
        pytest.param(
            {"pubkey": keys.from_seed(bytes(32)).pubkey},
            "does not match",
            id="other-pubkey",
        ),
    ],
)
def test_load_key_file_rejects_document(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "node.key"
    _write_document(path, {**_valid_document(), **change})
    with pytest.raises(StartupError, match=message):
        keys.load_key_file(path)


@pytest.mark.parametrize("missing", ["secret_key", "pubkey"])
def test_load_key_file_rejects_missing_field(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "node.key"
    document = _valid_document()
    del document[missing]
    _write_document(path, document)
    with pytest.raises(StartupError, match="not a valid key file"):
        keys.load_key_file(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b"\xff\xfe", b"null"],
    ids=["empty", "truncated", "array", "binary", "null"],
)
def test_load_key_file_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(StartupError, match="not a valid key file"):
        keys.load_key_file(path)
