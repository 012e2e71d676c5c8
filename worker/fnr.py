"""Norwegian identity numbers: fødselsnummer, D-number and synthetic test numbers (pure)."""

from __future__ import annotations

from datetime import date
from typing import Literal

# Accepted forms (11 digits DDMMYY III K1 K2, both mod-11 check digits must match):
#   FNR            ordinary fødselsnummer
#   D-number       day + 40 (41-71): foreign nationals without an FNR
#   Tenor (+80)    month + 80 (81-92): Skatteetaten's synthetic test persons, FNR or D-number
# Not accepted: H-numbers / NAV-style synthetic numbers (month + 40), FH-numbers.
# The 2032 scheme with relaxed check digit 1 is not supported yet.

_WEIGHTS_1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_WEIGHTS_2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_DNR_DAY_OFFSET = 40
_SYNTHETIC_MONTH_OFFSET = 80

Kind = Literal["FNR", "DNR"]


def check(fnr: str, *, allow_synthetic: bool = True) -> None:
    """Raise ValueError with a precise reason (never the number itself) unless `fnr` is valid."""
    if not isinstance(fnr, str):
        raise ValueError("must be a string of 11 digits")
    if len(fnr) != 11:
        raise ValueError(f"must be 11 digits (got {len(fnr)} characters)")
    if not (fnr.isascii() and fnr.isdigit()):
        raise ValueError("must contain only the digits 0-9")
    digits = [int(c) for c in fnr]
    for position, weights in ((1, _WEIGHTS_1), (2, _WEIGHTS_2)):
        expected = _check_digit(digits, weights)
        if expected is None:
            raise ValueError(f"check digit {position} cannot be valid for the preceding digits")
        if digits[len(weights)] != expected:
            raise ValueError(f"check digit {position} does not match")
    _check_date(fnr, allow_synthetic=allow_synthetic)


def is_valid(fnr: str, *, allow_synthetic: bool = True) -> bool:
    """Whether `fnr` is a valid fødselsnummer or D-number (and Tenor test number if allowed)."""
    try:
        check(fnr, allow_synthetic=allow_synthetic)
    except ValueError:
        return False
    return True


def kind(fnr: str) -> Kind:
    """'DNR' for a D-number, else 'FNR'; raises ValueError for an invalid number."""
    check(fnr)
    return "DNR" if int(fnr[0]) >= 4 else "FNR"


def is_synthetic(fnr: str) -> bool:
    """Whether `fnr` is a valid Tenor synthetic test number (month + 80)."""
    return is_valid(fnr) and int(fnr[2:4]) > _SYNTHETIC_MONTH_OFFSET


def mask(fnr: object) -> str:
    """The number with only its date part visible ("131169*****"), safe for logs."""
    if isinstance(fnr, str) and len(fnr) == 11 and fnr.isascii() and fnr.isdigit():
        return fnr[:6] + "*****"
    return "*" * 11


def birth_date(fnr: str) -> date:
    """The birth date encoded in a valid number (D-number and synthetic offsets removed)."""
    check(fnr)
    return _decode_date(fnr)


def make(birth: date, individual: int, dnr: bool = False, *, synthetic: bool = False) -> str:
    """Build a valid number; ValueError when `individual` does not fit the year or has no digits."""
    if not 0 <= individual <= 999:
        raise ValueError("individual number must be 0-999")
    if not _fits(birth.year, individual):
        raise ValueError(f"individual number {individual:03d} is not used for year {birth.year}")
    day = birth.day + (_DNR_DAY_OFFSET if dnr else 0)
    month = birth.month + (_SYNTHETIC_MONTH_OFFSET if synthetic else 0)
    digits = [int(c) for c in f"{day:02d}{month:02d}{birth.year % 100:02d}{individual:03d}"]
    for weights in (_WEIGHTS_1, _WEIGHTS_2):
        control = _check_digit(digits, weights)
        if control is None:
            raise ValueError(f"individual number {individual:03d} gives no valid check digit")
        digits.append(control)
    return "".join(str(d) for d in digits)


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit for the digits before it, None when it would be 10."""
    remainder = sum(d * w for d, w in zip(digits, weights, strict=False)) % 11
    if remainder == 0:
        return 0
    return None if remainder == 1 else 11 - remainder


def _check_date(fnr: str, *, allow_synthetic: bool) -> None:
    """Raise ValueError unless the first six digits are a real (possibly offset) date."""
    if int(fnr[2:4]) > _SYNTHETIC_MONTH_OFFSET and not allow_synthetic:
        raise ValueError("synthetic test numbers (month + 80) are not accepted")
    try:
        _decode_date(fnr)
    except ValueError:
        raise ValueError(f"date part {fnr[:6]} is not a valid date") from None


def _decode_date(fnr: str) -> date:
    """The date in DDMMYY with the D-number (day) and Tenor (month) offsets removed."""
    day, month, year = int(fnr[0:2]), int(fnr[2:4]), int(fnr[4:6])
    if day > _DNR_DAY_OFFSET:
        day -= _DNR_DAY_OFFSET
    if month > _SYNTHETIC_MONTH_OFFSET:
        month -= _SYNTHETIC_MONTH_OFFSET
    return date(_century(year, int(fnr[6:9])) + year, month, day)


def _fits(year: int, individual: int) -> bool:
    """Whether Skatteetaten assigns `individual` to people born in `year`."""
    if 1854 <= year <= 1899:
        return 500 <= individual <= 749
    if 1900 <= year <= 1999:
        return individual <= 499 or (year >= 1940 and individual >= 900)
    return 2000 <= year <= 2039 and individual >= 500


def _century(year: int, individual: int) -> int:
    """The century from the individual-number ranges; unassigned ranges count as 1900."""
    if individual >= 500 and year < 40:
        return 2000
    if 500 <= individual <= 749 and year >= 54:
        return 1800
    return 1900
