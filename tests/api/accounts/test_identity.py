"""Identity documents and phones: what registers, the canonical forms, and what staff may see.

Pure: no services, no fixtures. The masking tests count, with ``resident_candidates``, how many
ID numbers an attacker is left with, rather than trusting the arithmetic in the docstrings.
"""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from api.accounts.identity import (
    DEFAULT_ID_TYPE,
    ID_TYPES,
    age_on,
    check_document,
    mask_document,
    mask_phone,
    normalize_document,
    normalize_phone,
    remask,
    resident_check_character,
)
from tests.helpers import EARLIEST, LATEST, resident_candidates, resident_id

BORN = date(1990, 1, 1)
ID = resident_id(BORN)  # 110101199001011237
E164 = "+8613912345678"


def old_mask(id_number: str) -> str:
    """The mask registrations used to store (kept here to test its replacement against)."""
    n = id_number.strip()
    return n[:6] + "*" * max(0, len(n) - 10) + n[-4:] if len(n) > 10 else "*" * len(n)


def with_check(first17: str) -> str:
    return first17 + resident_check_character(first17)


# --- resident ID numbers ------------------------------------------------------------------------


def test_the_resident_card_is_the_default_document_type():
    assert DEFAULT_ID_TYPE == "resident" == ID_TYPES[0]


@pytest.mark.parametrize(
    ("number", "born"),
    [
        ("11010519491231002X", date(1949, 12, 31)),  # the example in GB 11643-1999
        ("440524188001010014", date(1880, 1, 1)),  # the other example in GB 11643-1999
        (ID, BORN),
        (resident_id(date(2000, 2, 29), seq=1, region="310104"), date(2000, 2, 29)),
        (resident_id(date(2024, 12, 31), seq=998, region="650102"), date(2024, 12, 31)),
        (resident_id(date(1900, 1, 1), seq=0, region="990000"), date(1900, 1, 1)),
    ],
)
def test_a_valid_resident_id_is_accepted(number, born):
    assert check_document("resident", number, born) is None


@pytest.mark.parametrize(
    ("first17", "check"), [("11010519491231002", "X"), ("44052418800101001", "4")]
)
def test_the_check_character_is_the_one_in_the_standards_examples(first17, check):
    assert resident_check_character(first17) == check


@pytest.mark.parametrize("first17", ["1101051949123100", "110105194912310021", "1101051949123100X"])
def test_a_check_character_is_only_computed_of_17_digits(first17):
    with pytest.raises(ValueError):
        resident_check_character(first17)


def test_a_lowercase_x_is_accepted_as_x():
    assert check_document("resident", "11010519491231002x", date(1949, 12, 31)) is None


@pytest.mark.parametrize(
    "number",
    [
        " 110101 19900101 1237 ",
        "１１０１０１１９９００１０１１２３７",
        "110101\u300019900101\u30001237",
    ],
)
def test_spaces_and_full_width_digits_are_accepted(number):
    assert check_document("resident", number, BORN) is None


@pytest.mark.parametrize("last", sorted(set("0123456789X") - {ID[-1]}))
def test_a_resident_id_with_a_wrong_check_digit_is_refused(last):
    assert "typo" in check_document("resident", ID[:-1] + last, BORN)


@pytest.mark.parametrize("born", [date(1990, 1, 2), date(1991, 1, 1), date(1989, 12, 31)])
def test_a_resident_id_whose_birth_date_is_not_the_one_given_is_refused(born):
    assert "not the birth date given" in check_document("resident", ID, born)


@pytest.mark.parametrize("digits", ["19900230", "20010229", "19901301", "19900000", "19900132"])
def test_a_resident_id_with_an_impossible_birth_date_is_refused(digits):
    number = with_check(f"110101{digits}123")
    assert "not a date" in check_document("resident", number, BORN)


@pytest.mark.parametrize("number", [ID[:17], ID + "1", "110101900101123", ""])
def test_a_resident_id_of_the_wrong_length_is_refused(number):
    assert check_document("resident", number, BORN) is not None


@pytest.mark.parametrize(
    "number",
    ["1101011990O1011237", "11010119900101123A", "X10101199001011237", "1101011990-1011237"],
)
def test_a_resident_id_with_letters_or_signs_is_refused(number):
    assert "17 digits" in check_document("resident", number, BORN)


