"""Ed25519 identities and their key-file format (pure: bytes in, bytes out).

The file on disk is written by :mod:`gossipmind.store.keyfile`; this module only
encodes and decodes its content. A key file is canonical msgpack::

    {"v": 1, "kind": "ed25519", "seed": <32 bytes>}                       # plain
    {"v": 1, "kind": "ed25519", "kdf": "scrypt", "salt": <16 bytes>,
     "n": 32768, "r": 8, "p": 1, "nonce": <12 bytes>, "ct": <48 bytes>}    # encrypted

Encryption uses scrypt to derive a 256-bit key and AES-256-GCM (``cryptography``).
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gossipmind.core import encoding
from gossipmind.core.errors import EncodingError, IdentityError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_SCRYPT_N = 2**15


class Identity:
    """A signing key. ``public`` is the 32-byte author key used in ops."""

    __slots__ = ("_signing_key", "public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise IdentityError("an Ed25519 seed is 32 bytes")
        self.seed = bytes(seed)
        self._signing_key = nacl.signing.SigningKey(self.seed)
        self.public = bytes(self._signing_key.verify_key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.seed == self.seed

    def __hash__(self) -> int:
        return hash(self.public)

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(public={self.public.hex()[:16]}...)"


def generate(random_bytes: bytes) -> Identity:
    """Create an identity from 32 bytes of caller-supplied randomness."""
    return Identity.from_seed(random_bytes)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public``."""
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def dump_key(identity: Identity, passphrase: str | None, salt: bytes, nonce: bytes) -> bytes:
    """Serialise a key file. ``salt`` (16 B) and ``nonce`` (12 B) come from the caller."""
    if not passphrase:
        return encoding.encode({"v": 1, "kind": "ed25519", "seed": identity.seed})
    key = _derive(passphrase, salt, _SCRYPT_N, 8, 1)
    ct = AESGCM(key).encrypt(nonce, identity.seed, b"gossipmind/key/1")
    return encoding.encode(
        {
            "v": 1,
            "kind": "ed25519",
            "kdf": "scrypt",
            "salt": salt,
            "n": _SCRYPT_N,
            "r": 8,
            "p": 1,
            "nonce": nonce,
            "ct": ct,
        }
    )


class NotAKey(IdentityError):
    """The bytes are not a gossipmind key file at all (damaged, or another file);
    :mod:`gossipmind.store.keyfile` names the file and what to do."""


def is_encrypted(data: bytes) -> bool:
    try:
        doc = encoding.decode(data)
    except EncodingError as exc:
        raise NotAKey(f"key file is not a gossipmind key: {exc}") from exc
    return isinstance(doc, dict) and "ct" in doc


def load_key(data: bytes, passphrase: str | None) -> Identity:
    """Parse a key file; raise :class:`IdentityError` with a precise reason
    (:class:`NotAKey` if it is not a key file at all)."""
    try:
        doc = encoding.decode(data)
    except EncodingError as exc:
        raise NotAKey(f"key file is not a gossipmind key: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("kind") != "ed25519":
        raise NotAKey("key file is not a version-1 Ed25519 gossipmind key")
    if "seed" in doc:
        seed = doc["seed"]
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise IdentityError("key file seed must be 32 bytes")
        return Identity.from_seed(seed)
    if doc.get("kdf") != "scrypt":
        raise IdentityError("key file uses an unknown key-derivation function")
    if not passphrase:
        raise IdentityError(
            "key file is encrypted: a passphrase is required "
            "(--passphrase-file, or GOSSIPMIND_PASSPHRASE)"
        )
    try:
        key = _derive(passphrase, doc["salt"], doc["n"], doc["r"], doc["p"])
        seed = AESGCM(key).decrypt(doc["nonce"], doc["ct"], b"gossipmind/key/1")
    except InvalidTag as exc:
        raise IdentityError("wrong passphrase for the key file") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise IdentityError(f"encrypted key file is malformed: {exc}") from exc
    return Identity.from_seed(seed)
