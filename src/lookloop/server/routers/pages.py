"""The browser pages' scripts, styles and vendored libraries, served from one folder (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from lookloop.errors import NotFound

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
