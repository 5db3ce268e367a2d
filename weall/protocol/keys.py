"""Ed25519 keys, signatures and key files.

A key file is JSON with mode 0600::

    {"account": "@founder", "pubkey": "z6Mk...", "secret_key": "u..."}

``secret_key`` is the 32-byte Ed25519 seed in multibase base64url; ``account``
may be null for a key not yet bound to an account.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from weall.errors import EncodingError, StartupError
from weall.protocol.encoding import (
    b64url_decode,
    b64url_encode,
    decode_pubkey,
    encode_pubkey,
    encode_sig,
    is_account_id,
)

__all__ = ["KeyPair", "generate", "load_key_file", "verify", "write_key_file"]


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An Ed25519 signing key and the account it belongs to, if any."""

    account: str | None
    signing_key: nacl.signing.SigningKey

    @functools.cached_property
    def pubkey(self) -> str:
        return encode_pubkey(bytes(self.signing_key.verify_key))

    def sign(self, message: bytes) -> str:
        return encode_sig(self.signing_key.sign(message).signature)

    def __repr__(self) -> str:  # never show the seed
        return f"KeyPair(account={self.account!r}, pubkey={self.pubkey!r})"


def generate(account: str | None = None) -> KeyPair:
    return KeyPair(account, nacl.signing.SigningKey.generate())


def from_seed(seed: bytes, account: str | None = None) -> KeyPair:
    return KeyPair(account, nacl.signing.SigningKey(seed))


def verify(pubkey_raw: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature; ``False`` for any invalid key or signature."""
    try:
        nacl.signing.VerifyKey(pubkey_raw).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def write_key_file(path: Path, key: KeyPair, *, overwrite: bool = False) -> None:
    """Write ``key`` to ``path`` with mode 0600, atomically."""
    document = {
        "account": key.account,
        "pubkey": key.pubkey,
        "secret_key": b64url_encode(bytes(key.signing_key)),
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a key file")
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def load_key_file(path: Path, *, require_private: bool = True) -> KeyPair:
    """Read a key file; raise ``StartupError`` naming the problem.

    With ``require_private``, a file that group or others can read is rejected,
    because it holds a signing seed.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise StartupError(
            f"key file {path} not found; create one with `weall keygen`"
        ) from None
    if require_private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StartupError(
            f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must be readable by its owner only: chmod 600 {path}"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        secret = document["secret_key"]
        if not isinstance(secret, str):
            raise TypeError("secret_key must be a string")
        seed = b64url_decode(secret)
        account = document.get("account")
        pubkey = document["pubkey"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"key file {path} is not a valid key file: {exc}") from None
    if len(seed) != 32:
        raise StartupError(f"key file {path}: secret_key must be a 32-byte seed")
    if account is not None and not is_account_id(account):
        raise StartupError(f"key file {path}: account {account!r} is not a valid id")
    key = from_seed(seed, account)
    try:
        decode_pubkey(pubkey)
    except EncodingError as exc:
        raise StartupError(f"key file {path}: pubkey is invalid: {exc}") from None
    if key.pubkey != pubkey:
        raise StartupError(f"key file {path}: pubkey does not match secret_key")
    return key
