"""/docs works offline: its page names no other host, and every file it loads is served by this
app (connectors/docs.py). tests/e2e/test_api_docs.py renders it in Chromium with every other host
blocked. /redoc (whose bundle fetches from its CDN) is off."""

from __future__ import annotations

import re

_REFERENCE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|\burl:\s*['"]([^'"]+)['"]""")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


def test_docs_page_loads_only_local_files(web_client) -> None:  # type: ignore[no-untyped-def]
    response = web_client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "://" not in html, "the page names another host (a CDN, fonts, a validator)"
    references = [a or b for a, b in _REFERENCE.findall(html)]
    assert "/openapi.json" in references and any(r.endswith(".js") for r in references), references
    for url in references:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = web_client.get(url)
        assert asset.status_code == 200, url
        kind = next(t for suffix, t in _TYPES.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(kind), url
        assert len(asset.content) > (100_000 if url.endswith(".js") else 100), url
    assert "SwaggerUIBundle" in web_client.get("/docs/assets/swagger-ui-bundle.js").text
    assert web_client.get("/redoc").status_code == 404


def test_only_the_listed_docs_assets_are_served(web_client) -> None:  # type: ignore[no-untyped-def]
    for name in ("core.py", "..%2F__init__.py", "nope.js", "redoc.standalone.js"):
        assert web_client.get(f"/docs/assets/{name}").status_code == 404, name
    assert "/docs/assets/{name}" not in web_client.get("/openapi.json").json()["paths"]
