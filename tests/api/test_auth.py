"""Credentials without services: tokens, passwords, ID numbers."""

import time

from api.auth import Tokens, bearer, check_password, claimed_patient, hash_password, mask_id_number


def test_tokens_round_trip_expire_and_resist_forgery():
    tokens = Tokens("k" * 32, "admin-token-123456", 60)
    token = tokens.issue(42)
    assert tokens.patient_of(token) == 42
    assert tokens.patient_of(token) == 42  # from the cache
    assert Tokens("other-key" * 4, "x" * 16, 60).patient_of(token) is None
    old = tokens.issue(42, now=time.time() - 120)
    assert tokens.patient_of(old) is None
    head, body, sig = token.split(".")
    assert tokens.patient_of(f"{head}.{body}.{sig[:-2]}xx") is None
    assert tokens.patient_of("garbage") is None
    assert claimed_patient(token) == 42 and claimed_patient("a.b") is None


def test_admin_token_and_bearer_parsing():
    tokens = Tokens("k" * 32, "admin-token-123456", 60)
    assert tokens.is_admin("admin-token-123456") and not tokens.is_admin("admin-token-12345")
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None


def test_passwords_and_id_numbers():
    hashed = hash_password("correct horse")
    assert check_password(hashed, "correct horse") and not check_password(hashed, "wrong")
    assert not check_password("not-a-hash", "x")
    assert mask_id_number("110101199001011234") == "110101********1234"
    tokens = Tokens("k" * 32, "admin-token-123456", 60)
    assert tokens.hash_id("110101199001011234") == tokens.hash_id(" 110101199001011234 ")
    assert "1990" not in tokens.hash_id("110101199001011234")
