"""Credentials: patients' passwords and bearer tokens, the admin token, ID numbers.

Passwords are hashed with Argon2 (argon2-cffi). Tokens are HS256 JWTs (PyJWT); patient tokens and
admin tokens are signed with two different keys, both derived with HKDF (``cryptography``) from
the one secret every worker shares, so neither kind can ever pass for the other. A patient token
carries ``aud`` (``patient``), ``exp`` and ``ver``, the patient's token version: a logout or a new
password bumps the version (``Keys.token_versions``, pushed to every worker by pub/sub), which
voids every older token at once without a Redis read on the booking path. A token missing any of
these claims is simply not valid. The platform admin's token is compared in constant time. A
patient's ID number is kept only as a keyed hash (with the secret itself: stored hashes cannot be
recomputed under a new key) and a masked form (``identity.py``).
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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
ALGORITHM = "HS256"
PATIENT_AUDIENCE = "patient"
PATIENT_CLAIMS = ("sub", "aud", "exp", "iat", "ver")


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose (``patient tokens``, ``admin tokens``), derived from the
    shared secret with HKDF-SHA256: one secret to keep and rotate, keys that never overlap."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"slotengine",
        info=f"slotengine {purpose}".encode(),
    ).derive(secret.encode())


def hash_password(password: str) -> str:
    return _hasher.hash(password)


DUMMY_HASH = hash_password("no such patient")  # a login for nobody costs the same work


def check_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_id_number(secret: str, id_number: str) -> str:
    """Keyed hash of a national ID number: equal numbers match, the number itself is gone."""
    normalized = id_number.strip().upper()
    return hmac.new(secret.encode(), normalized.encode(), hashlib.sha256).hexdigest()


class Tokens:
    """Issue and read patients' bearer tokens; check the platform admin's token.

    ``versions`` holds the token version of every patient whose tokens were ever revoked
    (everyone else is at 1); the worker keeps it current from pub/sub (``set_version``)."""

    CACHE_SIZE = 100_000

    def __init__(self, secret: str, admin_token: str, lifetime_seconds: int) -> None:
        self._secret = secret  # only for the ID-number hash, which must stay stable
        self._key = derive_key(secret, "patient tokens")
        self._admin = admin_token.encode()
        self._lifetime = lifetime_seconds
        self._verified: dict[str, tuple[int, float, int]] = {}  # token → (patient, exp, ver)
        self._claimed: dict[str, int | None] = {}  # token → the subject it claims (unchecked)
        self.versions: dict[int, int] = {}

    def issue(self, patient_id: int, now: float | None = None, version: int | None = None) -> str:
        now = time.time() if now is None else now
        claims = {
            "sub": str(patient_id),
            "aud": PATIENT_AUDIENCE,
            "iat": int(now),
            "exp": int(now) + self._lifetime,
            "ver": self.versions.get(patient_id, 1) if version is None else version,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def set_version(self, patient_id: int, version: int) -> None:
        """A patient's tokens below ``version`` stop working (versions only grow)."""
        if version > self.versions.get(patient_id, 1):
            self.versions[patient_id] = version

    def patient_of(self, token: str) -> int | None:
        """The patient id a valid, unexpired, unrevoked token names; None for anything else
        (a forged or foreign signature, another audience, a missing claim, an old version).

        A verified token is remembered until it expires, so a patient pressing "book" again
        and again costs one signature check, not one per press; the version is checked on
        every use, so a revocation takes effect at once.
        """
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            patient, _, version = known
            return patient if version >= self.versions.get(patient, 1) else None
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=PATIENT_AUDIENCE,
                options={"require": list(PATIENT_CLAIMS)},
            )
            patient, version, expires = int(claims["sub"]), claims["ver"], float(claims["exp"])
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError):
            return None
        if patient <= 0 or type(version) is not int:
            return None
        if version < self.versions.get(patient, 1):
            return None
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (patient, expires, version)
        return patient

    def holder_of(self, token: str | None, holders: frozenset[int]) -> int | None:
        """The fast path's question: is the caller one of ``holders``? Reads the claimed
        subject cheaply and verifies the token (cached) only when that subject is a holder, so
        a stranger costs no signature check and a forged token naming a holder gains nothing:
        None unless the token is valid and its patient holds a booking. The claim is read once
        per token (a crowd presses "book" again and again with the same one)."""
        if token is None:
            return None
        if token in self._claimed:
            claimed = self._claimed[token]
        else:
            claimed = claimed_patient(token)
            if len(self._claimed) >= self.CACHE_SIZE:
                self._claimed.clear()
            self._claimed[token] = claimed
        if claimed is None or claimed not in holders:
            return None
        return claimed if self.patient_of(token) == claimed else None  # type: ignore[arg-type]

    def hash_id(self, id_number: str) -> str:
        return hash_id_number(self._secret, id_number)

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._admin)


def claimed_patient(token: str | None) -> int | None:
    """The patient a token *claims* to be, signature unchecked (cheap). Never an answer by
    itself: ``Tokens.holder_of`` verifies the token before anything depends on the claim.
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
