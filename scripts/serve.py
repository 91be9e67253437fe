"""serve: a trained pipeline over HTTP (`POST /ner`, `GET /health`, `GET /info`, a page at `/`, docs at `/docs`),
micro-batched.

    python scripts/serve.py training/model-best --port 8000
    curl -s localhost:8000/ner -H 'content-type: application/json' -d '{"text": "TiO2 films were annealed."}'

Needs the optional serving stack: pip install -r requirements-serve.txt.
"""

import sys
from pathlib import Path

import typer
from wasabi import msg

from iob_ner.serving import LOOPBACK, serving_stack_missing
from iob_ner.serving.session import ParentWatch, own_session_wanted, run_in_own_session
from iob_ner.util.cli import parse_gpu_id, user_errors

LABELS_FILE = Path("configs/labels.json")  # iob_ner.serving.server's defaults (it imports torch: not here)
EXAMPLE_CORPUS = Path("corpus/test.spacy")


def main(
    model: Path = typer.Argument(Path("training/model-best"), help="Pipeline folder or installed package name"),
    host: str = typer.Option(LOOPBACK, help="Address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000),
    gpu_id: str = typer.Option("auto", help="GPU id, 'cpu' or 'auto' (a GPU when there is one)"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    max_batch_size: int = typer.Option(32, help="Texts run together at most (1: batching off)"),
    max_wait_ms: float = typer.Option(5.0, help="How long the first text of a batch waits for others"),
    max_body_bytes: int = typer.Option(1_000_000),
    max_texts: int = typer.Option(64, help="Texts per request"),
    max_chars: int = typer.Option(100_000, help="Characters per text"),
    timeout_s: float = typer.Option(30.0, help="A request that waits longer gets 503"),
    max_queue: int = typer.Option(4096, help="Texts waiting at most; beyond, 503 at once"),
    min_score: float = typer.Option(0.0, help="Leave out entities whose probability is under this"),
    labels: Path = typer.Option(
        LABELS_FILE, help="JSON object label -> description, shown as tooltips on the page and in /info (optional)"
    ),
    example_from: Path = typer.Option(
        EXAMPLE_CORPUS, help=".spacy corpus whose short text is the page's example (else a built-in sentence)"
    ),
) -> None:
    parent = ParentWatch()  # started by run_in_own_session: stop gracefully once that process is gone
    missing = serving_stack_missing()
    if missing:
        msg.fail(missing, exits=1)
    import uvicorn

    from iob_ner.serving.app import Batching, Limits
    from iob_ner.serving.server import build_app, check_address

    limits = Limits(
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_chars=max_chars,
        timeout_s=timeout_s,
        max_queue=max_queue,
    )
    batching = Batching(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    with user_errors():
        check_address(host, port)
        app, info = build_app(
            model=model,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            limits=limits,
            batching=batching,
            min_score=min_score,
            labels_file=labels,
            example_corpus=example_from,
        )
    msg.info(
        f"{info['name']} {info['version']} ({', '.join(info['labels'])}) on {info['device']}; "
        f"batches of up to {max_batch_size} texts, {max_wait_ms:g} ms wait"
    )
    msg.good(
        f"Serving on http://{host}:{port} (page: /, API docs: /docs); Ctrl-C finishes the queued requests and stops"
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=limits.timeout_s)
    server = uvicorn.Server(config)
    try:
        parent.serve(server)
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down gracefully
        pass
    if not server.started:  # uvicorn said why (e.g. the port was taken meanwhile)
        sys.exit(1)
    msg.info("Stopped: the queued requests were answered")


if __name__ == "__main__":
    if own_session_wanted():  # the server in a process of its own, which `spacy project run` cannot kill
        missing = serving_stack_missing()
        if missing:
            msg.fail(missing, exits=1)
        sys.exit(run_in_own_session([sys.executable, *sys.argv]))
    typer.run(main)
