"""Personal text in OCR lines: names after cues, e-mail addresses, phone numbers, payment cards (Luhn), IBANs
(mod-97) and ID-like numbers.

What stays readable on purpose: dates, clock times, prices, quantities and product barcodes (GS1 check digit),
so a redacted receipt or shelf label still answers "what did it cost" and "when".

Names are found only after a cue ("Name:", "Mr", "Dear", "Signed", "Cardholder", "Passenger", "Namn:", …), in
the same OCR line or, when a line ends in the cue (a form's label above or beside its value), at the start of
the next line. A name with no cue around it (a business card's headline) is not found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# OCR often drops spaces and reads O as 0; patterns accept optional separators and we never rely on spaces.
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-]+ ?(?:@|\((?:at|AT)\)|\[(?:at|AT)\]) ?[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
# An IBAN may follow "IBAN" with no space at all once OCR has read it ("IBANSE45 5000 …").
_IBAN = re.compile(r"(?:(?<=IBAN)|(?<=IBAN:)|(?<![A-Za-z0-9]))[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}")
# IBAN lengths of the SEPA countries most likely on a wearer's papers (ISO 13616 registry).
_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22,
    "IE": 22, "IS": 26, "IT": 27, "LT": 20, "LU": 20, "LV": 21, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "SE": 24,
}
_SSN_US = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
# Swedish personnummer / samordningsnummer: (YY)YYMMDD-XXXX or +XXXX.
_PERSONNUMMER = re.compile(r"(?<!\d)(?:19|20)?\d{2}(?:0[1-9]|1[0-2])(?:[0-6]\d|[78]\d)[-+]\d{4}(?!\d)")
_PASSPORT = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{7,8}(?![A-Za-z0-9])")

# --- phone numbers ---------------------------------------------------------------------------------------
# Not part of a number, a price or an amount before; not a decimal, a unit or a percentage after.
_NOT_AFTER = r"(?![\d%]|[.,]\d|\s?(?i:kr|sek|eur|usd|kg|g|mg|ml|cl|l|st|pcs|x|kj|kcal|mm|cm|m)\b)"
# International: +46 70 123 45 67, 0046-70-1234567, +1 (555) 012-3456, +44 (0)20 7946 0958.
_PHONE_INTL = re.compile(
    r"(?<![\d+.,])(?:\+|00)\d{1,3}[ \-.]?(?:\(0\)[ \-]?)?(?:\(\d{1,4}\)[ \-]?)?\d(?:[ \-.()]?\d){5,12}(?!\d)"
)
# National with a trunk 0: 070-123 45 67, 08-123 456 78, 020 7946 0958, 07700 900123; or glued 0701234567.
_PHONE_LOCAL = re.compile(r"(?<![\d.,])0[1-9]\d{0,3}[ \-/]\d{2,4}(?:[ \-]?\d{2,4}){1,3}(?![\d.,])")
_PHONE_LOCAL_GLUED = re.compile(r"(?<![\d.,])0[1-9]\d{7,9}(?![\d.,])")
# North American: (555) 012-3456, 555-012-3456, 555.012.3456, 555 012 3456.
_PHONE_NANP = re.compile(r"(?<![\d.,+$€£/:])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}" + _NOT_AFTER)
# Seven-digit local: 555-0199, 555 0199 (the exchange never starts with 0 or 1; no dot: that is a price).
_PHONE_SEVEN = re.compile(r"(?<![\d.,+$€£/:\-])[2-9]\d{2}[- ]\d{4}" + _NOT_AFTER)
# A number after a phone cue, in whatever shape OCR left it ("Tel 5550199", "Call: 555 01 99").
_PHONE_CUE = re.compile(
    r"(?i)(?<![a-z])(?:tel|tfn|telefon|telephone|phone|ph|mobil|mobile|mob|cell|fax|call|ring|sms|whatsapp)"
    r"\.?:? ?(\+?\(?\d(?:[ \-().]?\d){5,14})(?!\d)"
)

# Digit runs with optional single spaces or dashes between digits (cards print as 4111 1111 1111 1111).
# Dates and clock times look like long digit runs once glued together ("2026-11-25 13:02"); OCR may drop the
# space between them too ("2026-12-2714:49"), so dates are masked first, then times.
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?"
_DATE = re.compile(
    rf"(?<!\d)(?:(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.]\d{{4}})(?={_TIME})"
    r"|(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?!\d))"
)
_CLOCK = re.compile(rf"(?<!\d){_TIME}(?!\d)")
_DIGIT_RUN = re.compile(r"(?<![\d.,])\d(?:[ \-]?\d){8,22}(?![\d.,])")

# --- names -----------------------------------------------------------------------------------------------
_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
_LETTER = "A-Za-zÀ-ÖØ-öø-ÿ"
# One name word: "Anna", "SVENSSON", "O'Brien", "Anna-Karin", an initial "J." or "J".
_NAME_WORD = re.compile(rf"[{_UP}](?:[{_LETTER}'’\-]*[{_LETTER}])?\.?")
# Words part at a space, a comma or a slash ("SMITH/JOHN"), or nothing after an initial (OCR: "A.Virtanen").
_NAME_RUN = re.compile(rf"{_NAME_WORD.pattern}(?:(?: ?[,/] ?| {{1,2}}|(?<=\.)){_NAME_WORD.pattern}){{0,4}}")
# Cues a name follows even with no colon: labels that only ever label a person, salutations, sign-offs.
_STRONG_CUES = (
    r"full name|first names?|last name|given names?|surname|forename|name|namn|förnamn|efternamn|tilltalsnamn"
    r"|card holder|kortinnehavare|account holder|kontoinnehavare|passenger|passagerare|signed(?: by)?"
    r"|signature|underskrift|undertecknad|attn|dear|kära|sincerely|regards|hälsningar"
)
# Cues that also start ordinary phrases ("Customer Service", "Contact us"): only with a colon, or alone at
# the end of a line (a form's label).
_WEAK_CUES = (
    r"customer|kund|guest|gäst|patient|member|medlem|contact|kontakt|cashier|kassör|served by|betjänad av"
    r"|bill to|ship to|deliver to|recipient|mottagare|sender|avsändare|employee|issued to|holder|innehavare"
    r"|beneficiary|betalningsmottagare|pay to"
)
# Short words that label a person only with a colon in the same line ("To: Anna", never "Welcome to").
_COLON_CUES = r"from|to|till|från|att"
_TITLES = r"M(?i:rs|r|s|iss|x|adam)|D(?i:r)|P(?i:rof)|H(?i:err)|F(?i:ru)|S(?i:ir)"


def _fold(cues: str) -> str:
    """Cue words with or without their Swedish letters (OCR often reads "hälsningar" as "halsningar") and
    with or without the spaces inside them ("Servedby:")."""
    return cues.replace(" ", " ?").replace("ä", "[äa]").replace("å", "[åa]").replace("ö", "[öo]")


_STRONG_CUES, _WEAK_CUES, _COLON_CUES = _fold(_STRONG_CUES), _fold(_WEAK_CUES), _fold(_COLON_CUES)
# Only the long labels may be glued to the word before ("Kindregards,", "NAMEOFPASSENGER"): "…ANKARA" must not
# read as "kära", nor "DESIGNED" as "signed".
_LONG_STRONG = "|".join(
    c for c in _STRONG_CUES.split("|") if len(re.sub(r"\[..\]|\W", "x", c)) >= 6 and not c.startswith("signed")
)
_CUE = re.compile(
    rf"(?:(?:(?i:(?P<glued>{_LONG_STRONG}))|(?<![{_LETTER}])(?i:(?P<strong>{_STRONG_CUES})))"
    rf"(?:\s*[:.,]\s*|\s+|(?=[{_UP}][{_LOW}]))"
    rf"|(?<![{_LETTER}])(?i:(?P<weak>{_WEAK_CUES}|{_COLON_CUES}))\s*:\s*"
    rf"|(?<![{_LETTER}])(?P<title>{_TITLES})(?:\.\s*|\s+))"
)
# A label at the end of a line. OCR may glue it to the word before ("NAMEOFPASSENGER") or let its box take
# the first letter of the value beside it ("Name:L" then "LARSPATEL").
_CUE_AT_END = re.compile(
    rf"(?i)(?:(?P<glued>{_LONG_STRONG})|(?<![{_LETTER}])(?:(?P<strong>{_STRONG_CUES})|{_WEAK_CUES}))"
    rf"(?:[\s.,/\-]*|\s*:\s*[{_UP}]?)$"
)
_TITLE_WORD = re.compile(rf"(?:{_TITLES})\.?")
# A label glued to the word before it is not a name either ("NAME OFPASSENGER").
_GLUED_LABEL = re.compile(rf"(?i).*(?:{_LONG_STRONG})$")
# Words that end a name: field labels and what follows a name on a line ("Anna Svensson Tel 555-0199").
_NOT_NAME = frozenset(
    """tel tfn telefon phone ph mobil mobile mob cell fax email e-mail mail epost e-post date datum dob born född
    id no nr number nummer card kort seat flight gate class valid exp expires expiry address adress total sum
    summa moms vat ref order account konto iban bic swift signature sign from to till från and och the of for
    customer service services support care club copy receipt kvitto member medlem points poäng thanks thank
    tack you welcome välkommen gift presentkort store butik shop street road gatan vägen city org sex kön
    nationality nationalitet height längd issued utfärdad authority myndighet personnummer ssn
    passport pass boarding departure arrival terminal visa mastercard amex debit credit""".split()
)
# Brands and dishes that start with a title, sold in grocery shops: "Dr Pepper" is a drink, "Fru Jansson" a
# gratin, "Herr Gårdsgris" pork, not people.
_TITLE_BRANDS = frozenset(
    "pepper oetker martens bronner bronner's muscle proper clean kipling sheen freeze noodles butterworth "
    "butterworth's dash crimble crimble's jansson janssons jansson's gårdsgris gardsgris".split()
)
# Labels that make "name" about a thing: "Product name: Oat drink".
_THING_BEFORE_NAME = frozenset(
    "product item brand store shop company file user host domain network wifi wi-fi produkt vara varu butik "
    "företag firma fil användar".split()
)

# Letters OCR confuses with digits, mapped inside tokens that are mostly digits ("4O11 5l23").
_OCR_DIGIT = str.maketrans({"O": "0", "o": "0", "D": "0", "I": "1", "l": "1", "|": "1", "i": "1", "S": "5",
                            "s": "5", "B": "8", "Z": "2", "z": "2"})
_TOKEN = re.compile(r"[A-Za-z0-9|]{4,}")
_FEW_LETTERS = re.compile(r"(?<![A-Za-z|])[A-Za-z|]{1,2}(?![A-Za-z|])")
# OCR of Latin text sometimes returns full-width forms ("（397)"): read them as ASCII, one for one.
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

KINDS = ("email", "phone", "card", "id", "name")  # an IBAN is an "id", like other account and ID numbers


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
    if ean_ok(digits):
        return None  # a product barcode, though one in ten also passes Luhn
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return 0, len(digits)
    # OCR glues neighbouring numbers onto the card; look for a valid window, longest first.
    for length in (16, 15, 19, 14, 13, 18, 17):
        for i in range(0, len(digits) - length + 1):
            window = digits[i : i + length]
            if window[0] in "3456" and luhn_ok(window):
                return i, i + length
    return None


def _iban_end(candidate: str, *, labelled: bool) -> int | None:
    """Where the IBAN at the start of ``candidate`` ends. The run may carry the next word along ("… 7654 32
    BIC"): the longest prefix that passes mod-97. After an "IBAN" label, a prefix of the country's IBAN length
    also counts: OCR misreads a letter or digit ("KCZO" as "KCZ0") and the check then fails."""
    ends = [end for end in range(len(candidate), 14, -1) if candidate[end - 1] != " "]
    for end in ends:
        if iban_ok(candidate[:end]):
            return end
    length = _IBAN_LENGTHS.get(candidate[:2])
    if labelled and length is not None:
        for end in ends:
            if len(candidate[:end].replace(" ", "")) == length:
                return end
    return None


def _ocr_digits(text: str) -> str:
    """``text`` with look-alike letters read as digits inside mostly-digit tokens; same length, same offsets."""

    def fix(m: re.Match[str]) -> str:
        token = m.group()
        digits = sum(ch.isdigit() for ch in token)
        if digits < 0.6 * len(token):
            return token
        # Only a letter or two among digits: "CARD4111…" keeps its word.
        return _FEW_LETTERS.sub(lambda f: f.group().translate(_OCR_DIGIT), token)

    return _TOKEN.sub(fix, text)


def _name_at(text: str, pos: int) -> tuple[int, int] | None:
    """The span of the name that starts at ``pos`` (after a cue), or None."""
    m = _NAME_RUN.match(text, pos)
    if m is None:
        return None
    start = end = -1
    after_title = False
    # Word by word: a leading title is skipped (it is not the name), a label word ends the name.
    for w in _NAME_WORD.finditer(m.group()):
        word = w.group()
        key = word.rstrip(".").lower()
        if start < 0 and not after_title and _TITLE_WORD.fullmatch(word):
            after_title = True
            continue
        if key in _NOT_NAME or (start < 0 and after_title and key in _TITLE_BRANDS) or _GLUED_LABEL.match(word):
            break
        if start < 0:
            start = pos + w.start()
        end = pos + w.end()
    if start < 0:
        return None
    # A lone initial is not a name ("Signed: X").
    if len(text[start:end].rstrip(".")) < 2:
        return None
    return start, end


def _names(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cue in _CUE.finditer(text):
        strong = cue.group("strong")
        if strong is not None and strong.lower() == "name":
            before = text[: cue.start()].rstrip(" -").rsplit(None, 1)
            if before and before[-1].lower().rstrip(":") in _THING_BEFORE_NAME:
                continue
        # After a title the name starts at the title, which ``_name_at`` skips (and "Dr Pepper" with it).
        span = _name_at(text, cue.start() if cue.group("title") is not None else cue.end())
        if span is not None and not any(s < span[1] and span[0] < e for s, e in out):
            out.append(span)
    return out


def _masked(m: re.Match[str]) -> str:
    return "#" * len(m.group())


def find_pii(line: str) -> list[PiiMatch]:
    """Every personal-data span in ``line`` (one OCR line); overlapping spans keep the first kind found
    (email > id > card > phone > name)."""
    found: list[PiiMatch] = []

    def add(kind: str, start: int, end: int) -> None:
        if start >= end or any(start < m.end and m.start < end for m in found):
            return
        found.append(PiiMatch(kind, start, end, line[start:end]))

    # Every copy below has the line's length, so offsets found in any of them index ``line``.
    text = line.translate(_FULLWIDTH)
    for m in _EMAIL.finditer(text):
        add("email", m.start(), m.end())
    digits_text = _ocr_digits(text)
    # The raw line first: an IBAN's letters ("GB82WEST…") are not digits misread.
    for source in (text, digits_text):
        for m in _IBAN.finditer(source):
            end = _iban_end(m.group(), labelled="IBAN" in source[: m.start()].upper())
            if end is not None:
                add("id", m.start(), m.start() + end)
    for m in _DIGIT_RUN.finditer(digits_text):
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
    # Dates and times are never phone numbers.
    undated = _CLOCK.sub(_masked, _DATE.sub(_masked, digits_text))
    for m in _PHONE_CUE.finditer(undated):
        add("phone", m.start(1), m.end(1))
    for pattern in (_PHONE_INTL, _PHONE_NANP, _PHONE_LOCAL, _PHONE_LOCAL_GLUED, _PHONE_SEVEN):
        for m in pattern.finditer(undated):
            if pattern is _PHONE_LOCAL_GLUED and ean_ok(m.group()):
                continue
            add("phone", m.start(), m.end())
    for m in _DIGIT_RUN.finditer(undated):
        digits = re.sub(r"\D", "", m.group())
        # Long numbers identify someone (account, member, national ID) unless they are a product barcode.
        if len(digits) >= 10 and not ean_ok(digits):
            add("id", m.start(), m.end())
    for start, end in _names(text):
        add("name", start, end)
    return sorted(found, key=lambda p: p.start)


def _ends_with_cue(text: str) -> bool:
    """True when the line is, or ends in, a label whose value is on the next line ("Surname", "Name:")."""
    m = _CUE_AT_END.search(text)
    if m is None:
        return False
    strong = m.group("strong") or m.group("glued")
    if strong is not None and strong.lower().endswith("name"):
        # "Product name", "FILENAME", "Username": a thing's name, not a person's.
        before = text[: m.start()].rstrip(" -").lower()
        if any(before.endswith(w) for w in _THING_BEFORE_NAME):
            return False
    return True


def find_pii_lines(lines: Sequence[str], continues: Sequence[bool] | None = None) -> list[list[PiiMatch]]:
    """``find_pii`` for each OCR line in reading order, plus the names whose cue ends the line before them (a
    form's "Surname" label above "SVENSSON", "Passenger" beside "SMITH/JOHN").

    ``continues[i]`` says line ``i`` carries on line ``i - 1``'s row (OCR split the row at a wide gap): a name
    that ends line ``i - 1`` then goes on into line ``i`` ("Member: Emily" + "Lund")."""
    out = [find_pii(text) for text in lines]
    for i in range(1, len(lines)):
        prev = lines[i - 1]
        name_runs_on = (
            continues is not None
            and continues[i]
            and any(m.kind == "name" and not prev[m.end :].strip() for m in out[i - 1])
        )
        if not (name_runs_on or _ends_with_cue(prev)):
            continue
        text = lines[i]
        pos = len(text) - len(text.lstrip(" :"))
        span = _name_at(text, pos)
        if span is None or any(span[0] < m.end and m.start < span[1] for m in out[i]):
            continue
        out[i] = sorted([*out[i], PiiMatch("name", span[0], span[1], text[span[0] : span[1]])], key=lambda p: p.start)
    return out
