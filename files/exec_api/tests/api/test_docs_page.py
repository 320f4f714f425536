"""The /docs page (Swagger UI) and its assets come from the API itself: nothing from a CDN, a
Swagger UI that reads OpenAPI 3.1 (5.x), no token needed to read the page."""

from __future__ import annotations

import re


def test_the_docs_page_loads_its_assets_from_this_host(app_client):
    r = app_client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert "/docs/assets/swagger-ui-bundle.js" in urls and "/openapi.json" in urls


def test_its_assets_are_served_and_are_swagger_ui_5(app_client):
    js = app_client.get("/docs/assets/swagger-ui-bundle.js")
    css = app_client.get("/docs/assets/swagger-ui.css")
    assert js.status_code == css.status_code == 200
    assert "javascript" in js.headers["content-type"] and "css" in css.headers["content-type"]
    versions = set(re.findall(r'"(5\.\d+\.\d+)"', js.text))
    assert versions, "no Swagger UI 5 version string in the bundle"


def test_redoc_is_gone_rather_than_loading_from_a_cdn(app_client):
    assert app_client.get("/redoc").status_code == 404
