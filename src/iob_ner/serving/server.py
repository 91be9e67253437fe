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

import json  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional  # noqa: E402

import spacy  # noqa: E402
from spacy.tokens import DocBin  # noqa: E402
from wasabi import msg  # noqa: E402

from ..inference.inputs import Text  # noqa: E402
from ..inference.pipeline import PassPlan, check_min_score, entity_reading, load_pipeline, merge, part_results  # noqa: E402
from ..inference.stream import BATCH_CHARS, piece_chars, pipeline_window  # noqa: E402
from ..pipeline.scoring import scoring_ner  # noqa: E402
from ..util.colors import label_colors  # noqa: E402
from ..util.errors import SetupError  # noqa: E402
from ..util.runtime import ThreadDevice, select_device  # noqa: E402
from .app import EXAMPLE_TEXT, create_app  # noqa: E402


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
        plan = PassPlan(max(1, len(texts)), nlp.max_length, BATCH_CHARS, longest, window)
        with nlp.memory_zone():  # frees the strings these texts add to the vocab: memory stays flat
            found = part_results(nlp, texts, plan, reading)
            return [merge(Text("", "", text), pieces).record["entities"] for text, pieces in zip(texts, found)]

    return run


LABELS_FILE = Path("configs/labels.json")  # label -> description, filled by the user; optional
EXAMPLE_CORPUS = Path("corpus/test.spacy")  # where the example text of /info and the page comes from
EXAMPLE_MAX_CHARS = 300


def label_descriptions(path: Optional[Path]) -> Dict[str, str]:
    """{label: description} from a JSON object such as {"MAT": "a material"}: the page's tooltips and /info's
    "descriptions". No file (or no path): none, quietly. A file that is not such an object: SetupError, one
    sentence that names the file."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        found = json.loads(Path(path).read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SetupError(
            f"{path} is not a JSON object of label descriptions ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); fix it or delete it"
        ) from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise SetupError(
            f'{path} must be one JSON object of label -> description, e.g. {{"MAT": "a material"}}; fix it or delete it'
        )
    return {str(label): text for label, text in found.items()}


def example_text(nlp, corpus: Optional[Path], max_chars: int = EXAMPLE_MAX_CHARS) -> str:
    """A short text of `corpus` (a .spacy file, the test set by default) with the most entities, for /info
    and the page's "Example" button; the built-in sentence where there is no corpus or it has no such text."""
    if corpus is None or not Path(corpus).is_file():
        return EXAMPLE_TEXT
    try:
        docs = DocBin().from_disk(corpus).get_docs(nlp.vocab)
        best = None
        for i, doc in zip(range(2000), docs):  # a look at the first documents is enough
            if 20 <= len(doc.text) <= max_chars and doc.ents and (best is None or len(doc.ents) > len(best.ents)):
                best = doc
        return best.text.strip() if best is not None else EXAMPLE_TEXT
    except Exception:  # an example is a convenience: a corpus spaCy cannot read must not stop the server
        return EXAMPLE_TEXT


def pipeline_info(
    nlp, model: str, device: str, descriptions: Optional[Dict[str, str]] = None, example: str = ""
) -> Dict[str, Any]:
    """What /info tells about a loaded pipeline (and the page at / reads: the labels' colours and
    descriptions, and an example text)."""
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
        "descriptions": {label: text for label, text in (descriptions or {}).items() if label in labels},
        "example": example or example_text(nlp, None),
        "scores": scoring is not None,
        "score_samples": int(getattr(scoring.pipe, "samples", 0)) if scoring else 0,
        "device": device,
        "spacy": spacy.__version__,
    }


def check_address(host: str, port: int) -> None:
    """Fail before the pipeline loads (20 s on a CPU) when the address cannot be listened on."""
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


def build_app(
    *,
    model: Path,
    gpu_id,
    limits: "Limits",
    batching: "Batching",
    min_score: float = 0.0,
    labels_file: Optional[Path] = None,
    example_corpus: Optional[Path] = None,
):
    """Load the pipeline (on the GPU when there is one, unless gpu_id says otherwise) and wrap it."""
    check_min_score(min_score)  # before the pipeline loads (20 s on a CPU)
    descriptions = label_descriptions(labels_file)  # a broken file: said before the pipeline loads
    if batching.max_batch_size < 1 or batching.max_wait_ms < 0:
        raise SetupError("max_batch_size must be at least 1 and max_wait_ms at least 0")
    if min(limits.max_body_bytes, limits.max_texts, limits.max_chars, limits.max_queue) < 1 or limits.timeout_s <= 0:
        raise SetupError("every limit must be positive")
    gpu, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    if limits.max_chars > nlp.max_length:
        raise SetupError(f"max_chars {limits.max_chars:,} is over the pipeline's max_length {nlp.max_length:,}")
    info = pipeline_info(nlp, str(model), device, descriptions, example_text(nlp, example_corpus))
    unknown = sorted(set(descriptions) - set(info["labels"]))
    if unknown:  # a typo ("Mat" for "MAT") would otherwise be a tooltip that silently never shows
        msg.warn(
            f"{labels_file} describes label(s) the pipeline does not have, left out: {', '.join(unknown)} "
            f"(its labels: {', '.join(info['labels'])})"
        )
    runner = pipeline_runner(nlp, min_score, ThreadDevice(gpu))  # the device of this thread, in the worker too
    return create_app(runner, info, limits=limits, batching=batching), info


if TYPE_CHECKING:  # the serving stack is optional: imported only when serving
    from .app import Batching, Limits
