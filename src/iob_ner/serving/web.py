"""What a browser gets from `serve`: the page at `/` (paste a text, see its entities highlighted) and the
API docs at /docs (Swagger UI), every file of them served by the server itself, so that both work on a
machine without internet. Needs the serving stack (requirements-serve.txt)."""

import inspect
import os
from pathlib import Path
from typing import Any, Dict

PAGE_DIR = Path(__file__).with_name("page")  # index.html, page.css, page.js: package data (pyproject.toml)


def offline_docs_app(**kwargs: Any):
    """A FastAPI application whose /docs loads Swagger UI from the server: FastAPI's own page loads it
    from a CDN and is blank offline. fastapi-offline ships the files and mounts them at
    /static-offline-docs (FastAPI's documented self-hosting, kept up to date by its maintainer)."""
    from fastapi import FastAPI
    from fastapi_offline import FastAPIOffline  # here: the serving stack is optional (requirements-serve.txt)

    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:  # FastAPI 0.16x and later
        kwargs.setdefault("telemetry", telemetry_settings())
    # No /redoc: even served locally, ReDoc's script fetches its footer logo from cdn.redoc.ly
    return FastAPIOffline(redoc_url=None, **kwargs)


OTLP_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def telemetry_settings() -> Dict[str, Any]:
    """FastAPI's `telemetry` setting: its request metrics and spans go nowhere where OpenTelemetry's global
    providers are the ones transformers installs, and where the user set up OpenTelemetry, to theirs.

    Why: importing transformers (4.53, transformers/utils/metrics.py) where OpenTelemetry's OTLP exporter is
    installed (wandb of requirements-trackers.txt brings it) makes its OTLP exporters to localhost:4318 the
    process's global providers, and FastAPI records every request with the global providers: `serve` then
    posts to a collector that is not there, every second, and logs each failure. transformers' providers are
    told apart by their resource's service.name, "transformers"; an OTLP endpoint in the environment means
    the user wants the export, and it is left as it is."""
    from opentelemetry import metrics, trace  # FastAPI's own dependency, where it has telemetry

    provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)  # the SDK's TracerProvider.resource
    named = resource.attributes.get("service.name") if resource is not None else None
    if named != "transformers" or any(os.environ.get(name) for name in OTLP_ENDPOINTS):
        return {}
    return {"tracer_provider": trace.NoOpTracerProvider(), "meter_provider": metrics.NoOpMeterProvider()}


def add_page(app) -> None:
    """GET / (the page) and its script and style under /page/; the page calls POST /ner and GET /info."""
    from fastapi.responses import FileResponse  # here: the serving stack is optional
    from fastapi.staticfiles import StaticFiles

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")
