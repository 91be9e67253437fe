"""How much of the transformer's arithmetic is spent on padding, and how close the rest runs to the machine.

For training and for inference, side by side in one run, each lever on or off:

- the share of wordpiece positions that were padding (every row of a batch is padded to its longest; the
  transformer's `padding` counters, src/iob_ner/pipeline/layers/transformer.py);
- the FLOPs, counted from the model's shapes: 2 x (the encoder's linear weights) per position, plus
  attention's 4 x layers x hidden per position and per position of its row; training is 3x the forward
  (the backward costs two forwards). "executed" counts every position, "useful" the real ones;
- achieved GFLOP/s, and the machine's limit: a large float32 matmul on the same threads. The ratio
  "achieved / limit" says how much of the machine the loop uses.

Training levers: `main` (spacy.batch_by_words.v1, 500 words, documents in corpus order: the config before
this benchmark) and `padded` (the config's spacy.batch_by_padded.v1 with iob_ner.wordpiece_count.v1), each
trained for the same number of words from the same seed, then scored on the test set. Inference levers:
`whole` (each batch run whole: spacy-transformers' path) and `grouped` (rows in groups of similar length,
the default), through predict's local engine on the test texts and on unlabelled sentences, with the
predictions compared record by record.

    python benchmarks/arithmetic/benchmark_arithmetic.py --corpus path/to/ncbi-corpus \\
        --unlabelled path/to/biomed-unlabeled/sentences.txt --train-words 100000 --seeds 0,1,2
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import typer
from wasabi import msg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE = ROOT / "configs" / "base_config.cfg"

from iob_ner.corpus.convert import read_docs  # noqa: E402
from iob_ner.experiments.timed import build_config, score, train_for  # noqa: E402
from iob_ner.inference.pipeline import entity_reading, source_predictions  # noqa: E402
from iob_ner.inference.writers import write_outputs  # noqa: E402
from iob_ner.pipeline.layers.transformer import Padding, TransformerShim, transformer_models, transformer_shims  # noqa: E402
from iob_ner.util.outputs import write_text_atomic  # noqa: E402
from iob_ner.util.runtime import cpu_name, resolve_transformer  # noqa: E402


def matmul_limit(size: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of a float32 (size x size) matmul on torch's threads: the best of three timings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best / 1e9


def model_shape(nlp) -> Dict[str, int]:
    """The transformer's linear weights per position (the pooler, once per row, left out), layers, hidden."""
    hf = transformer_models(nlp)[0].transformer
    linear = sum(
        module.weight.numel()
        for name, module in hf.named_modules()
        if isinstance(module, torch.nn.Linear) and "pooler" not in name
    )
    return {"linear_weights": linear, "layers": hf.config.num_hidden_layers, "hidden": hf.config.hidden_size}


def arithmetic(padding: Padding, shape: Dict[str, int], seconds: float, limit: float, train: bool) -> Dict[str, Any]:
    factor = 3 if train else 1
    attention = 4 * shape["layers"] * shape["hidden"]
    executed = factor * (2 * shape["linear_weights"] * padding.positions + attention * padding.positions_squared)
    useful = factor * (2 * shape["linear_weights"] * padding.real + attention * padding.real_squared)
    achieved = executed / seconds / 1e9
    return {
        "padding_share": round(padding.share, 4),
        "rows": padding.rows,
        "positions": padding.positions,
        "real_wordpieces": padding.real,
        "gflop_executed": round(executed / 1e9, 1),
        "gflop_useful": round(useful / 1e9, 1),
        "achieved_gflops": round(achieved, 1),
        "useful_gflops": round(useful / seconds / 1e9, 1),
        "achieved_over_limit": round(achieved / limit, 3),
        "useful_over_limit": round(useful / seconds / 1e9 / limit, 3),
    }


