"""A hospital's rules as data: booking window, payment window, cancellation fee tiers,
no-show handling, blacklist rules and patient limits. Pure; time is passed in.

Defaults follow 114 (Beijing): a 7-day window released at 15:00, cancellation until 16:00 the
day before the visit, and a ban of 30 / 60 / 90 days after the 1st / 2nd / 3rd no-show within
a year. Every value can be changed per hospital (``Policy.from_dict``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

MAX_HOLD_SECONDS = 7 * 86400
MAX_BAN_DAYS = 365  # the longest ban, and the longest window a ban rule looks back over
MAX_RETURN_JITTER = 3600
DAY = 86400.0
NO_SHOW, CANCEL, SAME_DAY_CANCEL = "no_show", "cancel", "same_day_cancel"
HOLD_ABUSE = "hold_abuse"  # a hold let go (expired or cancelled unpaid) past the free ones a day
VIOLATION_KINDS = (NO_SHOW, CANCEL, SAME_DAY_CANCEL, HOLD_ABUSE)
PLATFORM = "platform"  # the scope key of platform-wide bans


def _minute_of(hhmm: str) -> int:
    hour, _, minute = hhmm.partition(":")
    if not (len(hour) == 2 and len(minute) == 2 and hour.isdigit() and minute.isdigit()):
        raise ValueError(f"time of day must be HH:MM, got {hhmm!r}")
    value = int(hour) * 60 + int(minute)
    if int(hour) > 23 or int(minute) > 59:
        raise ValueError(f"time of day must be HH:MM, got {hhmm!r}")
    return value


@dataclass(frozen=True, slots=True)
class FeeTier:
    """Cancelling at least ``minutes_before`` the visit keeps ``fee_percent`` of the fee."""

    minutes_before: int
    fee_percent: int

    def __post_init__(self) -> None:
        if self.minutes_before < 0 or not 0 <= self.fee_percent <= 100:
            raise ValueError("a fee tier needs minutes_before ≥ 0 and fee_percent 0..100")


@dataclass(frozen=True, slots=True)
class BanRule:
    """``count`` violations of ``kind`` within ``window_days`` earn the next ban."""

    kind: str
    count: int
    window_days: int

    def __post_init__(self) -> None:
        if self.kind not in VIOLATION_KINDS:
            raise ValueError(f"kind must be one of {VIOLATION_KINDS}")
        if not 1 <= self.count <= 100 or not 1 <= self.window_days <= MAX_BAN_DAYS:
            raise ValueError(f"a ban rule needs count 1..100 and window_days 1..{MAX_BAN_DAYS}")


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-hospital rule values. Times of day are local ``HH:MM``."""

    hospital_day_limit: int = 2
    department_day_limit: int = 1
    hold_seconds: int = 15 * 60  # payment window of a hold
    window_days: int = 7  # sessions open this many days before the visit ...
    release_at: str = "15:00"  # ... at this time of day
    booking_closes_minutes: int = 0  # last booking: minutes before the session starts
    cancel_days_before: int = 1  # last cancellation: this many days before the visit ...
    cancel_until: str = "16:00"  # ... at this time of day
    fee_tiers: tuple[FeeTier, ...] = (FeeTier(0, 0),)
    no_show_grace_minutes: int = 30  # after the session's last slot ends
    no_show_refund: bool = True  # the seed: a no-show's fee is refunded on the visit day
    ban_rules: tuple[BanRule, ...] = (BanRule(NO_SHOW, 1, 365), BanRule(HOLD_ABUSE, 3, 30))
    ban_days: tuple[int, ...] = (30, 60, 90)  # the 1st, 2nd, 3rd... ban within a year
    ban_scope: Literal["hospital", "platform"] = "hospital"  # platform: set by the platform only
    check_in_max_tries: int = 5  # wrong verification codes before a booking is locked
    waitlist_limit: int = 500  # patients on one session's waitlist
    free_hold_releases: int = 2  # holds a patient may let go a day before each is hold_abuse
    return_jitter_seconds: int = 60  # a freed slot nobody waits for returns within this, at random

    def __post_init__(self) -> None:
        # tiers are read largest threshold first, however they were given
        object.__setattr__(
            self, "fee_tiers", tuple(sorted(self.fee_tiers, key=lambda t: -t.minutes_before))
        )
        if not 1 <= self.hospital_day_limit <= 100 or not 1 <= self.department_day_limit <= 100:
            raise ValueError("day limits must be 1..100")
        if not 1 <= self.hold_seconds <= MAX_HOLD_SECONDS:
            raise ValueError(f"hold_seconds must be 1..{MAX_HOLD_SECONDS}")
        if not 1 <= self.window_days <= 90:
            raise ValueError("window_days must be 1..90")
        _minute_of(self.release_at)
        _minute_of(self.cancel_until)
        if not 0 <= self.booking_closes_minutes <= 7 * 1440:
            raise ValueError("booking_closes_minutes must be 0..10080")
        if not 0 <= self.cancel_days_before <= 30:
            raise ValueError("cancel_days_before must be 0..30")
        if not self.fee_tiers or len(self.fee_tiers) > 20:
            raise ValueError("fee_tiers needs 1..20 tiers")
        if not 0 <= self.no_show_grace_minutes <= 1440:
            raise ValueError("no_show_grace_minutes must be 0..1440")
        if not self.ban_days or any(not 1 <= d <= MAX_BAN_DAYS for d in self.ban_days):
            raise ValueError(f"ban_days needs at least one length of 1..{MAX_BAN_DAYS} days")
        if len(self.ban_rules) > 10 or len(self.ban_days) > 10:
            raise ValueError("at most 10 ban rules and 10 ban lengths")
        if self.ban_scope not in ("hospital", PLATFORM):
            raise ValueError("ban_scope must be hospital or platform")
        if not 1 <= self.check_in_max_tries <= 15 or not 1 <= self.waitlist_limit <= 10_000:
            raise ValueError("check_in_max_tries must be 1..15, waitlist_limit 1..10000")
        if not 0 <= self.free_hold_releases <= 100:
            raise ValueError("free_hold_releases must be 0..100")
        if not 0 <= self.return_jitter_seconds <= MAX_RETURN_JITTER:
            raise ValueError(f"return_jitter_seconds must be 0..{MAX_RETURN_JITTER}")

    # ----- data in and out -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fee_tiers"] = [asdict(t) for t in self.fee_tiers]
        out["ban_rules"] = [asdict(r) for r in self.ban_rules]
        out["ban_days"] = list(self.ban_days)
        return out

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], base: Policy | None = None, *, stored: bool = False
    ) -> Policy:
        """A policy from (part of) a dict; missing fields keep ``base``'s (or the default).
        Anything of the wrong shape or type raises ``ValueError``. ``stored``: a policy read
        back from Redis, written before the caps of today (ban lengths and windows over
        ``MAX_BAN_DAYS`` are cut to it rather than refused, so the shard still loads)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown policy fields: {sorted(unknown)}")
        if stored:
            values = _capped(values)
        merged = {**(base or cls()).to_dict(), **values}
        try:
            tiers = tuple(
                FeeTier(_int(t["minutes_before"]), _int(t["fee_percent"]))
                for t in _list(merged["fee_tiers"])
            )
            rules = tuple(
                BanRule(_str(r["kind"]), _int(r["count"]), _int(r["window_days"]))
                for r in _list(merged["ban_rules"])
            )
            days = tuple(_int(d) for d in _list(merged["ban_days"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"fee_tiers, ban_rules or ban_days malformed: {exc!r}") from exc
        merged.update(fee_tiers=tiers, ban_rules=rules, ban_days=days)
        for name in ("release_at", "cancel_until", "ban_scope"):
            _str(merged[name])
        for name in known - {
            "fee_tiers",
            "ban_rules",
            "ban_days",
            "release_at",
            "cancel_until",
            "ban_scope",
            "no_show_refund",
        }:
            _int(merged[name], name)
        if type(merged["no_show_refund"]) is not bool:
            raise ValueError("no_show_refund must be true or false")
        return cls(**merged)

    # ----- what the rules say --------------------------------------------------------------

    def kept_percent(self, minutes_before: float) -> int:
        """The fee percent kept when cancelling ``minutes_before`` the visit (railway-style
        tiers: the first tier whose threshold has not passed; after every tier, the last)."""
        for tier in self.fee_tiers:  # sorted by minutes_before, largest first
            if minutes_before >= tier.minutes_before:
                return tier.fee_percent
        return self.fee_tiers[-1].fee_percent

    def refund_for_cancel(self, fee: int, paid: bool, starts_at: float, now: float) -> int:
        if not paid:
            return 0
        kept = fee * self.kept_percent((starts_at - now) / 60) // 100
        return fee - kept

    def opens_at(self, visit: dt.date, zone: dt.tzinfo) -> float:
        """When a session of ``visit`` is released: ``window_days`` before, at ``release_at``."""
        return local_epoch(visit - dt.timedelta(days=self.window_days), self.release_at, zone)

    def cancel_cutoff(self, visit: dt.date, zone: dt.tzinfo) -> float:
        return local_epoch(
            visit - dt.timedelta(days=self.cancel_days_before), self.cancel_until, zone
        )


def _capped(values: dict[str, Any]) -> dict[str, Any]:
    """Ban lengths and rule windows cut to ``MAX_BAN_DAYS`` (for policies stored before it)."""
    out = dict(values)
    days = out.get("ban_days")
    if isinstance(days, list | tuple):
        out["ban_days"] = [min(d, MAX_BAN_DAYS) if type(d) is int else d for d in days]
    rules = out.get("ban_rules")
    if isinstance(rules, list | tuple):
        out["ban_rules"] = [
            {**r, "window_days": min(r["window_days"], MAX_BAN_DAYS)}
            if isinstance(r, dict) and type(r.get("window_days")) is int
            else r
            for r in rules
        ]
    return out


def _int(value: Any, name: str = "a value") -> int:
    if type(value) is not int:  # not bool, not float
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _list(value: Any) -> list:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    return list(value)


def local_epoch(day: dt.date, hhmm: str, zone: dt.tzinfo) -> float:
    minute = _minute_of(hhmm)
    return dt.datetime(
        day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone
    ).timestamp()


def local_date(epoch: float, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(epoch, zone).date().isoformat()


# ----- conduct: violations → bans (a pure function of the record) ---------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    at: float
    kind: str
    booking_id: str


@dataclass(frozen=True, slots=True)
class Ban:
    start: float
    until: float
    cause: str  # the booking id whose violation earned it


@dataclass(slots=True)
class Conduct:
    violations: list[Violation] = field(default_factory=list)
    bans: list[Ban] = field(default_factory=list)

    def banned_until(self, now: float) -> float | None:
        until = max((b.until for b in self.bans), default=-math.inf)
        return until if until > now else None


def judge(violations: list[Violation], policy: Policy) -> Conduct:
    """Replay a patient's violations in time order and derive their bans.

    A rule fires when ``count`` violations of its kind fall within its window and after the
    start of the last ban (a ban wipes the slate). The n-th ban within 365 days lasts
    ``ban_days[n-1]`` (the last length repeats); a ban earned while banned starts when the
    current one ends. Deterministic, so replaying the same record always gives the same bans.
    """
    ordered = sorted(violations, key=lambda v: (v.at, v.booking_id, v.kind))
    bans: list[Ban] = []
    slate = -1  # index of the violation that earned the last ban: only later ones count
    causes: set[str] = set()  # one booking (a same-day cancel is two kinds) earns one ban
    for i, v in enumerate(ordered):
        if v.booking_id in causes:
            continue
        for rule in policy.ban_rules:
            if rule.kind != v.kind:
                continue
            window_start = v.at - rule.window_days * DAY
            count = sum(
                1
                for w in ordered[slate + 1 : i + 1]
                if w.kind == rule.kind and w.at > window_start and w.booking_id not in causes
            )
            if count < rule.count:
                continue
            recent = sum(1 for b in bans if b.start > v.at - 365 * DAY)
            days = policy.ban_days[min(recent, len(policy.ban_days) - 1)]
            start = max([v.at, *(b.until for b in bans)])
            bans.append(Ban(start, start + days * DAY, v.booking_id))
            causes.add(v.booking_id)
            slate = i
            break
    return Conduct(ordered, bans)


def parse_conduct(record: dict[bytes, bytes]) -> list[Violation]:
    """A patient's stored conduct record (\"<booking id>:<kind>\" → time) as violations."""
    out = []
    for key, at in record.items():
        booking_id, _, kind = key.decode().rpartition(":")
        out.append(Violation(float(at), kind, booking_id))
    return out
