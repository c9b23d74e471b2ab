"""Identity documents and phone numbers: checks, canonical forms and masks (pure).

A patient registers (实名) with one identity document, an ``id_type`` from ``ID_TYPES`` and its
number, a birth date and a phone. This module decides whether a document number is acceptable
(``check_document``), the canonical forms that uniqueness is decided on (``normalize_document``,
``normalize_phone``) and what staff may see of them (``mask_document``, ``mask_phone``,
``remask`` for masks stored by the old, too revealing, mask). No I/O: strings in, strings out.

The mainland resident identity card (居民身份证, GB 11643-1999) number has 18 characters::

    110101 19900101 123 7
    region birth    seq check      (seq's last digit: odd for men, even for women)
"""

from __future__ import annotations

import datetime
import re
import unicodedata

import phonenumbers

ID_TYPES = ("resident", "passport", "hk_macau_permit", "taiwan_permit")
DEFAULT_ID_TYPE = "resident"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARACTERS = "10X98765432"  # indexed by the weighted sum mod 11

_RESIDENT = re.compile(r"[0-9]{17}[0-9X]")
_OTHER_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "passport": (
        re.compile(r"[A-Z]{1,2}[0-9]{7,8}"),
        "a passport number is 1 or 2 letters followed by 7 or 8 digits, e.g. E12345678",
    ),
    "hk_macau_permit": (
        re.compile(r"[HM](?:[0-9]{8}|[0-9]{10})"),
        "a Hong Kong/Macau permit number is H or M followed by 8 or 10 digits, e.g. H12345678",
    ),
    "taiwan_permit": (
        re.compile(r"[0-9]{8}|[0-9]{10}"),
        "a Taiwan permit number is 8 or 10 digits, e.g. 12345678",
    ),
}
_PHONE_CHARACTERS = re.compile(r"[0-9+\-(). \t]+")

_RESIDENT_SHOWN_HEAD = 6  # the region: shared by a whole county
_GENERIC_HIDDEN_AT_LEAST = 5
_PHONE_HIDDEN_AT_LEAST = 4
_PHONE_SHOWN_AT_MOST = 7


