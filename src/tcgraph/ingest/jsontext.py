"""Parsing JSON so that every number comes back as it was written.

orjson is fast but keeps integers only from -2^63 to 2^64 - 1: larger ones
become doubles, rounded. `loads` uses orjson unless the text holds a number it
could round, and then the standard library, which keeps integers of any size.
"""

from __future__ import annotations

import json
import math

import orjson

# A number orjson may round (it keeps -2^63 to 2^64 - 1 exactly) has 20 digits, or
# a minus and 19, after what can precede a JSON value. The digits of a hash in a
# string rarely look so; when they do, it costs time, never exactness.
_DIGITS_AS_ONES = bytes.maketrans(b"0123456789", b"1" * 10)
_LONGEST_SAFE = b"1" * 19
_BEFORE_A_VALUE = frozenset(b":[,")


def loads(data: bytes | str) -> object:
    """Parse JSON, keeping integers of any size exactly (orjson keeps 64 bits).

    Raises ValueError (orjson's or json's JSONDecodeError, both with `msg`,
    `lineno` and `colno`) for text that is not JSON; NaN, Infinity and numbers
    too large for a double are not JSON numbers here either.
    """
    raw = data.encode() if isinstance(data, str) else data
    if not _has_long_number(raw):
        return orjson.loads(raw)
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        # orjson's limit, which the standard library would otherwise exceed by crashing.
        raise ValueError("nested more than 1024 levels deep") from None


def _has_long_number(raw: bytes) -> bool:
    # Digit runs are found at C speed in a copy where every digit is a "1".
    digits = raw.translate(_DIGITS_AS_ONES)
    start = digits.find(_LONGEST_SAFE)
    while start != -1:
        end = start + len(_LONGEST_SAFE)
        while end < len(digits) and digits[end] == 0x31:
            end += 1
        negative = start > 0 and raw[start - 1] == 0x2D  # "-"
        before = start - 1 - negative
        while before >= 0 and raw[before] in b" \t\r\n":
            before -= 1
        if (end - start >= (19 if negative else 20)
                and (before < 0 or raw[before] in _BEFORE_A_VALUE)):
            return True
        start = digits.find(_LONGEST_SAFE, end)
    return False


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")
