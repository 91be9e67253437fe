"""Serve a trained pipeline over HTTP: `POST /ner`, `GET /health`, `GET /info`, docs at `/docs`.

    python scripts/serve.py training/model-best --port 8000
    curl -s localhost:8000/ner -H 'content-type: application/json' -d '{"text": "TiO2 films were annealed."}'

Needs the optional serving stack: pip install -r requirements-serve.txt. Concurrent requests are
micro-batched (scripts/iob_ner/serving.py says how, and which limits answer with which 4xx).
"""
from __future__ import annotations

import os

# oneDNN caches a compiled kernel for every input shape it sees, and a server sees a new shape with every
# batch size and padded length: measured here, 10,000 requests grew the server from 792 to 969 MB, with
# the cache off it stays flat, within 5 % of the speed. Set before torch loads; an explicit setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")

from pathlib import Path  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import typer  # noqa: E402
from wasabi import msg  # noqa: E402

from iob_ner.runtime import SetupError, parse_gpu_id, select_device  # noqa: E402
from iob_ner.serving import Batching, Limits, Run  # noqa: E402

LOOPBACK = "127.0.0.1"


def pipeline_runner(nlp, min_score: float = 0.0) -> Run:
    """texts -> entities (character offsets, label, and calibrated score where the pipeline gives one):
    the records `predict` writes, from the same code."""
    from predict import entity_reading

    reading = entity_reading(nlp, min_score)

    def run(texts: List[str]) -> List[List[dict]]:
        with nlp.memory_zone():  # frees the strings these texts add to the vocab: memory stays flat
            docs = list(nlp.pipe(texts, batch_size=max(1, len(texts))))
            return [piece.entities for piece in reading(docs)]

    return run


def pipeline_info(nlp, model: str, device: str) -> Dict[str, Any]:
    """What /info tells about a loaded pipeline."""
    import spacy

    from predict import scoring_ner

    labels = sorted({label for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns
                     for label in getattr(nlp.get_pipe(name), "labels", ())})
    scoring = scoring_ner(nlp)
    # score_samples > 0: each text with entities also runs that many times through the transformer
    return {"model": model, "name": f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', '')}",
            "version": nlp.meta.get("version", ""), "pipeline": nlp.pipe_names, "labels": labels,
            "scores": scoring is not None, "score_samples": int(getattr(scoring.pipe, "samples", 0)) if scoring else 0,
            "device": device, "spacy": spacy.__version__}


def check_address(host: str, port: int) -> None:
    """Fail before the pipeline loads (20 s on a CPU) when the address cannot be listened on."""
    import socket

    if not 0 < port < 65536:
        raise SetupError(f"port must be between 1 and 65535, not {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as err:
        raise SetupError(f"cannot listen on {host}:{port} ({err.strerror or err}): is another server "
                         f"running there? Choose another port with --port") from None


def build_app(*, model: Path, gpu_id, limits: Limits, batching: Batching, min_score: float = 0.0):
    """Load the pipeline (on the GPU when there is one, unless gpu_id says otherwise) and wrap it."""
    from predict import check_min_score, load_pipeline

    from iob_ner.serving import create_app

    check_min_score(min_score)  # before the pipeline loads (20 s on a CPU)
    if batching.max_batch_size < 1 or batching.max_wait_ms < 0:
        raise SetupError("max_batch_size must be at least 1 and max_wait_ms at least 0")
    if min(limits.max_body_bytes, limits.max_texts, limits.max_chars, limits.max_queue) < 1 or limits.timeout_s <= 0:
        raise SetupError("every limit must be positive")
    _, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    if limits.max_chars > nlp.max_length:
        raise SetupError(f"max_chars {limits.max_chars:,} is over the pipeline's max_length {nlp.max_length:,}")
    info = pipeline_info(nlp, str(model), device)
    return create_app(pipeline_runner(nlp, min_score), info, limits=limits, batching=batching), info


def main(
    model: Path = typer.Argument(Path("training/model-best"), help="Pipeline folder or installed package name"),
    host: str = typer.Option(LOOPBACK, help="Address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000),
    gpu_id: str = typer.Option("auto", help="GPU id, 'cpu' or 'auto' (a GPU when there is one)"),
    max_batch_size: int = typer.Option(32, help="Texts run together at most (1: batching off)"),
    max_wait_ms: float = typer.Option(5.0, help="How long the first text of a batch waits for others"),
    max_body_bytes: int = typer.Option(Limits.max_body_bytes),
    max_texts: int = typer.Option(Limits.max_texts, help="Texts per request"),
    max_chars: int = typer.Option(Limits.max_chars, help="Characters per text"),
    timeout_s: float = typer.Option(Limits.timeout_s, help="A request that waits longer gets 503"),
    max_queue: int = typer.Option(Limits.max_queue, help="Texts waiting at most; beyond, 503 at once"),
    min_score: float = typer.Option(0.0, help="Leave out entities whose probability is under this"),
) -> None:
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as err:
        msg.fail(f"serving needs {err.name}: pip install -r requirements-serve.txt", exits=1)
    import uvicorn

    limits = Limits(max_body_bytes=max_body_bytes, max_texts=max_texts, max_chars=max_chars, timeout_s=timeout_s,
                    max_queue=max_queue)
    batching = Batching(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    try:
        check_address(host, port)
        app, info = build_app(model=model, gpu_id=parse_gpu_id(gpu_id), limits=limits, batching=batching,
                              min_score=min_score)
    except SetupError as err:
        msg.fail(str(err), exits=1)
    msg.info(f"{info['name']} {info['version']} ({', '.join(info['labels'])}) on {info['device']}; "
             f"batches of up to {max_batch_size} texts, {max_wait_ms:g} ms wait")
    msg.good(f"Serving on http://{host}:{port} (docs: /docs); Ctrl-C finishes the queued requests and stops")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=limits.timeout_s)
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down gracefully
        pass
    msg.info("Stopped: the queued requests were answered")


if __name__ == "__main__":
    typer.run(main)