def resident_check_character(first17: str) -> str:
    """The GB 11643 check character (``0``-``9`` or ``X``) of the first 17 digits of a resident
    ID number: the weighted sum of the digits, mod 11, indexes ``"10X98765432"``."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the first 17 characters of a resident ID number are digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARACTERS[total % 11]


def normalize_document(id_type: str, number: str) -> str:
    """The canonical form of a document number, the one its uniqueness hash is taken of:
    full-width characters made ASCII (NFKC), every space removed, letters upper-cased.

    The same for every ``id_type``. Formats of different types overlap (``H12345678`` can be a
    passport and a Hong Kong permit), so a uniqueness key for non-resident documents should
    include the type as well as this form."""
    return "".join(unicodedata.normalize("NFKC", number).split()).upper()


def check_document(id_type: str, number: str, birth_date: datetime.date) -> str | None:
    """None if ``number`` is acceptable as a document of ``id_type`` for a patient born on
    ``birth_date``, else a short message for the person registering (it never repeats the
    number). The number is checked in its normalized form (``normalize_document``), so spaces
    and a lower-case ``x`` are accepted.

    - ``resident``: 17 digits then a digit or ``X``; the region must not start with ``0``;
      characters 7-14 must be a real date (YYYYMMDD) equal to ``birth_date``; the last
      character must be the GB 11643 check character of the first 17.
    - ``passport``: 1 or 2 letters then 7 or 8 digits (Chinese passports: ``E12345678``,
      ``EA1234567``, the older ``G12345678``; other countries' passports of that shape).
    - ``hk_macau_permit`` (港澳居民来往内地通行证): ``H`` (Hong Kong) or ``M`` (Macau) then
      8 digits (the card) or 10 digits (the older booklet, 8 digits and a 2-digit issue count).
    - ``taiwan_permit`` (台湾居民来往大陆通行证): 8 digits (the card) or 10 digits (the older
      booklet).

    Only the resident card carries the birth date; for the other types it is not checked.
    """
    if id_type not in ID_TYPES:
        return f"unknown document type; expected one of: {', '.join(ID_TYPES)}"
    n = normalize_document(id_type, number)
    if not n:
        return "the document number is empty"
    if id_type != "resident":
        pattern, message = _OTHER_FORMATS[id_type]
        return None if pattern.fullmatch(n) else message
    if len(n) != 18:
        return f"a resident ID number has 18 characters, not {len(n)}"
    if not _RESIDENT.fullmatch(n):
        return "a resident ID number is 17 digits followed by a digit or X"
    if n[0] == "0":
        return "a resident ID number cannot start with 0 (its region code)"
    born = _date_or_none(n[6:14])
    if born is None:
        return "characters 7-14 of a resident ID number are the birth date and are not a date"
    if n[17] != resident_check_character(n[:17]):
        return "the last character of the ID number does not match the rest: check for a typo"
    if born != birth_date:
        return "the birth date in the ID number (characters 7-14) is not the birth date given"
    return None


def mask_document(id_type: str, number: str) -> str:
    """What staff may see of a document number: enough to recognise it with the patient in
    front of them, too little to rebuild it with the patient's birth year and sex.

    ``resident`` (18 characters): the region (the first 6, shared by a whole county), 11
    ``*``, then the check character: ``110101***********5``. Why that is enough: to someone
    who knows the birth year, month and day (at most 366) times the 3-digit sequence (1000)
    make about 366,000 strings, of which about one in 11 has the check character shown:
    ~33,000 candidates, ~16,600 if the sex (the parity of the 17th digit) is known too. The
    birth date itself must not be shown beside the mask: with it ~91 candidates remain.

    Other types (and a resident number that is not 18 characters): the first character, ``*``
    for all but the last 2: ``E12345678`` → ``E******78``; at least 5 characters are hidden
    (at least 100,000 candidates), so a number shorter than 8 is all ``*``.
    """
    n = normalize_document(id_type, number)
    return "".join(c if shown else "*" for c, shown in zip(n, _shown(id_type, len(n)), strict=True))


def remask(stored: str) -> str:
    """A stored mask in the current form: the upgrade of masks made by the old mask, which
    showed the first 6 and last 4 characters of numbers longer than 10 (``110101********1234``;
    with the birth date shown beside it, that is the whole number).

    Keeps a character only where the current mask of a number that long shows one and ``stored``
    shows it too, so the result never reveals more than ``mask_document`` would:
    ``110101********1234`` → ``110101***********4``; other lengths over 10 keep their first
    character and last 2; all-``*`` stays; a current mask comes back unchanged, so
    ``remask(remask(x)) == remask(x)``. Without the type, an 18-character mask is taken to be
    a resident number's (no other document type is that long)."""
    s = stored.strip()
    kind = "resident" if len(s) == 18 else "other"
    return "".join(c if shown else "*" for c, shown in zip(s, _shown(kind, len(s)), strict=True))


def normalize_phone(raw: str, region: str = "CN") -> str | None:
    """The E.164 form of a phone number (``+8613912345678``), or None if it is not a valid one.

    Read as dialled in ``region``: ``13912345678``, ``139-1234-5678``, ``+86 139 1234 5678``,
    ``+8613912345678`` and ``008613912345678`` (``00`` is the international prefix dialled from
    China, so ``0086`` is ``+86``) all give ``+8613912345678``. phonenumbers also reads a bare
    ``8613912345678`` as ``+86…``: it drops a leading country code when what follows is a valid
    national number and the whole is not. Full-width digits are accepted. Letters are refused
    (phonenumbers would read them as keypad letters, ``1391234ABCD``), and with them extensions;
    a number that phonenumbers parses but holds invalid (wrong length, unassigned prefix) is
    None too.
    """
    text = unicodedata.normalize("NFKC", raw).strip()
    if not _PHONE_CHARACTERS.fullmatch(text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if number.extension or not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """A phone number for staff lists: the country code, then the national number with at most
    its first 3 and last 4 digits shown and at least 4 hidden: ``+86 139****5678``. Shorter
    numbers show less (``+852 ****4567``, ``+86 10****9988``); never more than 7 digits of the
    national number. A string that is not E.164 (an old stored ``13912345678``) is masked the
    same way with no country code: ``139****5678``."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return _mask_digits("".join(c for c in e164 if c.isascii() and c.isdigit()))
    national = phonenumbers.national_significant_number(number)
    return f"+{number.country_code} {_mask_digits(national)}"


def age_on(birth_date: datetime.date, day: datetime.date) -> int:
    """Whole years of age on ``day`` (周岁). Someone born on 29 February turns a year older on
    1 March in common years."""
    if day < birth_date:
        raise ValueError("the day is before the birth date")
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def _shown(id_type: str, length: int) -> list[bool]:
    """Which positions the current mask shows of a (normalized) number of ``length``."""
    if id_type == "resident" and length == 18:
        return [i < _RESIDENT_SHOWN_HEAD or i == 17 for i in range(length)]
    if length - 3 < _GENERIC_HIDDEN_AT_LEAST:
        return [False] * length
    return [i == 0 or i >= length - 2 for i in range(length)]


def _mask_digits(digits: str) -> str:
    shown = max(0, min(_PHONE_SHOWN_AT_MOST, len(digits) - _PHONE_HIDDEN_AT_LEAST))
    tail = min(4, shown)
    head = shown - tail
    return digits[:head] + "*" * (len(digits) - shown) + digits[len(digits) - tail :]


def _date_or_none(yyyymmdd: str) -> datetime.date | None:
    try:
        return datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return None
