"""The API docs and the start page in real headless Chromium with every request off this machine refused:
they must render from lookloop's own assets (they loaded Swagger UI and ReDoc from a CDN before)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from voice_util import LiveServer, small_app_system

from lookloop.server.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path, grocery) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    system = small_app_system(tmp_path_factory.mktemp("docs"), data_dir, model_dir, grocery)
    with LiveServer(create_app(system=system, warm=False)) as live:
        yield live
    system.db.dispose()


@pytest.fixture
def offline_page(server: LiveServer) -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    refused: list[str] = []

    def only_this_machine(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            if route.request.resource_type != "image":  # ReDoc's "powered by" badge is a decoration
                refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.route("**/*", only_this_machine)
            yield page, refused
        finally:
            browser.close()


def test_swagger_ui_renders_offline_with_an_authorize_button(server: LiveServer, offline_page: Any) -> None:
    page, refused = offline_page
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "lookloop" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() > 20  # the operations are listed
    page.click("button.authorize")
    page.wait_for_selector("text=token (http, Bearer)", timeout=10_000)
    assert refused == []


def test_redoc_renders_offline(server: LiveServer, offline_page: Any) -> None:
    page, refused = offline_page
    page.goto(f"{server.url}/redoc")
    page.wait_for_selector("h1", timeout=30_000)
    assert "lookloop" in page.inner_text("h1")
    assert refused == []


def test_the_root_leads_to_the_pages(server: LiveServer, offline_page: Any) -> None:
    page, _ = offline_page
    page.goto(f"{server.url}/")
    assert page.url.endswith("/start")
    links = {a.get_attribute("href") for a in page.locator("a").all()}
    assert {"/simulator", "/review", "/dashboard", "/docs"} <= links


def test_the_schema_declares_its_auth_scheme(server: LiveServer) -> None:
    import httpx

    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["token"]["description"],
    }
    secured = [op for path in schema["paths"].values() for op in path.values() if op.get("security")]
    assert secured and all(op["security"] == [{"token": []}] for op in secured)
    assert schema["paths"]["/v1/operators/metrics"]["get"]["security"] == [{"token": []}]
