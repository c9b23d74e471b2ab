"""Credentials without services: tokens, passwords, ID numbers."""

import time

import jwt
import pytest

from api.accounts.admins import Admins
from api.accounts.auth import (
    ALGORITHM,
    Tokens,
    bearer,
    check_password,
    claimed_patient,
    derive_key,
    hash_password,
)
from engine.store.keys import Keys

SECRET = "k" * 32


def tokens() -> Tokens:
    return Tokens(SECRET, "admin-token-123456", 60)


def test_tokens_round_trip_expire_and_resist_forgery():
    t = tokens()
    token = t.issue(42)
    assert t.patient_of(token) == 42
    assert t.patient_of(token) == 42  # from the cache
    assert Tokens("other-key" * 4, "x" * 16, 60).patient_of(token) is None
    old = t.issue(42, now=time.time() - 120)
    assert t.patient_of(old) is None
    head, body, sig = token.split(".")
    assert t.patient_of(f"{head}.{body}.{sig[:-2]}xx") is None
    assert t.patient_of("garbage") is None
    assert claimed_patient(token) == 42
    assert claimed_patient("a.b") is None


def test_admin_token_and_bearer_parsing():
    t = tokens()
    assert t.is_admin("admin-token-123456")
    assert not t.is_admin("admin-token-12345")
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None
    assert bearer("Bearer ") is None


def test_passwords_and_id_numbers():
    hashed = hash_password("correct horse")
    assert check_password(hashed, "correct horse")
    assert not check_password(hashed, "wrong")
    assert not check_password("not-a-hash", "x")
    t = tokens()
    assert t.hash_id("110101199001011234") == t.hash_id(" 110101199001011234 ")
    assert "1990" not in t.hash_id("110101199001011234")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "42", "exp": 2e9, "iat": 1, "ver": 1},  # no aud: a token of before
        {"sub": "42", "aud": "patient", "iat": 1, "ver": 1},  # no exp
        {"sub": "42", "aud": "patient", "exp": 2e9, "iat": 1},  # no version
        {"aud": "patient", "exp": 2e9, "iat": 1, "ver": 1},  # no subject
        {"sub": "42", "aud": "admin", "exp": 2e9, "iat": 1, "ver": 1},  # another audience
        {"sub": "42", "aud": "patient", "exp": 2e9, "iat": 1, "ver": "1"},  # a version as text
        {"sub": "x", "aud": "patient", "exp": 2e9, "iat": 1, "ver": 1},
        {"sub": "42", "aud": "patient", "exp": "soon", "iat": 1, "ver": 1},
    ],
)
def test_a_patient_token_missing_or_bending_a_claim_is_not_valid(claims):
    token = jwt.encode(claims, derive_key(SECRET, "patient tokens"), algorithm=ALGORITHM)
    assert tokens().patient_of(token) is None


def test_a_token_signed_with_the_secret_itself_is_not_valid():
    claims = {"sub": "42", "aud": "patient", "exp": 2e9, "iat": 1, "ver": 1}
    assert tokens().patient_of(jwt.encode(claims, SECRET, algorithm=ALGORITHM)) is None


def test_patient_and_admin_tokens_use_different_keys():
    assert derive_key(SECRET, "patient tokens") != derive_key(SECRET, "admin tokens")
    admins = Admins(None, Keys("t"), SECRET, 60)  # type: ignore[arg-type]
    admin_token = admins.issue({"id": "adm1", "version": 1, "hospital_id": None})
    assert tokens().patient_of(admin_token) is None


def test_a_bumped_version_voids_older_tokens_even_from_the_cache():
    t = tokens()
    old = t.issue(42)
    assert t.patient_of(old) == 42
    t.set_version(42, 2)
    assert t.patient_of(old) is None
    assert t.patient_of(t.issue(42)) == 42, "a new token carries the new version"
    t.set_version(42, 1)
    assert t.patient_of(old) is None, "versions only grow"


def test_the_fast_path_believes_a_holder_claim_only_with_a_valid_token():
    t = tokens()
    real = t.issue(42)
    forged_claims = {"sub": "42", "aud": "patient", "exp": 2e9, "iat": 1, "ver": 1}
    forged = jwt.encode(forged_claims, "not-the-key" * 3, algorithm=ALGORITHM)
    holders = frozenset({42})
    assert t.holder_of(real, holders) == 42
    assert t.holder_of(forged, holders) is None
    assert t.holder_of(real, frozenset({7})) is None
    assert t.holder_of(None, holders) is None


def test_the_claims_read_once_per_token_never_outlive_a_revocation_or_the_bound():
    t = tokens()
    real = t.issue(42)
    forged = jwt.encode(
        {"sub": "42", "aud": "patient", "exp": 2e9, "iat": 1, "ver": 1},
        "not-the-key" * 3,
        algorithm=ALGORITHM,
    )
    holders = frozenset({42})
    for _ in range(3):  # the second and third reads come from the cache
        assert t.holder_of(real, holders) == 42
        assert t.holder_of(forged, holders) is None
    t.set_version(42, 2)  # revoked: the cached claim does not make it valid
    assert t.holder_of(real, holders) is None
    t.CACHE_SIZE = 5
    for n in range(12):
        t.holder_of(t.issue(1000 + n), holders)
    assert len(t._claimed) <= 5
