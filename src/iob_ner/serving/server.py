"""Serving a trained pipeline over HTTP: `POST /ner`, `GET /health`, `GET /info`, a page at `/`, docs at `/docs`.

    python scripts/serve.py training/model-best --port 8000
    curl -s localhost:8000/ner -H 'content-type: application/json' -d '{"text": "TiO2 films were annealed."}'

Needs the optional serving stack: pip install -r requirements-serve.txt. Concurrent requests are
micro-batched (iob_ner.serving.app says how, and which limits answer with which 4xx).
"""

from __future__ import annotations

import os

# oneDNN caches a compiled kernel for every input shape it sees, and a server sees a new shape with every
# batch size and padded length: measured here, 10,000 requests grew the server from 792 to 969 MB, with
# the cache off it stays flat, within 5 % of the speed. Set before torch loads; an explicit setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional  # noqa: E402

from ..colors import label_colors  # noqa: E402
from ..errors import SetupError  # noqa: E402
from ..inference.inputs import Text  # noqa: E402
from ..inference.pipeline import Passes, check_min_score, entity_reading, load_pipeline, merge, text_pieces  # noqa: E402
from ..inference.stream import BATCH_CHARS, piece_chars, pipeline_window  # noqa: E402
from ..runtime import ThreadDevice, select_device  # noqa: E402
from ..scoring import scoring_ner  # noqa: E402


def pipeline_runner(
    nlp, min_score: float = 0.0, device: Optional[ThreadDevice] = None
) -> Callable[[List[str]], List[List[dict]]]:
    """texts -> entities (character offsets, label, and calibrated score where the pipeline gives one):
    the records `predict` writes, from the same code, in passes of at most BATCH_CHARS characters (a
    batch of long texts stays within predict's memory). The server calls it in its worker thread:
    `device` (default: this thread's, where the pipeline was loaded) is activated there before each batch."""
    reading = entity_reading(nlp, min_score, words=False)
    device = device or ThreadDevice(-1)
    window, longest = pipeline_window(nlp), piece_chars(nlp, BATCH_CHARS)

    def run(texts: List[str]) -> List[List[dict]]:
        device.activate()
        plan = Passes(max(1, len(texts)), nlp.max_length, BATCH_CHARS, longest, window)
        with nlp.memory_zone():  # frees the strings these texts add to the vocab: memory stays flat
            found = text_pieces(nlp, texts, plan, reading)
            return [merge(Text("", "", text), pieces).record["entities"] for text, pieces in zip(texts, found)]

    return run


def pipeline_info(nlp, model: str, device: str) -> Dict[str, Any]:
    """What /info tells about a loaded pipeline (and the page at / reads: the labels' colours)."""
    import spacy

    labels = sorted(
        {
            label
            for name in nlp.pipe_names
            if "doc.ents" in nlp.get_pipe_meta(name).assigns
            for label in getattr(nlp.get_pipe(name), "labels", ())
        }
    )
    scoring = scoring_ner(nlp)
    # score_samples > 0: each text with entities also runs that many times through the transformer
    return {
        "model": model,
        "name": f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', '')}",
        "version": nlp.meta.get("version", ""),
        "pipeline": nlp.pipe_names,
        "labels": labels,
        "colors": label_colors(labels),  # those of training/errors.html
        "scores": scoring is not None,
        "score_samples": int(getattr(scoring.pipe, "samples", 0)) if scoring else 0,
        "device": device,
        "spacy": spacy.__version__,
    }


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
        raise SetupError(
            f"cannot listen on {host}:{port} ({err.strerror or err}): is another server "
            f"running there? Choose another port (--vars.serve_port under spacy project run, --port for the script)"
        ) from None


def build_app(*, model: Path, gpu_id, limits: "Limits", batching: "Batching", min_score: float = 0.0):
    """Load the pipeline (on the GPU when there is one, unless gpu_id says otherwise) and wrap it."""
    from .app import create_app

    check_min_score(min_score)  # before the pipeline loads (20 s on a CPU)
    if batching.max_batch_size < 1 or batching.max_wait_ms < 0:
        raise SetupError("max_batch_size must be at least 1 and max_wait_ms at least 0")
    if min(limits.max_body_bytes, limits.max_texts, limits.max_chars, limits.max_queue) < 1 or limits.timeout_s <= 0:
        raise SetupError("every limit must be positive")
    gpu, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    if limits.max_chars > nlp.max_length:
        raise SetupError(f"max_chars {limits.max_chars:,} is over the pipeline's max_length {nlp.max_length:,}")
    info = pipeline_info(nlp, str(model), device)
    runner = pipeline_runner(nlp, min_score, ThreadDevice(gpu))  # the device of this thread, in the worker too
    return create_app(runner, info, limits=limits, batching=batching), info


if TYPE_CHECKING:  # the serving stack is optional: imported only when serving
    from .app import Batching, Limits
