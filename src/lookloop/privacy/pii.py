"""Personal text in OCR lines: e-mail addresses, phone numbers, payment cards (Luhn) and ID-like numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass

# OCR often drops spaces and reads O as 0; patterns accept optional separators and we never rely on spaces.
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+ ?@ ?[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_SSN_US = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
# Swedish personnummer / samordningsnummer: (YY)YYMMDD-XXXX or +XXXX.
_PERSONNUMMER = re.compile(r"(?<!\d)(?:19|20)?\d{2}(?:0[1-9]|1[0-2])(?:[0-6]\d|[78]\d)[-+]\d{4}(?!\d)")
_PASSPORT = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{7,8}(?![A-Za-z0-9])")
_PHONE_INTL = re.compile(r"(?<![\d+])(?:\+|00)\d{1,3}[ \-]?(?:\(0\)[ \-]?)?\d(?:[ \-()]?\d){6,12}(?!\d)")
_PHONE_LOCAL = re.compile(r"(?<![\d.,])0\d{1,3}[ \-/]\d{2,4}(?:[ \-]?\d{2,4}){1,3}(?![\d.,])")
_PHONE_CONTEXT = re.compile(r"(?i)(?:tel|phone|mobil|mob|fax|ph)\.?:? ?(\+?\d(?:[ \-()]?\d){6,14})")
# Digit runs with optional single spaces or dashes between digits (cards print as 4111 1111 1111 1111).
# Dates and clock times look like long digit runs once glued together ("2026-11-25 13:02").
_DATE_TIME = re.compile(
    r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?)(?!\d)"
)
_DIGIT_RUN = re.compile(r"(?<![\d.,])\d(?:[ \-]?\d){8,22}(?![\d.,])")

KINDS = ("email", "phone", "card", "id")


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment cards and Swedish personnummer."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    s = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def ean_ok(digits: str) -> bool:
    """GS1 check digit (EAN-8/UPC-A/EAN-13/GTIN-14): product barcodes are not personal data."""
    if not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        return False
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def _card_in(digits: str) -> tuple[int, int] | None:
    """Index range of a Luhn-valid 13-19 digit card number inside a digit string (whole run preferred)."""
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return 0, len(digits)
    # OCR glues neighbouring numbers onto the card; look for a valid window, longest first.
    for length in (16, 15, 19, 14, 13, 18, 17):
        for i in range(0, len(digits) - length + 1):
            window = digits[i : i + length]
            if window[0] in "3456" and luhn_ok(window):
                return i, i + length
    return None


def find_pii(text: str) -> list[PiiMatch]:
    """Every personal-data span in ``text``; overlapping spans keep the first kind found (email > card > id >
    phone)."""
    found: list[PiiMatch] = []

    def add(kind: str, start: int, end: int) -> None:
        if any(start < m.end and m.start < end for m in found):
            return
        found.append(PiiMatch(kind, start, end, text[start:end]))

    for m in _EMAIL.finditer(text):
        add("email", m.start(), m.end())
    for m in _IBAN.finditer(text):
        if iban_ok(m.group()):
            add("id", m.start(), m.end())
    for m in _DIGIT_RUN.finditer(text):
        raw = m.group()
        digits = re.sub(r"\D", "", raw)
        span = _card_in(digits)
        if span is None:
            continue
        # Map digit indices back to character offsets in the raw match.
        positions = [i for i, ch in enumerate(raw) if ch.isdigit()]
        add("card", m.start() + positions[span[0]], m.start() + positions[span[1] - 1] + 1)
    for pattern in (_SSN_US, _PERSONNUMMER, _PASSPORT):
        for m in pattern.finditer(text):
            add("id", m.start(), m.end())
    for m in _PHONE_CONTEXT.finditer(text):
        add("phone", m.start(1), m.end(1))
    for pattern in (_PHONE_INTL, _PHONE_LOCAL):
        for m in pattern.finditer(text):
            add("phone", m.start(), m.end())
    # Same length, so offsets still index ``text``.
    undated = _DATE_TIME.sub(lambda m: "#" * len(m.group()), text)
    for m in _DIGIT_RUN.finditer(undated):
        digits = re.sub(r"\D", "", m.group())
        # Long numbers identify someone (account, member, national ID) unless they are a product barcode.
        if len(digits) >= 10 and not ean_ok(digits):
            add("id", m.start(), m.end())
    return sorted(found, key=lambda p: p.start)
