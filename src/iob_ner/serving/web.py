"""What a browser gets from `serve`: the API docs at /docs (Swagger UI), every file of them served by the
server itself, so that they work on a machine without internet. Needs the serving stack (requirements-serve.txt)."""

from typing import Any


def offline_docs_app(**kwargs: Any):
    """A FastAPI application whose /docs loads Swagger UI from the server: FastAPI's own page loads it
    from a CDN and is blank offline. fastapi-offline ships the files and mounts them at
    /static-offline-docs (FastAPI's documented self-hosting, kept up to date by its maintainer)."""
    from fastapi_offline import FastAPIOffline

    # No /redoc: even served locally, ReDoc's script fetches its footer logo from cdn.redoc.ly
    return FastAPIOffline(redoc_url=None, **kwargs)
