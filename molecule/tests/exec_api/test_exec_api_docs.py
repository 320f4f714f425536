"""The exec API's /docs page in a real browser through nginx: Swagger UI draws the API's
operations with every request going to the API's own name (no CDN: it works on an offline site
and trusts no third party)."""

from __future__ import annotations

from urllib.parse import urlsplit


def test_the_docs_page_draws_the_api_from_its_own_host(browser, api_url):
    context = browser.new_context()
    try:
        page = context.new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        page.goto(f"{api_url}/docs")
        page.wait_for_selector(".opblock-tag", timeout=30000)
        tags = page.locator(".opblock-tag").all_inner_texts()
    finally:
        context.close()
    assert any("schedules" in t for t in tags) and any("executions" in t for t in tags), tags
    hosts = {urlsplit(u).netloc for u in seen if u.startswith("http")}
    assert hosts == {urlsplit(api_url).netloc}, f"the page loaded from {hosts}"
