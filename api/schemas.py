"""Request bodies: what each route accepts (unknown fields ignored, not refused)."""

from __future__ import annotations

import re
from datetime import date as Date
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
)

from api.accounts.identity import ID_TYPES
from engine.core.policy import MAX_BAN_DAYS, MAX_RETURN_JITTER


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, not refused


FIRST_YEAR, LAST_YEAR = 2000, 2099
IN_YEARS = r"^20[0-9]{2}-"  # the schema's way to say "2000 to 2099" of a date or a moment
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _within_years(moment: datetime) -> datetime:
    """Moments this platform can mean, written in the years 2000 to 2099 (shown in any time
    zone, they stay within 1999 to 2100)."""
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"the year must be {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def _iso_date(value: object) -> object:
    """A date is written YYYY-MM-DD (not a count of seconds, as pydantic would also take)."""
    if isinstance(value, Date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


Moment = Annotated[
    AwareDatetime,
    AfterValidator(_within_years),
    Field(json_schema_extra={"pattern": IN_YEARS}),
]
Day = Annotated[
    Date,
    BeforeValidator(_iso_date),
    Field(
        ge=Date(FIRST_YEAR, 1, 1),
        le=Date(LAST_YEAR, 12, 31),
        json_schema_extra={"pattern": IN_YEARS},
        description=f"a date YYYY-MM-DD, {FIRST_YEAR} to {LAST_YEAR}",
    ),
]
BirthDate = Annotated[
    Date,
    BeforeValidator(_iso_date),
    Field(ge=Date(1900, 1, 1), json_schema_extra={"pattern": r"^(19|20)[0-9]{2}-"}),
]


# ----- bodies ----------------------------------------------------------------------------------

Phone = Annotated[
    str,
    Field(
        pattern=r"^\+?[0-9][0-9 ()-]{4,24}$",
        description="a phone number, stored and compared in E.164 (+86... by default)",
    ),
]


class PatientIn(Loose):
    name: str = Field(min_length=1, max_length=64)
    phone: Phone
    id_type: Literal[ID_TYPES] = Field(  # type: ignore[valid-type]
        default="resident",
        description="resident (居民身份证, checked by GB 11643 and against birth_date), "
        "passport, hk_macau_permit or taiwan_permit (format only)",
    )
    id_number: str = Field(pattern=r"^[0-9A-Za-z ]{6,32}$")
    birth_date: BirthDate
    password: str = Field(min_length=8, max_length=128)


class PasswordChangeIn(Loose):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=8, max_length=128)


class Credentials(Loose):
    phone: Phone
    password: str = Field(min_length=1, max_length=128)


class BookingIn(Loose):
    request_id: str = Field(min_length=1, max_length=64, description="client-chosen, idempotent")


class HospitalIn(Loose):
    name: str = Field(min_length=1, max_length=100)
    level: str | None = Field(default=None, max_length=20, description="e.g. 三甲")
    address: str | None = Field(default=None, max_length=200)


class DepartmentIn(Loose):
    hospital_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)


class DoctorIn(Loose):
    department_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=40)
    specialty: str | None = Field(default=None, max_length=200)
    introduction: str | None = Field(default=None, max_length=2000)


class SessionIn(Loose):
    doctor_id: str = Field(min_length=1, max_length=40)
    date: Day
    period: Literal["AM", "PM", "EVENING"]
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(ge=0, le=10_000_000, description="fen; 0 = no payment step")
    opens_at: Moment | None = Field(
        default=None, description="default: the policy's window_days before, at release_at"
    )
    closes_at: Moment | None = Field(
        default=None, description="default: the policy's booking_closes_minutes before start"
    )


class HospitalPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    level: str | None = Field(default=None, max_length=20)
    address: str | None = Field(default=None, max_length=200)


class DepartmentPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=100)


class DoctorPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    title: str | None = Field(default=None, min_length=1, max_length=40)
    specialty: str | None = Field(default=None, max_length=200)
    introduction: str | None = Field(default=None, max_length=2000)


class RotaSlotIn(BaseModel):
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    period: Literal["AM", "PM", "EVENING"]
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(ge=0, le=10_000_000)


class RotaIn(Loose):
    slots: list[RotaSlotIn] = Field(max_length=21)


class ListEntryIn(Loose):
    reason: str = Field(min_length=1, max_length=500)
    until: Moment | None = Field(default=None, description="none: until lifted")


class TagsIn(Loose):
    tags: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(max_length=50)


class AdminIn(Loose):
    login: str = Field(pattern=r"^[A-Za-z0-9_.@-]{3,64}$")
    password: str = Field(min_length=12, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    hospital_id: str | None = Field(default=None, max_length=40, description="none: platform")


class AdminCredentials(Loose):
    login: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class CheckInIn(Loose):
    verification_code: str = Field(pattern=r"^[0-9]{8}$")


class WaitlistIn(Loose):
    request_id: str = Field(min_length=1, max_length=64, description="client-chosen, idempotent")


class FeeTierIn(BaseModel):
    minutes_before: int = Field(ge=0, le=60 * 24 * 90)
    fee_percent: int = Field(ge=0, le=100)


class BanRuleIn(BaseModel):
    kind: Literal["no_show", "cancel", "same_day_cancel", "hold_abuse"]
    count: int = Field(ge=1, le=100)
    window_days: int = Field(ge=1, le=MAX_BAN_DAYS)


HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class PolicyIn(Loose):
    """A hospital's rules; fields left out keep their current value."""

    hospital_day_limit: int | None = Field(default=None, ge=1, le=100)
    department_day_limit: int | None = Field(default=None, ge=1, le=100)
    hold_seconds: int | None = Field(default=None, ge=60, le=7 * 86400)
    window_days: int | None = Field(default=None, ge=1, le=90)
    release_at: HHMM | None = None
    booking_closes_minutes: int | None = Field(default=None, ge=0, le=7 * 1440)
    cancel_days_before: int | None = Field(default=None, ge=0, le=30)
    cancel_until: HHMM | None = None
    fee_tiers: list[FeeTierIn] | None = Field(default=None, min_length=1, max_length=20)
    no_show_grace_minutes: int | None = Field(default=None, ge=0, le=1440)
    no_show_refund: StrictBool | None = None
    ban_rules: list[BanRuleIn] | None = Field(default=None, max_length=10)
    ban_days: list[Annotated[int, Field(ge=1, le=MAX_BAN_DAYS)]] | None = Field(
        default=None, min_length=1, max_length=10
    )
    ban_scope: Literal["hospital", "platform"] | None = Field(
        default=None, description="platform: a ban here bars everywhere (platform admin only)"
    )
    check_in_max_tries: int | None = Field(default=None, ge=1, le=15)
    waitlist_limit: int | None = Field(default=None, ge=1, le=10_000)
    free_hold_releases: int | None = Field(
        default=None, ge=0, le=100, description="holds let go a day before each is hold_abuse"
    )
    return_jitter_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETURN_JITTER,
        description="a freed slot nobody waits for returns to the pool within this, at random",
    )


class DrainIn(Loose):
    node: str = Field(
        min_length=1, max_length=128
    )  # a Ray node id, its first characters, or its address
    undo: StrictBool = False  # true or false, not 0 or "yes"


class ClockIn(Loose):
    advance_seconds: float = Field(gt=0, le=400 * 86400)
