"""The whole project on one GPU, in one call: the run to make as soon as a GPU is lent.

Trains the default recipe briefly, evaluates, predicts, reviews, serves (one request, then micro-batching on
against off), runs the Ray engine on a thousand documents (its output must equal the local engine's, byte
for byte) and the training benchmark against a Hugging Face Trainer script of your own, all on the GPU that
--gpu-id names. Each step is timed and recorded in one JSON file; a step that fails is recorded with its
error and the next one runs, so one fault does not cost the rest of the device time.

Tested on the CPU with tiny settings (minutes):

    python benchmarks/gpu/gpu_check.py --gpu-id cpu --train assets/train.tsv --dev assets/dev.tsv \
        --test assets/test.tsv --max-steps 4 --budget 5 --recipes token --ray-docs 40 --serve-requests 16 \
        --output benchmarks/runs/gpu-check-cpu.json

On a GPU (NCBI-disease, the MTL-Bioinformatics-2016 copy; about 8 minutes on one H100, estimated):

    python benchmarks/gpu/gpu_check.py --gpu-id 0 --train path/to/ncbi-disease/train.tsv \
        --dev path/to/ncbi-disease/dev.tsv --test path/to/ncbi-disease/test.tsv --max-steps 600 --budget 40 \
        --recipes "token:batch=6400/precision=bf16,token:batcher=words/batch=4000/precision=bf16,token:batch=6400/precision=fp32,quickstart" \
        --hf-peer path/to/hf_peer.py --hf-epochs 7 --output "$OUT/gpu-check.json"

It imports the package from src/ itself, so it also runs where the project is not pip-installed (a GPU
machine without a package index): `iob_ner.pipeline.token_ner` is imported before any pipeline loads.
"""

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import typer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # the package from this tree, installed or not

import iob_ner.pipeline.token_ner  # noqa: E402,F401 (registers the token_ner factory without the entry point)
from iob_ner.corpus.convert import convert_iob, read_docs  # noqa: E402
from iob_ner.util.cli import gpu_id_option, parse_gpu_id  # noqa: E402
from iob_ner.util.runtime import cpu_name, select_device  # noqa: E402

Record = Dict[str, Any]


def timed(name: str, record: Record, work: Callable[[], Any]) -> Any:
    """Run one step; record its seconds and result, or its error (and go on)."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    try:
        result = work()
        record[name] = {"seconds": round(time.perf_counter() - start, 1), **(result or {})}
        print(f"   {json.dumps(record[name])[:600]}", flush=True)
        return result
    except BaseException as err:  # noqa: BLE001 (KeyboardInterrupt too: the record is written all the same)
        record[name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "error": f"{type(err).__name__}: {err}",
            "traceback_tail": traceback.format_exc()[-1500:],
        }
        print(f"   FAILED: {record[name]['error'][:400]}", flush=True)
        if isinstance(err, KeyboardInterrupt):
            raise
        return None


def gpu_memory_mb(gpu: int) -> Optional[int]:
    if gpu < 0:
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(gpu) / 2**20)


def train_step(work: Path, gpu: int, max_steps: int) -> Record:
    from iob_ner.training.train import train_pipeline

    output = work / "training"
    train_pipeline(
        config=ROOT / "configs" / "config.cfg",
        output=output,
        train=work / "train.spacy",
        dev=work / "dev.spacy",
        transformer="embedded",
        gpu_id=gpu,
        max_steps=max_steps,
        eval_frequency=max(1, max_steps // 2),
        seed=0,
        log_file=output / "log.jsonl",
    )
    log = [json.loads(line) for line in (output / "log.jsonl").read_text(encoding="utf8").splitlines()]
    return {"steps": log[-1]["step"], "dev_f": max(entry["score"] for entry in log), "peak_gpu_mb": gpu_memory_mb(gpu)}


def evaluate_step(work: Path, gpu: int) -> Record:
    from iob_ner.evaluation.evaluate import evaluate_pipeline

    metrics = evaluate_pipeline(
        model=work / "training" / "model-best",
        corpus=work / "test.spacy",
        output=work / "metrics-test.json",
        gpu_id=gpu,
    )
    return {
        "test_f": metrics["typed"]["f"],
        "words_per_s": metrics["words_per_second"],
        "device": metrics["device"],
        "ece_after": (metrics.get("confidence") or {}).get("ece_after"),
        "peak_gpu_mb": gpu_memory_mb(gpu),
    }


def write_texts(work: Path, n: Optional[int] = None) -> Path:
    """The test documents' texts, a line each (the first `n`, cycled to reach n when there are fewer)."""
    import spacy

    texts = [doc.text.replace("\n", " ") for doc in read_docs(work / "test.spacy", spacy.blank("en").vocab)]
    if n is not None:
        texts = [texts[i % len(texts)] for i in range(n)]
    path = work / (f"texts-{n}.txt" if n else "texts.txt")
    path.write_text("".join(t + "\n" for t in texts), encoding="utf8")
    return path


