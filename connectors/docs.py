"""The API docs, ``/docs`` (Swagger UI), served entirely by this server.

FastAPI's default page loads Swagger UI from a CDN, so on a cluster or laptop without internet
``/docs`` is a blank page. Its files come instead from the ``fastapi-offline`` package (a pinned
dependency): Swagger UI 5, served under ``/docs/assets/``. (``swagger-ui-bundle`` ships Swagger UI
4.15, which cannot render the OpenAPI 3.1 document FastAPI writes: "Unable to render this
definition".) ``/redoc`` is off: ReDoc's bundle fetches its logo from its own CDN even when served
locally. Nothing on the page names another host (tests/connectors/test_docs.py,
tests/e2e/test_api_docs.py). Staff-only: k8s routes ``/docs`` and ``/openapi.json`` through the
internal Ingress only.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
_FILES = {  # served name -> media type; nothing else in the package folder is served
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    folder = resources.files("fastapi_offline").joinpath("static")

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} API", swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css", swagger_favicon_url=f"{ASSETS}/favicon.png",
            # no spec validation badge: it would send the document to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None})

    @router.get(f"{ASSETS}/{{name}}")
    async def asset(name: str) -> Response:
        if name not in _FILES:
            raise HTTPException(404, f"no such docs asset: {name}")
        return Response(folder.joinpath(name).read_bytes(), media_type=_FILES[name],
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    return router
