"""``lookloop bench redact-text``: how much planted personal text the redactor's text pass hides, and how much
of what it hides is personal.

The fixture is generated from a seed: receipts, signs, ID-like cards, letters and boarding passes rendered with
Pillow in the DejaVu fonts (Debian's ``fonts-dejavu-core``), blurred, noised and JPEG-compressed a little. Each
carries known personal strings (names after their cues, phone numbers, e-mail addresses, payment cards, IBANs)
and ordinary strings that must stay readable (prices, dates, times, quantities, product barcodes). The real OCR
(``RapidOcrReader``) and the redactor's text pass run on every image.

* ``text_recall``: share of planted personal strings whose every character has at least ``CHAR_COVER`` of its
  ink box under the redaction boxes.
* ``text_precision``: share of redaction boxes with at least ``BOX_HIT`` of their area on a planted personal
  string.
* ``ordinary_kept``: share of planted ordinary strings of which no character is half covered.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lookloop.bench._common import console, fail, make_progress, print_figures, write_json
from lookloop.privacy.pii import ean_ok, luhn_ok
from lookloop.privacy.redact import Redactor

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
)
PERSONAL = ("name", "phone", "email", "card", "iban")
ORDINARY = ("price", "date", "time", "quantity", "barcode")
CHAR_COVER = 0.9  # a character is hidden when this share of its ink box lies under redaction boxes
BOX_HIT = 0.2  # a redaction box is on personal text when this share of its area overlaps a planted string
KEPT_COVER = 0.5  # an ordinary string is kept when none of its characters is covered this much


# --- the fixture -----------------------------------------------------------------------------------------

Segment = tuple[str, str | None]  # (text, kind): kind None for text that is neither personal nor scored


@dataclass
class Line:
    left: list[Segment]
    right: list[Segment] = field(default_factory=list)  # right-aligned (a receipt's price column)


@dataclass(frozen=True)
class Planted:
    kind: str
    text: str
    chars: tuple[tuple[int, int, int, int], ...]  # ink box (x0, y0, x1, y1) of each non-space character

    @property
    def personal(self) -> bool:
        return self.kind in PERSONAL

    def box(self) -> tuple[int, int, int, int]:
        xs0, ys0, xs1, ys1 = zip(*self.chars, strict=True)
        return min(xs0), min(ys0), max(xs1), max(ys1)


@dataclass
class FixtureImage:
    name: str
    template: str
    rgb: np.ndarray
    planted: list[Planted]


FIRST = (
    "Anna Erik Maria Johan Sofia Lars Emma Karl Elsa Nils Ingrid Oskar Åsa Björn Märta Liam Olivia Noah Ava "
    "James Emily Mohammed Fatima Chen Mei Luis Carmen Pierre Chloé Hans Greta Priya Arjun Yusuf Leila Tomás "
    "Zoë Sean Aoife Kenji Sara Mikael Hanna Peter Laura David"
).split()
LAST = (
    "Svensson Andersson Lindqvist Öberg Nyström Johansson Berg Smith Johnson Williams Brown O'Brien Murphy "
    "García Martínez Dubois Müller Schmidt Rossi Kowalski Nowak Khan Ahmed Patel Nguyen Wang Tanaka Silva "
    "Jensen Hansen Virtanen Sandberg Lund Eklund MacLeod Fitzgerald Holm Wiklund Dahl Lindberg Carter Novak"
).split()
PRODUCTS = (
    "MILK 1L", "BANANAS", "OAT DRINK", "RYE BREAD", "COFFEE", "APPLES", "CUCUMBER", "BUTTER", "YOGHURT",
    "PASTA", "TOMATOES", "CHEESE", "ORANGE JUICE", "EGGS 12", "RICE", "CHICKEN", "CARROTS", "TEA",
)
STORES = ("COOP KONSUM", "ICA NÄRA", "CORNER MARKET", "FRESH FOODS", "CITY GROCER", "WILLYS")
DOMAINS = ("example.com", "mail.example.se", "post.example.org", "inbox.example.net", "company.example.co.uk")
TITLES = ("Mr", "Mrs", "Ms", "Dr", "Mr.", "Mrs.", "Dr.")


def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii() and c.isalnum()).lower()


def _digits(r: random.Random, n: int) -> str:
    return "".join(str(r.randint(0, 9)) for _ in range(n))


def _name(r: random.Random) -> str:
    first, last = r.choice(FIRST), r.choice(LAST)
    form = r.random()
    if form < 0.5:
        return f"{first} {last}"
    if form < 0.62:
        return f"{first} {r.choice(FIRST)} {last}"
    if form < 0.72:
        return f"{first[0]}. {last}"
    if form < 0.86:
        return f"{first} {last}".upper()
    return f"{last}, {first}".upper()


def _phone(r: random.Random) -> str:
    area = f"{r.randint(2, 9)}{_digits(r, 2)}"
    forms: list[Callable[[], str]] = [
        lambda: f"555-01{_digits(r, 2)}",
        lambda: f"{r.randint(2, 9)}{_digits(r, 2)}-{_digits(r, 4)}",
        lambda: f"{r.randint(2, 9)}{_digits(r, 2)} {_digits(r, 4)}",
        lambda: f"({area}) {_digits(r, 3)}-{_digits(r, 4)}",
        lambda: f"{area}-{_digits(r, 3)}-{_digits(r, 4)}",
        lambda: f"+1 {area} {_digits(r, 3)} {_digits(r, 4)}",
        lambda: f"07{r.choice('0236')}-{_digits(r, 3)} {_digits(r, 2)} {_digits(r, 2)}",
        lambda: f"+46 7{r.choice('0236')} {_digits(r, 3)} {_digits(r, 2)} {_digits(r, 2)}",
        lambda: f"08-{_digits(r, 3)} {_digits(r, 3)} {_digits(r, 2)}",
        lambda: f"+44 20 {_digits(r, 4)} {_digits(r, 4)}",
        lambda: f"07700 {_digits(r, 6)}",
    ]
    return r.choice(forms)()


def _email(r: random.Random) -> str:
    first, last = _ascii(r.choice(FIRST)), _ascii(r.choice(LAST))
    local = r.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{r.randint(1, 99)}", f"{last}.{first}"])
    return f"{local}@{r.choice(DOMAINS)}"


def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _card(r: random.Random) -> str:
    if r.random() < 0.15:  # American Express: 15 digits, 4-6-5
        number = _luhn_complete("37" + _digits(r, 12))
        groups = [number[:4], number[4:10], number[10:]]
    else:
        number = _luhn_complete(r.choice("45") + _digits(r, 14))
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
    return " ".join(groups) if r.random() < 0.85 else "".join(groups)


def _iban(r: random.Random) -> str:
    def letters(n: int) -> str:
        return "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))

    country = r.choice(["SE", "GB", "DE", "NL", "FR"])
    body = {
        "SE": lambda: _digits(r, 20), "GB": lambda: letters(4) + _digits(r, 14), "DE": lambda: _digits(r, 18),
        "NL": lambda: letters(4) + _digits(r, 10), "FR": lambda: _digits(r, 23),
    }[country]()
    check = 98 - int("".join(str(int(c, 36)) for c in body + country + "00")) % 97
    iban = f"{country}{check:02d}{body}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if r.random() < 0.8 else iban


def _price(r: random.Random) -> str:
    whole, cents = r.randint(1, 499), r.randint(0, 99)
    return r.choice(
        [f"{whole}.{cents:02d}", f"{whole},{cents:02d}", f"${whole}.{cents:02d}", f"{whole}.{cents:02d} kr"]
    )


def _date(r: random.Random) -> str:
    y, m, d = r.randint(2024, 2027), r.randint(1, 12), r.randint(1, 28)
    return r.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m:02d}/{d:02d}/{y % 100:02d}", f"{d}.{m}.{y}"])


def _time(r: random.Random) -> str:
    h, m = r.randint(0, 23), r.randint(0, 59)
    return r.choice([f"{h:02d}:{m:02d}", f"{h:02d}:{m:02d}:{r.randint(0, 59):02d}", f"{h}:{m:02d}"])


def _quantity(r: random.Random) -> str:
    return r.choice(
        [f"{r.choice([250, 500, 750, 1000])} g", f"{r.randint(2, 6)} x", f"{r.choice([330, 500])} ml",
         f"{r.randint(1, 2)}.{r.randint(1, 9)} kg", f"{r.randint(2, 12)} pcs", f"{r.choice([1, 2, 3])}L"]
    )


def _barcode(r: random.Random) -> str:
    body = r.choice(["73", "40", "50", "87", "57"]) + _digits(r, 10)
    return next(body + d for d in "0123456789" if ean_ok(body + d))


def _cued_name(r: random.Random, cues: list[str]) -> list[Segment]:
    return [(r.choice(cues) + " ", None), (_name(r), "name")]


def _cued_phone(r: random.Random) -> list[Segment]:
    if r.random() < 0.3:
        return [(_phone(r), "phone")]
    return [(r.choice(["Tel: ", "Tel ", "Phone: ", "Call ", "Mob: ", "Ring ", "Tfn: "]), None), (_phone(r), "phone")]


def _cued_email(r: random.Random) -> list[Segment]:
    if r.random() < 0.4:
        return [(_email(r), "email")]
    return [(r.choice(["Email: ", "E-mail: ", "Mail "]), None), (_email(r), "email")]


def _receipt(r: random.Random) -> list[Line]:
    lines = [Line([(r.choice(STORES), None)]), Line([(f"Storgatan {r.randint(1, 99)}, Stockholm", None)])]
    lines.append(Line([(_date(r), "date"), ("  ", None), (_time(r), "time")]))
    for _ in range(r.randint(3, 6)):
        left: list[Segment] = [(r.choice(PRODUCTS), None)]
        if r.random() < 0.4:
            left += [("  ", None), (_quantity(r), "quantity")]
        lines.append(Line(left, [(_price(r), "price")]))
        if r.random() < 0.3:
            lines.append(Line([("EAN ", None), (_barcode(r), "barcode")]))
    lines.append(Line([("TOTAL", None)], [(_price(r), "price")]))
    extras: list[list[Segment]] = [
        _cued_name(r, ["Cashier:", "Served by:", "Kassör:"]),
        _cued_name(r, ["Member:", "Customer:", "Kund:", "Cardholder:"]),
        [("CARD ", None), (_card(r), "card")],
        _cued_email(r),
        _cued_phone(r),
    ]
    for segs in r.sample(extras, r.randint(2, 4)):
        lines.append(Line(segs))
    lines.append(Line([("THANK YOU", None)]))
    return lines


def _sign(r: random.Random) -> list[Line]:
    head = r.choice(["LOST CAT", "FOR SALE", "ROOM TO RENT", "BIKE FOR SALE", "PIANO LESSONS", "DOG WALKER"])
    lines = [Line([(head, None)]), Line([("Seen since ", None), (_date(r), "date")])]
    lines.append(Line([("Price ", None), (_price(r), "price")]))
    lines.append(Line(_cued_name(r, ["Contact:", "Kontakt:", "Ask for Dr", "Signed:", "Name:"])))
    lines.append(Line(_cued_phone(r)))
    if r.random() < 0.6:
        lines.append(Line(_cued_email(r)))
    lines.append(Line([("Open until ", None), (_time(r), "time")]))
    return lines


def _id_card(r: random.Random) -> list[Line]:
    kind = r.random()
    if kind < 0.4:
        first, last = r.choice(FIRST), r.choice(LAST)
        return [
            Line([("IDENTITY CARD / ID-KORT", None)]),
            Line([(r.choice(["Surname / Efternamn", "Efternamn/Surname", "Surname"]), None)]),
            Line([(last.upper(), "name")]),
            Line([(r.choice(["Given names / Förnamn", "Förnamn", "Given names"]), None)]),
            Line([(f"{first} {r.choice(FIRST)}".upper() if r.random() < 0.5 else first.upper(), "name")]),
            Line([("Expiry ", None), (_date(r), "date")]),
        ]
    if kind < 0.75:
        return [
            Line([(r.choice(["VISA", "MASTERCARD", "DEBIT"]), None)]),
            Line([(_card(r), "card")]),
            Line([("VALID THRU ", None), (f"{r.randint(1, 12):02d}/{r.randint(26, 31)}", "date")]),
            Line([(r.choice(["CARDHOLDER", "Cardholder", "Card holder"]), None)]),
            Line([(_name(r).upper(), "name")]),
        ]
    return [
        Line([(r.choice(["MEMBER CARD", "LIBRARY CARD", "GYM PASS"]), None)]),
        Line(_cued_name(r, ["Name:", "Namn:", "Name", "Member:"])),
        Line(_cued_email(r)),
        Line([("Valid to ", None), (_date(r), "date")]),
    ]


def _letter(r: random.Random) -> list[Line]:
    lines = [Line([("Stockholm, ", None), (_date(r), "date")])]
    lines.append(Line(_cued_name(r, ["To:", "Attn:", "Till:"])))
    if r.random() < 0.5:
        lines.append(Line([("Dear ", None), (r.choice(TITLES) + " ", None), (r.choice(LAST), "name"), (",", None)]))
    else:
        lines.append(Line([(r.choice(["Dear ", "Kära "]), None), (r.choice(FIRST), "name"), (",", None)]))
    lines.append(Line([("Your invoice of ", None), (_price(r), "price"), (" is due.", None)]))
    lines.append(Line([("IBAN: ", None), (_iban(r), "iban")]))
    lines.append(Line(_cued_phone(r)))
    lines.append(Line([(r.choice(["Kind regards,", "Best regards,", "Med vänliga hälsningar", "Sincerely,"]), None)]))
    lines.append(Line([(_name(r), "name")]))
    return lines


def _boarding(r: random.Random) -> list[Line]:
    last, first = r.choice(LAST).upper(), r.choice(FIRST).upper()
    title = r.choice(["MR", "MRS", "MS"])
    lines = [Line([("BOARDING PASS", None)])]
    if r.random() < 0.5:
        lines.append(Line([("Passenger: ", None), (f"{last}/{first}", "name"), (f" {title}", None)]))
    else:
        lines.append(Line([("NAME OF PASSENGER", None)]))
        lines.append(Line([(f"{last}/{first}", "name"), (f" {title}", None)]))
    flight = f"Flight SK {r.randint(100, 1999)}  Gate B{r.randint(1, 40)}  Seat {r.randint(1, 30)}C"
    lines.append(Line([(flight, None)]))
    lines.append(Line([("Date ", None), (_date(r), "date"), ("  Boarding ", None), (_time(r), "time")]))
    return lines


TEMPLATES: dict[str, Callable[[random.Random], list[Line]]] = {
    "receipt": _receipt, "sign": _sign, "card": _id_card, "letter": _letter, "boarding": _boarding,
}


def _render(lines: list[Line], r: random.Random, nr: np.random.Generator) -> tuple[np.ndarray, list[Planted]]:
    font_path = FONT_DIR / r.choice(FONTS)
    size = r.randint(20, 30)
    font = ImageFont.truetype(str(font_path), size)
    step = int(size * r.uniform(1.5, 1.9))
    margin = r.randint(20, 40)
    width = max(
        margin * 2 + int(sum(font.getlength(t) for t, _ in ln.left) + sum(font.getlength(t) for t, _ in ln.right))
        + (3 * size if ln.right else 0)
        for ln in lines
    )
    width = max(width, r.randint(480, 720))
    height = margin * 2 + step * len(lines)
    dark_bg = r.random() < 0.15
    bg = tuple(r.randint(20, 60) for _ in range(3)) if dark_bg else tuple(r.randint(215, 255) for _ in range(3))
    ink = tuple(r.randint(215, 255) for _ in range(3)) if dark_bg else tuple(r.randint(0, 60) for _ in range(3))
    image = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(image)
    planted: list[Planted] = []

    def put(segments: list[Segment], x: float, y: int) -> None:
        for text, kind in segments:
            draw.text((x, y), text, font=font, fill=ink)
            if kind is not None:
                chars = []
                for i, ch in enumerate(text):
                    if ch.isspace():
                        continue
                    bx = draw.textbbox((x + font.getlength(text[:i]), y), ch, font=font)
                    chars.append((int(bx[0]), int(bx[1]), int(np.ceil(bx[2])), int(np.ceil(bx[3]))))
                planted.append(Planted(kind, text, tuple(chars)))
            x += font.getlength(text)

    for i, ln in enumerate(lines):
        y = margin + i * step
        put(ln.left, margin, y)
        if ln.right:
            put(ln.right, width - margin - sum(font.getlength(t) for t, _ in ln.right), y)
    if r.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(r.uniform(0.3, 0.9)))
    arr = np.asarray(image).astype(np.int16)
    arr = np.clip(arr + nr.normal(0, r.uniform(0, 6), arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=r.randint(70, 95))
    rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return np.ascontiguousarray(rgb), planted


def fonts_available() -> list[Path]:
    return [FONT_DIR / f for f in FONTS if (FONT_DIR / f).is_file()]


def make_fixture(n_images: int, *, seed: int = 0) -> list[FixtureImage]:
    """``n_images`` rendered images, templates in turn; the same seed gives the same images and strings."""
    if len(fonts_available()) < len(FONTS):
        raise FileNotFoundError(f"DejaVu fonts not found in {FONT_DIR}: install Debian's fonts-dejavu-core")
    out: list[FixtureImage] = []
    names = list(TEMPLATES)
    for i in range(n_images):
        r = random.Random(seed * 100_003 + i)
        nr = np.random.default_rng(seed * 100_003 + i)
        template = names[i % len(names)]
        rgb, planted = _render(TEMPLATES[template](r), r, nr)
        out.append(FixtureImage(f"{i:03d}_{template}.jpg", template, rgb, planted))
    return out


def save_fixture(images: list[FixtureImage], out_dir: Path) -> None:
    """The images as JPEG and ``truth.json`` (every planted string with its kind and character boxes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = []
    for im in images:
        Image.fromarray(im.rgb).save(out_dir / im.name, quality=95)
        truth.append(
            {"file": im.name, "template": im.template,
             "strings": [{"kind": p.kind, "text": p.text, "chars": [list(c) for c in p.chars]} for p in im.planted]}
        )
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ImageScore:
    planted: list[tuple[Planted, bool]]  # (string, hidden) for personal; (string, kept) for ordinary
    boxes: int
    boxes_on_personal: int


def score_image(shape: tuple[int, int], planted: list[Planted], boxes: list[tuple[int, int, int, int]]) -> ImageScore:
    """Scores one image's redaction boxes ([x, y, w, h]) against its planted strings."""
    height, width = shape
    covered = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        covered[max(0, y) : y + h, max(0, x) : x + w] = True

    def share(c: tuple[int, int, int, int]) -> float:
        x0, y0, x1, y1 = max(0, c[0]), max(0, c[1]), min(width, c[2]), min(height, c[3])
        return float(covered[y0:y1, x0:x1].mean()) if x1 > x0 and y1 > y0 else 0.0

    results = []
    for p in planted:
        shares = [share(c) for c in p.chars]
        ok = all(s >= CHAR_COVER for s in shares) if p.personal else all(s < KEPT_COVER for s in shares)
        results.append((p, ok))
    personal = np.zeros((height, width), bool)
    for p in planted:
        if p.personal:
            x0, y0, x1, y1 = p.box()
            personal[max(0, y0) : y1, max(0, x0) : x1] = True
    on = 0
    for x, y, w, h in boxes:
        area = personal[max(0, y) : y + h, max(0, x) : x + w]
        if area.size and area.mean() >= BOX_HIT:
            on += 1
    return ImageScore(results, len(boxes), on)


def figures(scores: list[ImageScore], times_ms: list[float]) -> dict[str, Any]:
    personal = [(p, ok) for s in scores for p, ok in s.planted if p.personal]
    ordinary = [(p, ok) for s in scores for p, ok in s.planted if not p.personal]
    n_boxes = sum(s.boxes for s in scores)
    out: dict[str, Any] = {
        "text_recall": round(sum(ok for _, ok in personal) / len(personal), 4) if personal else None,
        "text_precision": round(sum(s.boxes_on_personal for s in scores) / n_boxes, 4) if n_boxes else None,
        "ordinary_kept": round(sum(ok for _, ok in ordinary) / len(ordinary), 4) if ordinary else None,
        "n_strings": len(personal),
        "n_ordinary": len(ordinary),
        "n_boxes": n_boxes,
        "n_images": len(scores),
        "ms_per_image": round(statistics.fmean(times_ms), 1) if times_ms else None,
    }
    for kind in PERSONAL:
        rows = [ok for p, ok in personal if p.kind == kind]
        out[f"recall_{kind}"] = round(sum(rows) / len(rows), 4) if rows else None
    out["missed"] = [f"{p.kind}: {p.text}" for p, ok in personal if not ok]
    out["not_kept"] = [f"{p.kind}: {p.text}" for p, ok in ordinary if not ok]
    return out


def run_bench(
    images: list[FixtureImage], redactor: Redactor, progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    redactor.redact(np.full((64, 256, 3), 255, np.uint8), faces=False, text=True)  # load the OCR models first
    scores: list[ImageScore] = []
    times: list[float] = []
    for im in images:
        bgr = np.ascontiguousarray(im.rgb[:, :, ::-1])
        t0 = time.perf_counter()
        result = redactor.redact(bgr, faces=False, text=True)
        times.append((time.perf_counter() - t0) * 1000)
        scores.append(score_image(im.rgb.shape[:2], im.planted, [r.box for r in result.regions]))
        if progress is not None:
            progress()
    return figures(scores, times)


# --- CLI ------------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command("redact-text")
    def redact_text(
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here as JSON.")] = None,
        images: Annotated[int, typer.Option("--images", help="Images in the generated fixture.")] = 60,
        limit: Annotated[
            int | None, typer.Option("--limit", help="Bench only the first N images (a quick check).")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the generated fixture.")] = 0,
        save_fixture_dir: Annotated[
            Path | None, typer.Option("--save-fixture", help="Also write the images and truth.json here.")
        ] = None,
    ) -> None:
        """Personal-text redaction: recall of planted names/phones/emails/cards/IBANs, precision of the boxes."""

        if images < 1:
            raise fail("--images must be at least 1")
        if limit is not None and limit < 1:
            raise fail("--limit must be at least 1")
        if seed < 0:
            raise fail("--seed must be 0 or more")
        if json_path is not None and json_path.is_dir():
            raise fail(f"--json {json_path} is a folder; give a file path")
        try:
            fixture = make_fixture(min(images, limit) if limit is not None else images, seed=seed)
        except FileNotFoundError as exc:
            raise fail(str(exc)) from None
        if save_fixture_dir is not None:
            save_fixture(fixture, save_fixture_dir)
            console.print(f"fixture written to {save_fixture_dir}")
        with make_progress() as progress:
            task = progress.add_task("redacting text", total=len(fixture))
            result = run_bench(fixture, Redactor(), lambda: progress.advance(task))
        missed, not_kept = result.pop("missed"), result.pop("not_kept")
        print_figures(f"bench redact-text ({len(fixture)} images, seed {seed})", result)
        for title, rows in (("missed personal strings", missed), ("ordinary strings covered", not_kept)):
            if rows:
                console.print(f"{title} ({len(rows)}): " + "; ".join(rows[:20]) + (" …" if len(rows) > 20 else ""))
        write_json(json_path, {**result, "seed": seed, "char_cover": CHAR_COVER, "box_hit": BOX_HIT})
