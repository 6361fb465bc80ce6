"""The browser pages' scripts, styles and vendored libraries, served from one folder (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from lookloop.errors import NotFound
from lookloop.server.edge import inline_hashes

_PAGES = Path(__file__).resolve().parents[1] / "pages"
_MEDIA = {".js": "text/javascript", ".css": "text/css"}


def mount_page_assets(app: FastAPI) -> None:
    """Every page's assets at /pages/…: scripts and styles only, and never a file outside the pages folder."""

    @app.get("/pages/{asset:path}", include_in_schema=False)
    def page_asset(asset: str) -> FileResponse:
        path = (_PAGES / asset).resolve()
        media = _MEDIA.get(path.suffix)
        if media is None or not path.is_relative_to(_PAGES) or not path.is_file():
            raise NotFound("no such file")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


_CDN = "https://cdn.jsdelivr.net"


def _docs_page(page: HTMLResponse, *, fonts: bool = False) -> HTMLResponse:
    """FastAPI's docs page with a policy of its own: its scripts and styles from the CDN it names, and its few
    inline lines allowed by their hashes (never 'unsafe-inline')."""
    scripts, styles = inline_hashes(bytes(page.body).decode())
    font_css = " https://fonts.googleapis.com" if fonts else ""
    csp = "; ".join((
        "default-src 'self'",
        f"script-src 'self' {_CDN} {' '.join(scripts)}".rstrip(),
        f"style-src 'self' {_CDN}{font_css} {' '.join(styles)}".rstrip(),
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "font-src 'self' https://fonts.gstatic.com",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ))
    page.headers["Content-Security-Policy"] = csp
    return page


def mount_docs_pages(app: FastAPI) -> None:
    """The API's docs at /docs (Swagger UI) and /redoc, as FastAPI draws them, under their own CSP."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _docs_page(get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI"))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _docs_page(get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc"), fonts=True)