def train_lever(lever: str, seed: int, *, corpus: Path, model: str, words: int, limit: float):
    config = build_config("token", corpus, model, None, None, "words" if lever == "main" else "padded", base=BASE)
    config["system"]["seed"] = seed
    TransformerShim.group_rows = True  # the dev/test scoring is the same for both
    run = train_for(config, gpu=-1, budget=0.0, time_schedule=False, max_words=words)
    nlp = run.pop("nlp")
    padding = transformer_shims(nlp)[0].padding["train"]
    result = {
        "lever": lever,
        "seed": seed,
        "batcher": config["training"]["batcher"]["@batchers"],
        **run,
        "words_per_step": round(run["train_words"] / run["steps"], 1),
        **arithmetic(padding, model_shape(nlp), run["train_s"], limit, train=True),
        "test": {k: v for k, v in score(nlp, corpus / "test.spacy").items() if k in ("p", "r", "f")},
    }
    return result, nlp


def predict_lever(nlp, source: Path, output: Path, grouped: bool, limit: float) -> Dict[str, Any]:
    """predict's local engine (what predict_local runs after loading the pipeline), timed."""
    TransformerShim.group_rows = grouped
    counter = transformer_shims(nlp)[0].padding["predict"]
    before = Padding(*counter.astuple())
    start = time.perf_counter()
    found, problems = source_predictions(
        nlp, source, [output], entity_reading(nlp), batch_size=64, max_length=None, lines=True
    )
    counts = write_outputs(found, output, None, check=lambda c: None)
    seconds = time.perf_counter() - start
    TransformerShim.group_rows = True
    words = sum(len(line.split()) for line in source.read_text(encoding="utf8").splitlines())
    return {
        "lever": "grouped" if grouped else "whole",
        "documents": counts["documents"],
        "seconds": round(seconds, 2),
        "words_per_s": round(words / seconds, 1),
        **arithmetic(counter.since(before), model_shape(nlp), seconds, limit, train=False),
    }


def same_predictions(a: Path, b: Path) -> Dict[str, int]:
    """Records whose entities (offsets, labels) differ, and entities whose score differs."""
    left = [json.loads(line) for line in a.read_text(encoding="utf8").splitlines()]
    right = [json.loads(line) for line in b.read_text(encoding="utf8").splitlines()]
    spans = sum(
        [(e["start"], e["end"], e["label"]) for e in x["entities"]]
        != [(e["start"], e["end"], e["label"]) for e in y["entities"]]
        for x, y in zip(left, right)
    )
    scores = sum(
        e.get("score") != f.get("score") for x, y in zip(left, right) for e, f in zip(x["entities"], y["entities"])
    )
    return {
        "records": len(left),
        "records_with_other_entities": spans + abs(len(left) - len(right)),
        "entities_with_other_score": scores,
    }


def main(
    corpus: Path = typer.Option(..., help="A folder with train.spacy, dev.spacy and test.spacy"),
    unlabelled: Optional[Path] = typer.Option(None, help="Unlabelled sentences, one a line (inference)"),
    unlabelled_docs: int = typer.Option(10000, help="Unlabelled sentences read"),
    transformer: str = typer.Option("embedded"),
    train_words: int = typer.Option(100000, help="Training words of each run (0: no training runs)"),
    seeds: str = typer.Option("0", help="Seeds, comma-separated: each trains main and padded"),
    infer_rounds: int = typer.Option(2, help="Alternate rounds of the inference levers"),
    output: Path = typer.Option(HERE.parent / "runs" / "arithmetic.json"),
) -> None:
    model = str(resolve_transformer(transformer))
    limit = matmul_limit()
    msg.info(f"Limit: {limit:.1f} GFLOP/s (float32 matmul, {torch.get_num_threads()} threads, {cpu_name()})")
    results: Dict[str, Any] = {"limit_gflops": round(limit, 1), "threads": torch.get_num_threads()}
    training: List[Dict[str, Any]] = []
    scoring_nlp = None
    for i, seed in enumerate(int(s) for s in seeds.split(",") if s.strip()):
        if not train_words:
            break
        for lever in ("main", "padded") if i % 2 == 0 else ("padded", "main"):
            entry, nlp = train_lever(lever, seed, corpus=corpus, model=model, words=train_words, limit=limit)
            training.append(entry)
            msg.good(
                f"train {lever} seed {seed}: {entry['train_words_per_s']:.0f} words/s, padding "
                f"{entry['padding_share']:.1%}, {entry['achieved_gflops']} GFLOP/s "
                f"({entry['achieved_over_limit']:.0%} of the limit), test F {entry['test']['f']:.4f}"
            )
            if scoring_nlp is None and lever == "main":
                scoring_nlp = nlp
    results["training"] = training
    results["training_summary"] = summarize(training)
    results["inference"] = infer(scoring_nlp, corpus, unlabelled, unlabelled_docs, infer_rounds, limit, model)
    results.update(
        device=f"cpu ({cpu_name()})",
        python=platform.python_version(),
        torch=torch.__version__,
        date=str(date.today()),
        corpus=str(corpus),
        transformer=transformer,
        train_words=train_words,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(results, indent=2) + "\n")
    print(
        json.dumps(
            {"training_summary": results["training_summary"], "inference_summary": results["inference"]["summary"]},
            indent=2,
        )
    )


