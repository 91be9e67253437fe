"""Active-learning simulation: does annotating the documents `review` picks beat annotating random ones?

Per seed: train on `start` random training documents; then add `add` more, either the ones the model is
least sure of (the `review` rule: lowest token confidence first) or `add` random ones, retrain from
scratch with the same steps, and score both on the test set. The gold annotations of the pool stand in
for the annotator's corrections.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import List, Sequence

import spacy
import typer
from spacy.tokens import Doc
from wasabi import msg

from iob_ner.experiments.common import load_docs, mean_sd, save_docs, train_and_score, write_json
from iob_ner.pipeline.scoring import scoring_ner, unscored_ner
from iob_ner.util.cli import parse_gpu_id
from iob_ner.util.errors import SetupError
from iob_ner.util.runtime import cpu_name


def least_sure_in_pool(model: Path, pool: Sequence[Doc], n: int, batch_size: int = 64) -> List[int]:
    """Indices of the `n` pool documents (already tokenized) with the lowest token confidence (review's rule,
    `iob_ner.inference.review`, which ranks raw texts), ties by order."""
    nlp = spacy.load(model)
    scorer = scoring_ner(nlp)
    if scorer is None:
        raise SetupError(
            f"the active-learning simulation ranks by token probabilities, and {unscored_ner(nlp)} gives none"
        )
    ner = scorer.pipe
    texts = [Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in pool]
    scores: List[float] = []
    for start in range(0, len(texts), batch_size):
        docs = list(nlp.pipe(texts[start : start + batch_size], batch_size=batch_size))
        scores += [float(c.min()) if len(c) else 1.0 for c in ner.token_confidence(docs)]
    return sorted(range(len(pool)), key=lambda i: (scores[i], i))[:n]


def one_seed(
    seed: int, docs: Sequence[Doc], test: Path, dev: Path, work: Path, start: int, add: int, **train_options
) -> dict:
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    base, pool = [docs[i] for i in order[:start]], [docs[i] for i in order[start:]]
    run = work / f"seed-{seed}"
    base_path = save_docs(base, run / "base.spacy")
    msg.divider(f"seed {seed}: {start} documents")
    first = train_and_score(
        run_dir=run / "base", train=base_path, dev=dev, score_on=test, seed=seed, keep_model=True, **train_options
    )
    picked = {
        "review": least_sure_in_pool(run / "base" / "model-best", pool, add),
        "random": random.Random(seed + 1).sample(range(len(pool)), add),
    }
    result = {"seed": seed, "base_test_f": first["typed"]["f"]}
    for arm, indices in picked.items():
        msg.divider(f"seed {seed}: {start} + {add} documents chosen by {arm}")
        path = save_docs(base + [pool[i] for i in indices], run / f"{arm}.spacy")
        metrics = train_and_score(run_dir=run / arm, train=path, dev=dev, score_on=test, seed=seed, **train_options)
        result[f"{arm}_test_f"] = metrics["typed"]["f"]
        result[f"{arm}_entities_added"] = sum(len(pool[i].ents) for i in indices)
    return result


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    train: Path = typer.Option(..., exists=True, help="Training corpus (.spacy): the start set and the pool"),
    dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    output: Path = typer.Option(Path("training/active-learning.json")),
    seeds: str = typer.Option("0,1,2"),
    start: int = typer.Option(300, help="Documents to start from"),
    add: int = typer.Option(300, help="Documents added by review or at random"),
    max_steps: int = typer.Option(200),
    eval_frequency: int = typer.Option(100),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
) -> None:
    docs = load_docs([train])
    if start + add > len(docs):
        msg.fail(f"{train} holds {len(docs)} documents: fewer than start + add ({start + add})", exits=1)
    began = time.perf_counter()
    options = {"config": config, "max_steps": max_steps, "eval_frequency": eval_frequency, "transformer": transformer}
    try:
        options["gpu_id"] = parse_gpu_id(gpu_id)
        with tempfile.TemporaryDirectory() as tmp:
            results = [one_seed(int(s), docs, test, dev, Path(tmp), start, add, **options) for s in seeds.split(",")]
    except SetupError as err:
        msg.fail(str(err), exits=1)
    summary = {arm: mean_sd([r[f"{arm}_test_f"] for r in results]) for arm in ("base", "review", "random")}
    write_json(
        output,
        {
            "cpu": cpu_name(),
            "start": start,
            "add": add,
            "max_steps": max_steps,
            "results": results,
            "summary": summary,
            "seconds": round(time.perf_counter() - began, 1),
        },
    )
    msg.table(
        [(arm, f"{s['mean']:.3f} ± {s['sd']:.3f}") for arm, s in summary.items()],
        header=("documents", "test F (mean ± sd)"),
        divider=True,
    )
    msg.good(f"{len(results)} seeds in {time.perf_counter() - began:.0f} s -> {output}")


if __name__ == "__main__":
    typer.run(main)