def test_a_resident_id_whose_region_starts_with_0_is_refused():
    assert "start with 0" in check_document("resident", with_check("01010119900101123"), BORN)


@pytest.mark.parametrize(
    ("id_type", "number", "born"),
    [
        ("resident", ID[:-1] + "0", BORN),
        ("resident", ID, date(1990, 1, 2)),
        ("resident", with_check("11010119900230123"), BORN),
        ("passport", "E1234567890123", BORN),
    ],
)
def test_a_refusal_never_repeats_the_number(id_type, number, born):
    message = check_document(id_type, number, born)
    assert message
    assert number not in message
    assert number[6:14] not in message


def test_an_unknown_document_type_is_refused():
    assert "unknown document type" in check_document("driving_licence", ID, BORN)


# --- other documents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_type", "number"),
    [
        ("passport", "E12345678"),
        ("passport", "G12345678"),
        ("passport", "EA1234567"),
        ("passport", "K1234567"),
        ("passport", "PE12345678"),
        ("passport", "e 1234 5678"),
        ("hk_macau_permit", "H12345678"),
        ("hk_macau_permit", "M12345678"),
        ("hk_macau_permit", "H1234567890"),
        ("hk_macau_permit", "m12345678"),
        ("taiwan_permit", "12345678"),
        ("taiwan_permit", "1234567890"),
    ],
)
def test_another_document_of_the_right_format_is_accepted(id_type, number):
    assert check_document(id_type, number, BORN) is None


@pytest.mark.parametrize(
    ("id_type", "number"),
    [
        ("passport", "E123456"),
        ("passport", "E123456789"),
        ("passport", "12345678"),
        ("passport", "ABC1234567"),
        ("passport", "E1234567X"),
        ("passport", "E-12345678"),
        ("passport", ""),
        ("hk_macau_permit", "H1234567"),
        ("hk_macau_permit", "H123456789"),
        ("hk_macau_permit", "H123456789012"),
        ("hk_macau_permit", "X12345678"),
        ("hk_macau_permit", "12345678"),
        ("taiwan_permit", "1234567"),
        ("taiwan_permit", "123456789"),
        ("taiwan_permit", "12345678901"),
        ("taiwan_permit", "T12345678"),
        ("taiwan_permit", ID),
    ],
)
def test_another_document_of_the_wrong_format_is_refused(id_type, number):
    assert check_document(id_type, number, BORN) is not None


@pytest.mark.parametrize("id_type", ["passport", "hk_macau_permit", "taiwan_permit"])
def test_the_birth_date_is_not_checked_on_documents_that_do_not_carry_it(id_type):
    number = {"passport": "E12345678", "hk_macau_permit": "H12345678"}.get(id_type, "12345678")
    assert check_document(id_type, number, date(1901, 2, 3)) is None


@pytest.mark.parametrize(
    ("id_type", "number", "normalized"),
    [
        ("resident", " 110101 19900101 123x ", "11010119900101123X"),
        ("resident", "１１０１０１１９９００１０１１２３ｘ", "11010119900101123X"),
        ("passport", "e\u30001234\t5678", "E12345678"),
        ("hk_macau_permit", "h12345678", "H12345678"),
    ],
)
def test_a_document_number_is_normalized_without_spaces_in_upper_case(id_type, number, normalized):
    assert normalize_document(id_type, number) == normalized


# --- masks --------------------------------------------------------------------------------------


def test_a_resident_id_is_masked_to_its_region_and_check_character():
    assert mask_document("resident", ID) == "110101***********7"


def test_a_resident_mask_shows_a_lowercase_x_as_x():
    assert mask_document("resident", "11010519491231002x") == "110105***********X"


@pytest.mark.parametrize(
    ("id_type", "number", "masked"),
    [
        ("passport", "E12345678", "E******78"),
        ("passport", "EA1234567", "E******67"),
        ("passport", "K1234567", "K*****67"),
        ("passport", "PE12345678", "P*******78"),
        ("hk_macau_permit", "H1234567890", "H********90"),
        ("taiwan_permit", "12345678", "1*****78"),
        ("taiwan_permit", "1234567", "*******"),
        ("resident", "110101900101123", "1************23"),  # a 15-digit first-generation card
        ("resident", "", ""),
    ],
)
def test_another_number_is_masked_to_its_first_and_last_two_characters(id_type, number, masked):
    assert mask_document(id_type, number) == masked


