"""The dashboard: static files under /ui (plain HTML, CSS and JavaScript, no build step)
that call the REST API from the browser with the user's API key.

The files ship inside this package (augment_api/ui). Every answer under /ui carries a
Content-Security-Policy that allows scripts, styles and API calls from this origin only,
no inline script or style, and images from here or from blob: URLs (the preview contact
sheet is fetched with the key, then shown from a blob). Nothing is fetched from outside
the cluster.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent / "ui"
UI_PATH = "/ui"
UI_FILES = ("index.html", "app.js", "style.css", "favicon.svg")
READ_METHODS = ("GET", "HEAD")

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",  # the forms are handled by the script, never submitted
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate each time (cheap: ETag), so an upgraded API never runs yesterday's script.
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The UI's files, each answer with the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in READ_METHODS:
            # Answered here: the app's 405 handler cannot tell which methods a mount serves.
            response: Response = JSONResponse(
                {"detail": "Method Not Allowed"}, status_code=405,
                headers={"Allow": ", ".join(READ_METHODS)})
        else:
            response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the UI at /ui/ (/ui redirects there, so its relative URLs resolve)."""
    app.mount(UI_PATH, DashboardFiles(directory=UI_DIR, html=True), name="dashboard")
