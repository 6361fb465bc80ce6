"""The browser pages' scripts, styles and vendored libraries, served from one folder (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from lookloop.errors import NotFound

_PAGES = Path(__file__).resolve().parents[1] / "pages"
_MEDIA = {".js": "text/javascript", ".css": "text/css"}
# Swagger UI and ReDoc as a wheel ships them: the API docs render with no network.
_DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
_DOCS_MEDIA = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}


# Swagger UI and ReDoc set styles from their scripts: those two pages allow inline *styles* (never scripts).
_DOCS_CSP = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
    "worker-src 'self' blob:", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
    "frame-ancestors 'none'",
))


def _page(name: str, csp: str | None = None) -> FileResponse:
    headers = {"Cache-Control": "no-cache"}
    if csp:
        headers["Content-Security-Policy"] = csp
    return FileResponse(_PAGES / name, media_type="text/html", headers=headers)


def mount_page_assets(app: FastAPI) -> None:
    """Every page's assets at /pages/…: scripts and styles only, and never a file outside the pages folder."""

    @app.get("/pages/{asset:path}", include_in_schema=False)
    def page_asset(asset: str) -> FileResponse:
        path = (_PAGES / asset).resolve()
        media = _MEDIA.get(path.suffix)
        if media is None or not path.is_relative_to(_PAGES) or not path.is_file():
            raise NotFound("no such file")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


def mount_start_and_docs(app: FastAPI) -> None:
    """``/`` leads to a small index of the pages; ``/docs`` and ``/redoc`` are served from local assets."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/start", status_code=307)

    @app.get("/start", include_in_schema=False)
    def start() -> FileResponse:
        return _page("start.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return _page("docs.html", _DOCS_CSP)

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> FileResponse:
        return _page("redoc.html", _DOCS_CSP)

    @app.get("/docs-assets/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        media = _DOCS_MEDIA.get(name)
        if media is None:
            raise NotFound("no such file")
        return FileResponse(_DOCS_ASSETS / name, media_type=media, headers={"Cache-Control": "max-age=86400"})
