"""What a browser gets from `serve`: the page at `/` (paste a text, see its entities highlighted) and the
API docs at /docs (Swagger UI), every file of them served by the server itself, so that both work on a
machine without internet. Needs the serving stack (requirements-serve.txt)."""

from pathlib import Path
from typing import Any

PAGE_DIR = Path(__file__).with_name("page")  # index.html, page.css, page.js: package data (pyproject.toml)


def offline_docs_app(**kwargs: Any):
    """A FastAPI application whose /docs loads Swagger UI from the server: FastAPI's own page loads it
    from a CDN and is blank offline. fastapi-offline ships the files and mounts them at
    /static-offline-docs (FastAPI's documented self-hosting, kept up to date by its maintainer)."""
    from fastapi_offline import FastAPIOffline  # here: the serving stack is optional (requirements-serve.txt)

    # No /redoc: even served locally, ReDoc's script fetches its footer logo from cdn.redoc.ly
    return FastAPIOffline(redoc_url=None, **kwargs)


def add_page(app) -> None:
    """GET / (the page) and its script and style under /page/; the page calls POST /ner and GET /info."""
    from fastapi.responses import FileResponse  # here: the serving stack is optional
    from fastapi.staticfiles import StaticFiles

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")
