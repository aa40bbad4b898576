"""The DISA PIN: PortSIP's policy, and salted hashing with constant-time comparison.

A PIN is 6-10 digits with no run of three equal digits (`111`) and no ascending or
descending run of three (`123`, `987`). It is stored only as a PBKDF2-SHA256 hash with a
random salt (`pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`) and compared with
`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PIN_HASH_PREFIX = "pbkdf2_sha256$"
_ITERATIONS = 60_000


def pin_policy_problem(pin: str) -> str | None:
    """Why `pin` breaks the PIN policy, or None when it is acceptable. Never echoes the PIN."""
    if not (pin.isascii() and pin.isdigit()):
        return "must contain only the digits 0-9"
    if not 6 <= len(pin) <= 10:
        return f"must be 6 to 10 digits long (got {len(pin)})"
    for a, b, c in zip(pin, pin[1:], pin[2:], strict=False):
        x, y, z = int(a), int(b), int(c)
        if x == y == z:
            return "must not contain three equal digits in a row (like 111)"
        if y - x == z - y and abs(y - x) == 1:
            return "must not contain three consecutive digits in a row (like 123 or 987)"
    return None


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """A salted hash of `pin` for storage."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, _ITERATIONS)
    return f"{PIN_HASH_PREFIX}{_ITERATIONS}${salt.hex()}${digest.hex()}"


def is_pin_hash(value: str) -> bool:
    parts = value.split("$")
    return (
        value.startswith(PIN_HASH_PREFIX)
        and len(parts) == 4
        and parts[1].isdigit()
        and all(len(p) > 0 for p in parts[2:])
    )


def verify_pin(stored_hash: str, candidate: str) -> bool:
    """Whether `candidate` is the PIN behind `stored_hash`, in constant time."""
    if not is_pin_hash(stored_hash):
        return False
    _, iterations, salt_hex, digest_hex = stored_hash.split("$")
    try:
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", candidate.encode(), salt, int(iterations))
    return hmac.compare_digest(actual, expected)


def mask_digits(digits: str) -> str:
    """The form of PIN digits that may appear outside the flow."""
    return "*" * len(digits)
