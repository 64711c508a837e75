"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts, styles and icon served
from this package (``static/docs/``, vendored by ``scripts/vendor_docs.py``; its README
names the versions and licences). FastAPI's own pages load them from a CDN, and Google
fonts, so on an offline host they were blank (issue 15); these load nothing from outside
the server, and their Content-Security-Policy tells the browser to refuse anything that
would."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from server.api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent / "static" / "docs"
ASSETS_PATH = "/docs/static"
# why explicit: some platforms' mimetypes tables map .js to text/plain; only these are served
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
ASSET_HEADERS = {
    # why a day, not forever: the names stay when an upgrade changes a pinned version, so a
    # browser may keep an old copy at most this long; the ETag makes revalidating cheap
    "Cache-Control": "public, max-age=86400",
    "X-Content-Type-Options": "nosniff",
}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",  # why: a small page; an upgraded server's must not be kept stale
    # why each source: the pages' inline start-up scripts and the styles both UIs inject,
    # ReDoc's schema validator (ajv compiles with Function), data: icons in Swagger's CSS,
    # and ReDoc's search worker made from a blob; nothing from another origin
    "Content-Security-Policy": "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:",
}
# why validatorUrl null: Swagger UI otherwise shows a badge image fetched from
# validator.swagger.io, which posts the schema's URL there
SWAGGER_PARAMETERS = {"validatorUrl": None}


def docs_assets() -> dict[str, Path]:
    """The servable files by name: the vendored scripts, styles and icon, nothing else."""
    if not STATIC_DIR.is_dir():
        return {}
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}


def _asset_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title}: Swagger UI",
        swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "favicon-32x32.png"),
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )
    page.headers.update(PAGE_HEADERS)
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title}: ReDoc",
        redoc_js_url=_asset_url(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset_url(request, "favicon-32x32.png"),
        with_google_fonts=False,  # why: fonts.googleapis.com; the system's sans-serif stands in
    )
    page.headers.update(PAGE_HEADERS)
    return page


@router.get(f"{ASSETS_PATH}/{{name}}")
async def docs_asset(name: str) -> FileResponse:
    path = docs_assets().get(name)  # why a lookup, not a join: no path from the URL reaches the disk
    if path is None:
        raise ApiError(404, "not_found", f"no docs asset {name!r} (is server/api/static/docs/ installed?)")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=ASSET_HEADERS)
