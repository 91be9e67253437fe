"""loadtest: start `serve` on a free loopback port with micro-batching on, then off; print and save requests/s,
words/s, p50/p95/p99 latency, answers by status and the server's memory."""

import json
from pathlib import Path

import typer
from wasabi import msg

from iob_ner.serving.loadtest import MEMORY_MARK, loadtest
from iob_ner.util.cli import gpu_id_option, parse_gpu_id, user_errors
from iob_ner.util.outputs import write_text_atomic

SERVE_SCRIPT = Path(__file__).resolve().parent / "serve.py"  # run as a child process, not imported


def print_result(result: dict) -> None:
    rows = []
    for name, run in result["runs"].items():
        latency = run["latency_ms"]
        rss = run["rss_bytes"]
        mb = {k: f"{v / 2**20:.0f}" if v else "?" for k, v in rss.items()}
        rows.append(
            (
                name,
                run["max_batch_size"],
                f"{run['sent']}/{run['planned']}",
                run["requests_per_s"],
                run["words_per_s"],
                latency.get("p50"),
                latency.get("p95"),
                latency.get("p99"),
                run["server_errors"],
                run["malformed_not_4xx"],
                f"{mb['before']} / {mb.get(f'after {MEMORY_MARK}', '?')} / {mb['after all']}",
            )
        )
    msg.table(
        rows,
        header=(
            "run",
            "batch",
            "sent",
            "req/s",
            "words/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "5xx/none",
            "bad not 4xx",
            "RSS MB before/1k/end",
        ),
        divider=True,
    )
    ratio = result.get("batched_over_unbatched_words_per_s")
    if ratio:
        msg.info(
            f"Micro-batching: {ratio}x the words/s of batching off at {result['concurrency']} concurrent "
            f"clients, on {result['cpu']} ({result['comparison_note']})"
        )
    elif "comparison_note" in result:
        msg.warn(f"No micro-batching ratio: {result['comparison_note']}")


def main(
    model: str = typer.Argument("training/model-best", help="Pipeline folder or installed package name"),
    texts: Path = typer.Option(
        Path("corpus/test.spacy"), exists=True, help=".spacy corpus (sentences) or text file (lines)"
    ),
    output: Path = typer.Option(Path("training/loadtest.json"), help="The figures, as JSON"),
    requests: int = typer.Option(10_000, help="Good requests in the batched run"),
    malformed: int = typer.Option(1_000, help="Malformed requests mixed into the batched run"),
    unbatched_requests: int = typer.Option(1_000, help="Good requests with batching off (0: skip that run)"),
    concurrency: int = typer.Option(16),
    max_batch_size: int = typer.Option(32),
    max_wait_ms: float = typer.Option(5.0),
    gpu_id: str = typer.Option("auto"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    time_cap_s: float = typer.Option(900, help="Each run stops sending after this"),
) -> None:
    try:
        import httpx  # noqa: F401
    except ImportError:
        msg.fail("the load test needs httpx: pip install -r requirements-serve.txt", exits=1)
    with user_errors():
        result = loadtest(
            serve_script=SERVE_SCRIPT,
            model=model,
            texts=texts,
            requests=requests,
            malformed=malformed,
            unbatched_requests=unbatched_requests,
            concurrency=concurrency,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            gpu_id=gpu_id_option(parse_gpu_id(gpu_id, gpu_id_env)),
            time_cap_s=time_cap_s,
        )
    print_result(result)
    write_text_atomic(output, json.dumps(result, indent=2) + "\n")
    bad = sum(run["server_errors"] + run["malformed_not_4xx"] + run["good_not_200"] for run in result["runs"].values())
    (msg.warn if bad else msg.good)(
        f"{sum(r['sent'] for r in result['runs'].values())} requests sent, {bad} "
        f"answered wrongly (5xx, no answer, or a malformed one not refused) -> {output}"
    )


if __name__ == "__main__":
    typer.run(main)
