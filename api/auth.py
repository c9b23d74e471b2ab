"""Credentials: patients' passwords and bearer tokens, the admin token, ID numbers.

Passwords are hashed with Argon2 (argon2-cffi); tokens are HS256 JWTs (PyJWT) signed with a key
every worker shares; the admin token is compared in constant time; a patient's ID number is
kept only as a keyed hash (for uniqueness) and a masked form (for display).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_id_number(secret: str, id_number: str) -> str:
    """Keyed hash of a national ID number: equal numbers match, the number itself is gone."""
    normalized = id_number.strip().upper()
    return hmac.new(secret.encode(), normalized.encode(), hashlib.sha256).hexdigest()


def mask_id_number(id_number: str) -> str:
    """110101********1234: enough for a person to recognise, useless to anyone else."""
    n = id_number.strip()
    return n[:6] + "*" * max(0, len(n) - 10) + n[-4:] if len(n) > 10 else "*" * len(n)


class Tokens:
    """Issue and read patients' bearer tokens; check the platform admin's token."""

    CACHE_SIZE = 100_000

    def __init__(self, secret: str, admin_token: str, lifetime_seconds: int) -> None:
        self._secret = secret
        self._admin = admin_token.encode()
        self._lifetime = lifetime_seconds
        self._verified: dict[str, tuple[int, float]] = {}  # token → (patient, expires at)

    def issue(self, patient_id: int, now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {"sub": str(patient_id), "iat": int(now), "exp": int(now) + self._lifetime}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def patient_of(self, token: str) -> int | None:
        """The patient id a valid, unexpired token names; None for anything else.

        A verified token is remembered until it expires, so a patient pressing "book" again
        and again costs one signature check, not one per press.
        """
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM])
            patient = int(claims["sub"])
        except (jwt.PyJWTError, KeyError, ValueError, TypeError):
            return None
        if patient <= 0:
            return None
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (patient, float(claims["exp"]))
        return patient

    def hash_id(self, id_number: str) -> str:
        return hash_id_number(self._secret, id_number)

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._admin)


def claimed_patient(token: str | None) -> int | None:
    """The patient a token *claims* to be, signature unchecked (cheap).

    Only for routing: the fast path sends a claimed holder of a booking on to the engine,
    where the token is verified like any other; a forged claim gains nothing.
    """
    if not token:
        return None
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