def predict_step(work: Path, gpu: int) -> Record:
    """predict on the test texts with each batch run whole (spacy-transformers' way) and in groups of
    similar length (the default), alternately: words/s and the share of padding of each."""
    from iob_ner.inference import predict
    from iob_ner.pipeline.layers.transformer import TransformerShim

    source = write_texts(work)
    words = sum(len(line.split()) for line in source.read_text(encoding="utf8").splitlines())
    record: Record = {}
    for grouped in (False, True, False, True):
        TransformerShim.group_rows = grouped
        start = time.perf_counter()
        try:
            result = predict(
                model=work / "training" / "model-best",
                source=source,
                output=work / "predictions.jsonl",
                gpu_id=gpu,
                lines=True,
                batch_size=256,
            )
        finally:
            TransformerShim.group_rows = True
        lever = record.setdefault("grouped" if grouped else "whole", {"words_per_s": []})
        lever["words_per_s"].append(round(words / (time.perf_counter() - start), 1))
        lever["padding_share"] = result["padding_share"]
        record.update(documents=result["documents"], device=result["device"])
    return record


def review_step(work: Path, gpu: int) -> Record:
    from iob_ner.inference.review import review

    result = review(
        model=work / "training" / "model-best",
        source=write_texts(work),
        output_jsonl=work / "review.jsonl",
        output_iob=work / "review.tsv",
        n=20,
        gpu_id=gpu,
        lines=True,
        progress=False,
    )
    return {"written": result["written"], "read": result["read"], "device": result["device"]}


def serve_step(work: Path, gpu: int, requests: int) -> Record:
    """One request, then `requests` one-sentence requests from 16 clients with batching on (32) and off (1)."""
    import httpx
    import uvicorn

    from iob_ner.serving.app import Batching, Limits
    from iob_ner.serving.loadtest import free_port
    from iob_ner.serving.server import build_app

    sentences = write_texts(work).read_text(encoding="utf8").splitlines()
    record: Record = {}
    for batch_size in (32, 1):
        app, info = build_app(
            model=work / "training" / "model-best",
            gpu_id=gpu,
            limits=Limits(),
            batching=Batching(max_batch_size=batch_size),
        )
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/ner"
        try:
            if batch_size == 32:
                first = httpx.post(url, json={"text": sentences[0]}, timeout=120)
                record["first_request"] = {
                    "status": first.status_code,
                    "entities": len(first.json().get("entities", [])),
                }
                record["device"] = info["device"]
            record[f"batch_{batch_size}"] = asyncio.run(_drive(url, sentences, requests))
        finally:
            server.should_exit = True
            thread.join(timeout=60)
    if record["batch_1"]["words_per_s"]:
        record["batching_gain"] = round(record["batch_32"]["words_per_s"] / record["batch_1"]["words_per_s"], 2)
    return record


async def _drive(url: str, sentences: List[str], requests: int, clients: int = 16) -> Record:
    import httpx

    todo = [sentences[i % len(sentences)] for i in range(requests)]
    statuses: Dict[int, int] = {}
    words = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal words
        while todo:
            text = todo.pop()
            answer = await http.post(url, json={"text": text}, timeout=120)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            words += len(text.split())

    start = time.perf_counter()
    async with httpx.AsyncClient() as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - start
    return {"requests": requests, "statuses": statuses, "words_per_s": round(words / seconds, 1)}


