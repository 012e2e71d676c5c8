"""Fødselsnummer / D-number validation, masking and generation."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from worker import fnr

W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

KARI = "13116900054"  # 13.11.1969, individual 000, checked by hand below


def _control(digits: str, weights: tuple[int, ...]) -> str | None:
    """Reference mod-11 check digit, written independently of the module."""
    rest = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    control = (11 - rest) % 11
    return None if control == 10 else str(control)


def with_checks(first9: str) -> str:
    """Append both check digits to nine digits (the test's own arithmetic)."""
    k1 = _control(first9, W1)
    assert k1 is not None, "pick other digits: check digit 1 would be 10"
    k2 = _control(first9 + k1, W2)
    assert k2 is not None, "pick other digits: check digit 2 would be 10"
    return first9 + k1 + k2


def test_hand_checked_number() -> None:
    # k1: 1*3+3*7+1*6+1*1+6*8+9*9 = 160, 160 % 11 = 6 -> 5
    # k2: 1*5+3*4+1*3+1*2+6*7+9*6+5*2 = 128, 128 % 11 = 7 -> 4
    assert with_checks("131169000") == KARI
    fnr.check(KARI)
    assert fnr.is_valid(KARI)
    assert fnr.kind(KARI) == "FNR"
    assert fnr.birth_date(KARI) == date(1969, 11, 13)


@pytest.mark.parametrize(
    ("first9", "kind", "born"),
    [
        ("131169000", "FNR", date(1969, 11, 13)),
        ("531169000", "DNR", date(1969, 11, 13)),  # D-number: day + 40
        ("139169002", "FNR", date(1969, 11, 13)),  # Tenor synthetic: month + 80
        ("539169000", "DNR", date(1969, 11, 13)),  # Tenor synthetic D-number
        ("290200500", "FNR", date(2000, 2, 29)),  # 2000 is a leap year (individual 500-999)
        ("010160900", "FNR", date(1960, 1, 1)),  # 900-999 with year >= 40: 1900s
        ("010160600", "FNR", date(1860, 1, 1)),  # 500-749 with year >= 54: 1800s
        ("311299499", "FNR", date(1999, 12, 31)),
    ],
)
def test_valid_numbers(first9: str, kind: str, born: date) -> None:
    number = with_checks(first9)
    assert fnr.is_valid(number)
    assert fnr.kind(number) == kind
    assert fnr.birth_date(number) == born


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1311690005", "must be 11 digits (got 10 characters)"),
        ("131169000541", "must be 11 digits (got 12 characters)"),
        ("", "must be 11 digits (got 0 characters)"),
        ("1311690005a", "must contain only the digits 0-9"),
        ("13116900 54", "must contain only the digits 0-9"),
        ("１３１１６９０００５４", "must contain only the digits 0-9"),  # full-width digits
        ("13116900064", "check digit 1 does not match"),
        ("13116900055", "check digit 2 does not match"),
        ("23116900054", "check digit 1 does not match"),
        (with_checks("320190000"), "date part 320190 is not a valid date"),
        (with_checks("011390000"), "date part 011390 is not a valid date"),
        (with_checks("015190000"), "date part 015190 is not a valid date"),  # H-number, month + 40
        (with_checks("290200400"), "date part 290200 is not a valid date"),  # 1900: not a leap year
        (with_checks("720190000"), "date part 720190 is not a valid date"),  # D-number day 32
    ],
)
def test_invalid_numbers_say_why(number: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        fnr.check(number)
    assert not fnr.is_valid(number)


def test_impossible_check_digit_is_reported() -> None:
    first9 = next(
        f"0101{y:02d}{i:03d}"
        for y in range(40, 100)
        for i in range(500)
        if _control(f"0101{y:02d}{i:03d}", W1) is None
    )
    with pytest.raises(ValueError, match="check digit 1 cannot be valid"):
        fnr.check(first9 + "00")


def test_reasons_never_contain_the_number() -> None:
    for number in ("13116900064", "13116900055", with_checks("320190000")):
        with pytest.raises(ValueError, match=r".") as caught:
            fnr.check(number)
        assert number not in str(caught.value)
        assert number[6:] not in str(caught.value)


def test_synthetic_numbers_can_be_refused() -> None:
    tenor = with_checks("139169002")
    assert fnr.is_synthetic(tenor)
    assert not fnr.is_synthetic(KARI)
    assert not fnr.is_valid(tenor, allow_synthetic=False)
    with pytest.raises(ValueError, match="synthetic test numbers"):
        fnr.check(tenor, allow_synthetic=False)


def test_non_string_is_invalid() -> None:
    assert not fnr.is_valid(13116900054)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (KARI, "131169*****"),
        ("1311690005", "***********"),
        ("abc", "***********"),
        (None, "***********"),
    ],
)
def test_mask_shows_only_the_date_part(value: object, masked: str) -> None:
    assert fnr.mask(value) == masked