def summarize(training: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for lever in ("main", "padded"):
        runs = [r for r in training if r["lever"] == lever]
        if runs:
            out[lever] = {
                "words_per_s": [r["train_words_per_s"] for r in runs],
                "test_f": [r["test"]["f"] for r in runs],
                "mean_test_f": round(statistics.mean(r["test"]["f"] for r in runs), 4),
                "padding_share": [r["padding_share"] for r in runs],
                "achieved_over_limit": [r["achieved_over_limit"] for r in runs],
            }
    if "main" in out and "padded" in out:
        ratios = [p / m for p, m in zip(out["padded"]["words_per_s"], out["main"]["words_per_s"])]
        out["speedup"] = [round(r, 2) for r in ratios]
        out["test_f_change"] = round(out["padded"]["mean_test_f"] - out["main"]["mean_test_f"], 4)
    return out


def infer(nlp, corpus: Path, unlabelled: Optional[Path], docs: int, rounds: int, limit: float, model: str):
    if nlp is None:  # no training runs: an untrained pipeline (predictions are compared, not scored)
        from spacy.training.initialize import init_nlp

        nlp = init_nlp(build_config("token", corpus, model, None, None, base=BASE), use_gpu=-1)
    work = Path(tempfile.mkdtemp(prefix="arithmetic-"))
    sources = {"test": work / "test.txt"}
    sources["test"].write_text(
        "".join(doc.text.replace("\n", " ") + "\n" for doc in read_docs(corpus / "test.spacy", nlp.vocab)),
        encoding="utf8",
    )
    if unlabelled is not None:
        with unlabelled.open(encoding="utf8") as handle:
            lines = [line for _, line in zip(range(docs), handle)]
        sources["unlabelled"] = work / "unlabelled.txt"
        sources["unlabelled"].write_text("".join(lines), encoding="utf8")
    runs: List[Dict[str, Any]] = []
    for name, source in sources.items():
        for r in range(rounds):
            for grouped in (False, True) if r % 2 == 0 else (True, False):
                out = work / f"{name}-{'grouped' if grouped else 'whole'}.jsonl"
                entry = {"texts": name, "round": r, **predict_lever(nlp, source, out, grouped, limit)}
                runs.append(entry)
                msg.good(
                    f"predict {name} {entry['lever']}: {entry['words_per_s']:.0f} words/s, padding "
                    f"{entry['padding_share']:.1%}, {entry['achieved_gflops']} GFLOP/s ({entry['achieved_over_limit']:.0%})"
                )
    summary = {}
    for name in sources:
        whole = [r["words_per_s"] for r in runs if r["texts"] == name and r["lever"] == "whole"]
        grouped = [r["words_per_s"] for r in runs if r["texts"] == name and r["lever"] == "grouped"]
        summary[name] = {
            "whole_words_per_s": whole,
            "grouped_words_per_s": grouped,
            "speedup": round(statistics.median(grouped) / statistics.median(whole), 2),
            "padding_share": {r["lever"]: r["padding_share"] for r in runs if r["texts"] == name},
            "predictions": same_predictions(work / f"{name}-whole.jsonl", work / f"{name}-grouped.jsonl"),
        }
    return {"runs": runs, "summary": summary}


if __name__ == "__main__":
    typer.run(main)
