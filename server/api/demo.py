"""``/demo``: the browser demo (``clients/web/``), a static page of plain ES modules.

The server imports no code from ``clients/``: it only finds the folder on disk. In a
checkout and in an installed wheel alike, ``clients`` sits beside ``server`` (the wheel
carries the page as package data of ``clients``), so the folder is found relative to this
package. A server installed without it answers 404 for the demo and serves the API as usual.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from server.api.errors import ApiError

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
# why explicit: module scripts need a JavaScript MIME type, and some platforms' mimetypes
# tables map .js to text/plain; only these kinds of files are served at all
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
HEADERS = {
    "Cache-Control": "no-cache",  # why: a rebuilt server must not leave a stale page in the browser
    "X-Content-Type-Options": "nosniff",
}


def demo_files() -> dict[str, Path]:
    """The page's files by name: the plain files of the folder, no subfolders, no dotfiles."""
    if not WEB_DIR.is_dir():
        return {}
    return {
        path.name: path
        for path in WEB_DIR.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix in MEDIA_TYPES
    }


@router.get("/demo")
async def demo_redirect(request: Request) -> RedirectResponse:
    # why a redirect: the page loads its modules by relative URL, which resolve under /demo/
    # only when the page's own URL ends with a slash
    return RedirectResponse(f"{request.scope.get('root_path', '')}/demo/", status_code=307)


@router.get("/demo/")
async def demo_page() -> FileResponse:
    return await demo_file("index.html")


@router.get("/demo/{name}")
async def demo_file(name: str) -> FileResponse:
    path = demo_files().get(name)  # why a lookup, not a join: no path from the URL reaches the disk
    if path is None:
        raise ApiError(404, "not_found", f"no demo file {name!r} (is clients/web/ installed?)")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
