"""Admin accounts and their scopes: the platform admin (every hospital) and hospital admins
(only their own hospital).

Accounts are made by the platform admin. A password is kept only as an Argon2 hash; a login
gives an HS256 JWT with audience ``admin`` (so a patient's token is never an admin's, nor the
other way round) that names the account and its token version. Disabling an account bumps the
version, which voids every token it was given. The platform admin's own bearer token
(``SLOTENGINE_ADMIN_TOKEN``) stays the root of trust, compared in constant time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import redis.asyncio as aioredis

from api.accounts.auth import ALGORITHM, derive_key
from engine.errors import StoreUnavailable
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys

AUDIENCE = "admin"


@dataclass(frozen=True, slots=True)
class AdminScope:
    """Who is acting: ``hospital_id`` None is the platform admin."""

    admin_id: str
    hospital_id: str | None

    @property
    def platform(self) -> bool:
        return self.hospital_id is None

    def may(self, hospital_id: str) -> bool:
        return self.hospital_id is None or self.hospital_id == hospital_id


ROOT = AdminScope("root", None)


class Admins:
    """Admin accounts in Redis: ``<ns>:admin:<id>`` (JSON) and a login → id index."""

    def __init__(self, client: aioredis.Redis, keys: Keys, secret: str, lifetime: int) -> None:
        self.client = client
        self.keys = keys
        self._secret = derive_key(secret, "admin tokens")  # never a patient token's key
        self._lifetime = lifetime

    async def create(self, doc: dict[str, Any]) -> str | None:
        """A new account; None when the login is taken."""
        try:
            admin_id = f"adm{await self.client.incr(self.keys.seq('admin'))}"
            if not await self.client.hsetnx(self.keys.admin_by_login, doc["login"], admin_id):
                return None
            stored = {
                **doc,
                "id": admin_id,
                "version": 1,
                "disabled": False,
                "created_at": time.time(),
            }
            await self.client.set(self.keys.entity("admin", admin_id), orjson.dumps(stored))
            await self.client.sadd(self.keys.all("admin"), admin_id)  # listed once it is there
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        return admin_id

    async def get(self, admin_id: str) -> dict[str, Any] | None:
        if not admin_id.startswith("adm") or not admin_id[3:].isdigit():
            return None
        raw = await self.client.get(self.keys.entity("admin", admin_id))
        return None if raw is None else orjson.loads(raw)

    async def by_login(self, login: str) -> dict[str, Any] | None:
        admin_id = await self.client.hget(self.keys.admin_by_login, login)
        return None if admin_id is None else await self.get(admin_id.decode())

    async def all(self) -> list[dict[str, Any]]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.all("admin")))
        docs = [await self.get(i) for i in ids]
        return [public(d) for d in docs if d is not None]

    async def disable(self, admin_id: str) -> bool:
        """Disable an account and void its tokens. False if there is no such account."""
        doc = await self.get(admin_id)
        if doc is None:
            return False
        doc.update(disabled=True, version=doc["version"] + 1)
        await self.client.set(self.keys.entity("admin", admin_id), orjson.dumps(doc))
        return True

    def issue(self, doc: dict[str, Any], now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {
            "sub": doc["id"],
            "aud": AUDIENCE,
            "hid": doc.get("hospital_id"),
            "ver": doc["version"],
            "iat": int(now),
            "exp": int(now) + self._lifetime,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    async def scope_of(self, token: str) -> AdminScope | None:
        """The scope of a valid admin token of an active account, else None."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["sub", "aud", "exp", "ver"]},
            )
            admin_id = str(claims["sub"])
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError):
            return None
        doc = await self.get(admin_id)
        if doc is None or doc["disabled"] or doc["version"] != claims.get("ver"):
            return None
        return AdminScope(admin_id, doc.get("hospital_id"))


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "password_hash"}
