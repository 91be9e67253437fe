"""A pipeline served by the real application under uvicorn on a free loopback port, in a thread. Needs
requirements-serve.txt: a test module skips without it (pytest.importorskip) before importing this."""

import json
import threading
import time
from contextlib import contextmanager

from iob_ner.serving.app import Batching, Limits, create_app
from iob_ner.serving.loadtest import free_port
from iob_ner.serving.server import pipeline_info, pipeline_runner

SMALL = Limits(max_body_bytes=2_000, max_texts=3, max_chars=200, timeout_s=10)


@contextmanager
def serving(nlp, limits: Limits = SMALL, batching: Batching = Batching(), device=None, descriptions=None):
    """The application of `nlp` under a real uvicorn server on a free 127.0.0.1 port, in a thread."""
    import uvicorn

    info = pipeline_info(nlp, "test", "CPU", descriptions)
    app = create_app(pipeline_runner(nlp, device=device), info, limits=limits, batching=batching)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post(url: str, body, **kwargs):
    """POST `body` (bytes as they are, else JSON) to the service's /ner."""
    import httpx  # the serving extras, as the application's: a module imports this after importorskip

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/ner", content=content, headers={"content-type": "application/json"}, timeout=30, **kwargs)