def ray_step(work: Path, gpu: int, documents: int) -> Record:
    """The Ray engine on `documents` documents, one actor; its output against the local engine's."""
    from iob_ner.inference import predict

    source = write_texts(work, documents)
    model = work / "training" / "model-best"
    local = predict(model=model, source=source, output=work / "local.jsonl", gpu_id=gpu, lines=True)
    start = time.perf_counter()
    remote = predict(
        model=model,
        source=source,
        output=work / "ray.jsonl",
        gpu_id=gpu,
        lines=True,
        engine="ray",
        actors=1,
        shard_size=256,
    )
    same = (work / "local.jsonl").read_bytes() == (work / "ray.jsonl").read_bytes()
    return {
        "documents": remote["documents"],
        "seconds_ray": round(time.perf_counter() - start, 1),
        "device": remote["device"],
        "byte_identical_to_local": same,
        "local_documents": local["documents"],
    }


def benchmark_step(
    paths: Dict[str, Path],
    gpu: int,
    budget: float,
    recipes: str,
    hf_peer: Optional[Path],
    hf_epochs: Optional[float],
    work: Path,
) -> Record:
    """The training benchmark (benchmarks/training) as its own process: its GPU memory is its own."""
    import subprocess

    output = work / "benchmark.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "training" / "benchmark_training.py"),
        "--train",
        str(paths["train"]),
        "--dev",
        str(paths["dev"]),
        "--test",
        str(paths["test"]),
        "--gpu-id",
        gpu_id_option(gpu),
        "--recipes",
        recipes,
        "--budget",
        str(budget),
        "--output",
        str(output),
    ]
    if hf_peer is not None:
        command += ["--hf-peer", str(hf_peer)] + (["--hf-epochs", str(hf_epochs)] if hf_epochs else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # where the package is not pip-installed
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    print(done.stdout[-3000:], flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"the training benchmark stopped with exit status {done.returncode}: {done.stderr[-800:]}")
    return json.loads(output.read_text(encoding="utf8"))


def main(
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    gpu_id: str = typer.Option("0", help="GPU id, or 'cpu' to try the script on the CPU"),
    max_steps: int = typer.Option(600, help="Training steps of the default recipe"),
    budget: float = typer.Option(40.0, help="Seconds per recipe in the training benchmark (and for --hf-peer)"),
    recipes: str = typer.Option(
        "token:batch=6400,token:batcher=words/batch=4000,quickstart", help="The training benchmark's --recipes"
    ),
    hf_peer: Optional[Path] = typer.Option(None, help="A Hugging Face Trainer script (see benchmarks/README.md)"),
    hf_epochs: Optional[float] = typer.Option(None),
    ray_docs: int = typer.Option(1000, help="Documents through the Ray engine"),
    serve_requests: int = typer.Option(512, help="Requests for each of batching on and off"),
    work: Path = typer.Option(Path("benchmarks/runs/gpu-check"), help="Scratch folder (models, outputs)"),
    output: Path = typer.Option(Path("benchmarks/runs/gpu-check.json")),
) -> None:
    gpu = parse_gpu_id(gpu_id)
    gpu, device = select_device(gpu)
    record: Record = {"device": device, "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:]}
    work.mkdir(parents=True, exist_ok=True)
    paths = {"train": train, "dev": dev, "test": test}
    try:
        timed(
            "convert",
            record,
            lambda: {s: convert_iob(p, work / s, write_json=False).documents for s, p in paths.items()},
        )
        steps = [
            ("train", lambda: train_step(work, gpu, max_steps)),
            ("evaluate", lambda: evaluate_step(work, gpu)),
            ("predict", lambda: predict_step(work, gpu)),
            ("review", lambda: review_step(work, gpu)),
            ("serve", lambda: serve_step(work, gpu, serve_requests)),
            ("ray", lambda: ray_step(work, gpu, ray_docs)),
            ("benchmark", lambda: benchmark_step(paths, gpu, budget, recipes, hf_peer, hf_epochs, work)),
        ]
        for name, step in steps:
            timed(name, record, step)
    finally:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf8")
        failed = [name for name, entry in record.items() if isinstance(entry, dict) and "error" in entry]
        print(f"{device}: {len(failed)} step(s) failed {failed} -> {output}", flush=True)


if __name__ == "__main__":
    typer.run(main)
