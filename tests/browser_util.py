"""Shared by the browser tests of the three pages: Chromium, axe-core, keyboard focus, layout and screenshots.

Set LOOKLOOP_DOCS_SCREENSHOTS=1 to write the pages' screenshots to docs/pages/ (otherwise they go to a temporary
folder, and are still taken: a page that cannot be drawn fails the test).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it is now, of the given impacts: id, impact, help and the nodes."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated from outside the page: a <script> tag with the source inline would be refused by the CSP.
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    found = page.evaluate("""async () => {
        const r = await axe.run(document, { resultTypes: ["violations"] });
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" ") + " :: " + (n.failureSummary || "").replace(/\\s+/g, " ")),
        }));
    }""")
    return [v for v in found if v["impact"] in impacts]


def assert_accessible(page: Any, where: str) -> None:
    bad = axe_violations(page)
    assert not bad, f"{where}: axe found serious or critical violations:\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"][:6]) for v in bad)


FOCUS_STYLE = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const s = getComputedStyle(el);
    const label = el.id || el.getAttribute("aria-label") || (el.textContent || "").trim().slice(0, 30) || el.tagName;
    return { label, tag: el.tagName, outline: s.outlineStyle, width: parseFloat(s.outlineWidth) || 0,
             shadow: s.boxShadow, focusVisible: el.matches(":focus-visible") };
}"""


def tab_through(page: Any, limit: int = 60) -> list[dict[str, Any]]:
    """Presses Tab from the top of the page until focus comes round again; what each stop looked like."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.click(1, 1)  # Tab starts from the top left corner of the page (the header's edge: nothing there)
    stops: list[dict[str, Any]] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUS_STYLE)
        if stop is None or (stops and stop["label"] == stops[0]["label"] and stop["tag"] == stops[0]["tag"]):
            break
        stops.append(stop)
    return stops


def unringed(stops: list[dict[str, Any]]) -> list[str]:
    """The focus stops without a clearly visible ring: a solid outline of 2 px or more (the browser's own 1 px
    'auto' ring is lost on dark and coloured backgrounds)."""
    return [s["label"] for s in stops if not (s["outline"] not in ("none", "auto") and s["width"] >= 2)]


def tab_to(page: Any, selector: str, limit: int = 60) -> bool:
    """Presses Tab until the element matching ``selector`` has the focus; False when it never gets it."""
    for _ in range(limit):
        if page.evaluate("(sel) => document.activeElement && document.activeElement.matches(sel)", selector):
            return True
        page.keyboard.press("Tab")
    return bool(page.evaluate("(sel) => document.activeElement && document.activeElement.matches(sel)", selector))


def box_in_viewport(page: Any, selector: str) -> bool:
    """Whether the element is entirely inside the visible viewport now (no scrolling needed to see it)."""
    return bool(page.evaluate("""(sel) => {
        const el = document.querySelector(sel);
        if (!el) return false;
        const r = el.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0
            && r.bottom <= window.innerHeight && r.right <= window.innerWidth;
    }""", selector))


def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0: nothing to scroll sideways)."""
    return int(page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


def screenshot(page: Any, name: str, tmp_path: Path, *, full_page: bool = False) -> Path:
    """The page's screenshot as ``name``.png: into docs/pages/ with LOOKLOOP_DOCS_SCREENSHOTS=1, else tmp_path."""
    folder = REPO / "docs" / "pages" if os.environ.get("LOOKLOOP_DOCS_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.png"
    page.screenshot(path=str(out), full_page=full_page)
    assert out.stat().st_size > 5_000, f"{out} looks empty"
    return out


def wait_js(page: Any, expression: str, timeout: float = 30_000) -> None:
    """Waits until ``expression`` is truthy in the page. Playwright's ``wait_for_function`` evaluates its predicate
    with ``eval`` inside the page, which the pages' CSP refuses; ``page.evaluate`` runs outside the CSP."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout / 1000:.0f} s: {expression}")
        page.wait_for_timeout(50)


def csp_violations(errors: list[str]) -> Callable[[Any], None]:
    """A console listener that records what the page's Content-Security-Policy refused (in ``errors``)."""

    def listen(message: Any) -> None:
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    return listen