@pytest.mark.parametrize("length", range(1, 20))
def test_a_mask_hides_at_least_five_characters(length):
    masked = mask_document("passport", "7" * length)
    assert len(masked) == length
    assert masked.count("*") >= min(5, length)


@pytest.mark.parametrize(
    ("stored", "upgraded"),
    [
        ("110101********1234", "110101***********4"),
        (old_mask("11010519491231002X"), "110105***********X"),
        (old_mask("110101900101123"), "1************23"),
        (old_mask("SEED13912345678"), "S************78"),
        (old_mask("H1234567890"), "H********90"),
        ("**********", "**********"),
        ("*********", "*********"),
        ("", ""),
    ],
)
def test_an_old_mask_is_remasked_to_the_new_shape(stored, upgraded):
    assert remask(stored) == upgraded


@pytest.mark.parametrize(
    ("id_type", "number"),
    [
        ("resident", ID),
        ("resident", "11010519491231002X"),
        ("resident", "110101900101123"),
        ("passport", "E12345678"),
        ("passport", "PE12345678"),
        ("hk_macau_permit", "H1234567890"),
        ("taiwan_permit", "12345678"),
    ],
)
def test_a_remasked_old_mask_shows_nothing_the_new_mask_hides(id_type, number):
    new = mask_document(id_type, number)
    upgraded = remask(old_mask(number))
    assert len(upgraded) == len(new)
    assert all(u == "*" or u == n for u, n in zip(upgraded, new, strict=True))


@pytest.mark.parametrize(
    "stored",
    [
        "110101***********4",
        "E******78",
        "1*****78",
        "110101********1234",
        "SEED13*****5678",
        "*******",
        "1***************34",
        "",
    ],
)
def test_remasking_is_idempotent(stored):
    assert remask(remask(stored)) == remask(stored)


@pytest.mark.parametrize(
    "masked",
    [mask_document("resident", ID), mask_document("passport", "E12345678"), "*" * 10],
)
def test_a_new_mask_is_remasked_unchanged(masked):
    assert remask(masked) == masked


# --- what an attacker can get back --------------------------------------------------------------


def brute_force(shown, birth_year=None, birth_date=None, sex=None):
    """Count by trying every character for every ``*`` and asking ``check_document``."""
    stars = [i for i, c in enumerate(shown) if c == "*"]
    count = 0
    for fill in itertools.product("0123456789X", repeat=len(stars)):
        chars = list(shown)
        for i, c in zip(stars, fill, strict=True):
            chars[i] = c
        number = "".join(chars)
        try:
            born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        except ValueError:
            continue
        count += (
            EARLIEST <= born <= LATEST
            and check_document("resident", number, born) is None
            and birth_year in (None, born.year)
            and birth_date in (None, born)
            and sex in (None, "MF"[int(number[16]) % 2 == 0])
        )
    return count


@pytest.mark.parametrize(
    ("shown", "known"),
    [
        (ID, {}),
        (ID[:-1] + "0", {}),
        ("11010119900101123*", {}),
        ("110101199001011**7", {}),
        ("110101199001011**7", {"sex": "M"}),
        ("110101199001011**7", {"sex": "F"}),
        ("*10101199001011*37", {}),
        ("1101011990010*1237", {}),
        ("110101199*010112*7", {"sex": "M"}),
        ("1101012000022*001*", {}),
        ("11010120*10101123*", {}),
        ("11010120*10101123*", {"birth_year": 2011}),
        ("1101011*9001011*37", {"birth_year": 1990}),
        ("1101011990010*1*37", {"birth_date": date(1990, 1, 1)}),
        ("110101199*0*011237", {"birth_date": date(1990, 1, 1)}),
        ("1101011990010*123*", {"birth_year": 1989}),
    ],
)
def test_the_candidate_count_agrees_with_a_brute_force(shown, known):
    assert resident_candidates(shown, **known) == brute_force(shown, **known)


def test_the_old_mask_beside_the_full_birth_date_gives_back_the_whole_number():
    assert resident_candidates(old_mask(ID), birth_date=BORN) == 1


