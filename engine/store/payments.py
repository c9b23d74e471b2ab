"""Payments behind a small gateway interface, and a sandbox gateway that behaves like a real one.

The sandbox keeps its records in Redis: one payment per booking (the booking id is the order
number, so paying twice takes the money once), refunds keyed by the caller (so a retried refund
pays out once), refunds only to the original account and never more than was paid (partial
refunds add up). ``paid = refunded + kept`` holds per payment by construction.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from engine.errors import StoreUnavailable
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    booking_id: str
    account: int  # the paying patient: refunds go back here
    amount: int  # fen
    refunded: int
    paid_at: float


@dataclass(frozen=True, slots=True)
class Refund:
    booking_id: str
    key: str
    amount: int  # what this refund paid out (0 when nothing was left to refund)
    account: int


class PaymentGateway(Protocol):
    async def charge(self, booking_id: str, account: int, amount: int) -> Payment:
        """Take ``amount`` from ``account`` for this booking; the same booking again answers
        the first payment and takes nothing."""

    async def refund(self, booking_id: str, amount: int | None, key: str) -> Refund | None:
        """Give back up to ``amount`` (None = all that is left) of the booking's payment to
        its account, once per ``key``. None when the booking has no payment."""

    async def payment(self, booking_id: str) -> Payment | None: ...


# KEYS: payment hash. ARGV: booking, account, amount, new id, now. (The booking is listed in
# the payments set and the pending set before: a listed booking without a payment is skipped
# by their readers, a payment never goes unlisted.)
CHARGE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'payment_id', ARGV[4], 'booking_id', ARGV[1],
             'account', ARGV[2], 'amount', ARGV[3], 'refunded', 0, 'paid_at', ARGV[5])
end
return redis.call('HMGET', KEYS[1], 'payment_id', 'account', 'amount', 'refunded', 'paid_at')
"""

# KEYS: payment hash (its refunds are its fields ``r:<key>``). ARGV: key, amount (-1 = the rest).
# Returns [paid out, account].
REFUND_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local account = redis.call('HGET', KEYS[1], 'account')
local done = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if done then
  return {tonumber(done), account}
end
local paid = tonumber(redis.call('HGET', KEYS[1], 'amount'))
local refunded = tonumber(redis.call('HGET', KEYS[1], 'refunded'))
local want = tonumber(ARGV[2])
local left = paid - refunded
if want < 0 or want > left then
  want = left
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], want)
redis.call('HINCRBY', KEYS[1], 'refunded', want)
return {want, account}
"""


class SandboxGateway:
    """A payment gateway with no real money, its ledger in Redis."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def charge(self, booking_id: str, account: int, amount: int) -> Payment:
        if amount <= 0:
            raise ValueError("a payment must be positive")
        new_id, now = f"pay_{secrets.token_hex(8)}", time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:  # listed first
                pipe.sadd(self.keys.payments, booking_id)
                pipe.zadd(self.keys.pending_payments, {booking_id: now}, nx=True)
                await pipe.execute()
            pid, acct, amt, refunded, paid_at = await self.client.eval(
                CHARGE_SCRIPT,
                1,
                self.keys.payment(booking_id),
                booking_id,
                account,
                amount,
                new_id,
                repr(now),
            )
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"payment gateway unreachable: {exc}") from exc
        return Payment(pid.decode(), booking_id, int(acct), int(amt), int(refunded), float(paid_at))

    async def refund(self, booking_id: str, amount: int | None, key: str) -> Refund | None:
        try:
            result = await self.client.eval(
                REFUND_SCRIPT,
                1,
                self.keys.payment(booking_id),
                key,
                -1 if amount is None else amount,
            )
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"payment gateway unreachable: {exc}") from exc
        if result is None:
            return None
        return Refund(booking_id, key, int(result[0]), int(result[1]))

    async def refund_many(self, refunds: list[tuple[str, int | None, str]]) -> list[Refund | None]:
        """``refund`` for many (booking id, amount, key) in one round trip."""
        keys = self.keys
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for booking_id, amount, key in refunds:
                    pipe.eval(
                        REFUND_SCRIPT,
                        1,
                        keys.payment(booking_id),
                        key,
                        -1 if amount is None else amount,
                    )
                results = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"payment gateway unreachable: {exc}") from exc
        return [
            None if r is None else Refund(booking_id, key, int(r[0]), int(r[1]))
            for (booking_id, _, key), r in zip(refunds, results, strict=True)
        ]

    async def payment(self, booking_id: str) -> Payment | None:
        try:
            raw = await self.client.hgetall(self.keys.payment(booking_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"payment gateway unreachable: {exc}") from exc
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return Payment(
            f["payment_id"],
            booking_id,
            int(f["account"]),
            int(f["amount"]),
            int(f["refunded"]),
            float(f["paid_at"]),
        )

    async def settled(self, booking_id: str) -> None:
        """The engine has answered this payment (booked, or refunded): stop watching it."""
        try:
            await self.client.zrem(self.keys.pending_payments, booking_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"payment gateway unreachable: {exc}") from exc

    async def unsettled(self, older_than: float, count: int = 100, offset: int = 0) -> list[str]:
        """Booking ids charged before ``older_than`` (epoch) whose outcome nobody recorded."""
        raw = await self.client.zrangebyscore(
            self.keys.pending_payments, "-inf", older_than, start=offset, num=count
        )
        return [r.decode() for r in raw]

    async def refunds(self, booking_id: str) -> dict[str, int]:
        raw = await self.client.hgetall(self.keys.payment(booking_id))
        return {k[2:].decode(): int(v) for k, v in raw.items() if k.startswith(b"r:")}

    async def ledger(self) -> dict[str, Payment]:
        """Every payment, by booking id (for audits: money in = money out + kept)."""
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.payments))
        out = {}
        for booking_id in ids:
            payment = await self.payment(booking_id)
            if payment is not None:
                out[booking_id] = payment
        return out