def test_kind_of_invalid_number_raises() -> None:
    with pytest.raises(ValueError, match="check digit 1"):
        fnr.kind("13116900064")


def test_make_builds_the_hand_checked_number() -> None:
    assert fnr.make(date(1969, 11, 13), 0) == KARI
    assert fnr.make(date(1969, 11, 13), 0, dnr=True) == with_checks("531169000")
    assert fnr.make(date(1969, 11, 13), 2, synthetic=True) == with_checks("139169002")


@pytest.mark.parametrize(
    ("birth", "individual", "reason"),
    [
        (date(1969, 11, 13), 1000, "individual number must be 0-999"),
        (date(1969, 11, 13), -1, "individual number must be 0-999"),
        (date(1969, 11, 13), 600, "individual number 600 is not used for year 1969"),
        (date(2005, 1, 1), 100, "individual number 100 is not used for year 2005"),
        (date(1850, 1, 1), 600, "individual number 600 is not used for year 1850"),
        (date(2040, 1, 1), 600, "individual number 600 is not used for year 2040"),
    ],
)
def test_make_refuses_impossible_numbers(birth: date, individual: int, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        fnr.make(birth, individual)


def test_make_refuses_individual_without_check_digit() -> None:
    bad = next(i for i in range(500) if _control(f"131169{i:03d}", W1) is None)
    with pytest.raises(ValueError, match="gives no valid check digit"):
        fnr.make(date(1969, 11, 13), bad)


@st.composite
def births(draw: st.DrawFn) -> tuple[date, int]:
    """A birth date with an individual number Skatteetaten would assign for its year."""
    born = draw(st.dates(min_value=date(1854, 1, 1), max_value=date(2039, 12, 31)))
    if born.year < 1900:
        individual = draw(st.integers(500, 749))
    elif born.year >= 2000:
        individual = draw(st.integers(500, 999))
    elif born.year >= 1940:
        individual = draw(st.one_of(st.integers(0, 499), st.integers(900, 999)))
    else:
        individual = draw(st.integers(0, 499))
    return born, individual


def _made(birth: tuple[date, int], dnr: bool, synthetic: bool) -> str:
    try:
        return fnr.make(birth[0], birth[1], dnr, synthetic=synthetic)
    except ValueError:
        assume(False)  # about 2 in 11 individual numbers have no check digit
        raise


@given(births(), st.booleans(), st.booleans())
def test_every_generated_number_validates(
    birth: tuple[date, int], dnr: bool, synthetic: bool
) -> None:
    number = _made(birth, dnr, synthetic)
    assert fnr.is_valid(number)
    assert fnr.kind(number) == ("DNR" if dnr else "FNR")
    assert fnr.birth_date(number) == birth[0]
    assert fnr.is_synthetic(number) == synthetic
    assert fnr.mask(number) == number[:6] + "*****"
    assert number == with_checks(number[:9])


@given(births(), st.booleans(), st.integers(0, 10), st.integers(1, 9))
def test_changing_any_one_digit_breaks_validation(
    birth: tuple[date, int], dnr: bool, position: int, delta: int
) -> None:
    number = _made(birth, dnr, False)
    digit = (int(number[position]) + delta) % 10
    changed = number[:position] + str(digit) + number[position + 1 :]
    assert not fnr.is_valid(changed)


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_valid_implies_both_check_digits_match(number: str) -> None:
    if fnr.is_valid(number):
        assert number == with_checks(number[:9])