@pytest.mark.parametrize(
    ("born", "seq", "region"),
    [
        (BORN, 123, "110101"),
        (date(2000, 2, 29), 4, "310104"),
        (date(1955, 7, 31), 999, "650102"),
        (date(2023, 12, 31), 0, "440305"),
    ],
)
@pytest.mark.parametrize("sex", [None, "M", "F"])
def test_the_new_mask_with_the_birth_year_and_the_sex_leaves_at_least_10000_candidates(
    born, seq, region, sex
):
    shown = mask_document("resident", resident_id(born, seq, region))
    assert resident_candidates(shown, birth_year=born.year, sex=sex) >= 10_000


def test_the_new_mask_beside_the_full_birth_date_leaves_under_a_hundred_candidates():
    # Why staff pages show the age (``age_on``), not the birth date, beside the mask.
    assert resident_candidates(mask_document("resident", ID), birth_date=BORN) < 100


@pytest.mark.parametrize(
    ("born", "seq", "region"),
    [(date(1990, 5, 17), 7, "510104"), (date(2010, 1, 9), 500, "120101")],
)
def test_resident_id_makes_numbers_that_check_document_accepts(born, seq, region):
    number = resident_id(born, seq, region)
    assert len(number) == 18
    assert number[6:14] == f"{born:%Y%m%d}"
    assert check_document("resident", number, born) is None


# --- phones -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13912345678",
        " 139 1234 5678 ",
        "139-1234-5678",
        "+86 139 1234 5678",
        "+8613912345678",
        "(+86) 139-1234-5678",
        "008613912345678",
        "0086 139 1234 5678",
        "8613912345678",
        "１３９１２３４５６７８",
        "＋８６１３９１２３４５６７８",
    ],
)
def test_the_usual_ways_of_writing_a_mobile_number_give_one_e164(raw):
    assert normalize_phone(raw) == E164


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("010 6552 9988", "CN", "+861065529988"),
        ("+852 6123 4567", "CN", "+85261234567"),
        ("6123 4567", "HK", "+85261234567"),
        ("+1 650 253 0000", "CN", "+16502530000"),
        ("00 1 650 253 0000", "CN", "+16502530000"),
    ],
)
def test_landlines_and_other_countries_are_normalized_too(raw, region, e164):
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "1391234567",
        "139123456789",
        "12345678901",
        "1391234ABCD",
        "13912345678abc",
        "+86 139 1234 5678 ext 12",
        "0013912345678",
        "+86",
        "+000",
        "13912345678 13912345678",
    ],
)
def test_what_is_not_a_valid_phone_number_gives_none(raw):
    assert normalize_phone(raw) is None


def test_a_national_number_in_an_unknown_region_gives_none():
    assert normalize_phone("13912345678", "ZZ") is None


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        (E164, "+86 139****5678"),
        ("+861065529988", "+86 10****9988"),
        ("+16502530000", "+1 65****0000"),
        ("+85261234567", "+852 ****4567"),
        ("13912345678", "139****5678"),
        ("12345", "****5"),
    ],
)
def test_a_phone_is_masked_to_its_country_code_first_three_and_last_four(e164, masked):
    assert mask_phone(e164) == masked


@pytest.mark.parametrize(
    "e164", [E164, "+85261234567", "+4915123456789", "123456789012345", "+8612", "1"]
)
def test_a_masked_phone_shows_at_most_seven_digits_and_hides_at_least_four(e164):
    national = mask_phone(e164).split(" ")[-1]
    assert sum(c.isdigit() for c in national) <= 7
    assert national.count("*") >= min(4, len(national))


# --- age ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("born", "day", "age"),
    [
        (BORN, BORN, 0),
        (BORN, date(2019, 12, 31), 29),
        (BORN, date(2020, 1, 1), 30),
        (date(2000, 2, 29), date(2021, 2, 28), 20),
        (date(2000, 2, 29), date(2021, 3, 1), 21),
        (date(2000, 2, 29), date(2024, 2, 29), 24),
    ],
)
def test_age_on_a_day_is_in_whole_years(born, day, age):
    assert age_on(born, day) == age


def test_age_on_a_day_before_the_birth_date_is_an_error():
    with pytest.raises(ValueError):
        age_on(BORN, date(1989, 12, 31))
