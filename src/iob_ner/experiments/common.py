"""What crossval and data-curve share: train on some documents, score on others, sum up, plot.

Each run trains with `iob_ner.training.train_pipeline` (the same config, checks and schedule as
`spacy project run train`) and scores with `iob_ner.evaluation.evaluate.evaluate_pipeline`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from ..corpus.convert import DOCBIN_ATTRS, read_docs
from ..evaluation.evaluate import evaluate_pipeline
from ..training.train import train_pipeline
from ..util.outputs import remove, write_text_atomic


def load_docs(paths: Sequence[Path]) -> List[Doc]:
    vocab = Vocab()
    return [doc for path in paths for doc in read_docs(path, vocab)]


def doc_labels(docs: Sequence[Doc]) -> List[Counter]:
    return [Counter(ent.label_ for ent in doc.ents) for doc in docs]


def save_docs(docs: Sequence[Doc], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(attrs=DOCBIN_ATTRS, docs=docs).to_disk(path)
    return path


def train_and_score(
    *, run_dir: Path, config: Path, train: Path, dev: Path, score_on: Path, keep_model: bool = False, **train_options
) -> dict:
    """Train into run_dir, score model-best on `score_on`; returns the metrics with the wall time."""
    start = time.perf_counter()
    train_pipeline(config=config, output=run_dir, train=train, dev=dev, log_file=run_dir / "log.jsonl", **train_options)
    trained = time.perf_counter()
    metrics = evaluate_pipeline(
        model=run_dir / "model-best",
        corpus=score_on,
        output=run_dir / "metrics.json",
        gpu_id=train_options.get("gpu_id"),
    )
    metrics["train_seconds"] = round(trained - start, 1)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    if not keep_model:  # ~200 MB a run: the metrics are what an experiment keeps
        for name in ("model-best", "model-last"):
            remove(run_dir / name)
    return metrics


def mean_sd(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def per_label_f(metrics: dict) -> Dict[str, Optional[float]]:
    """F per label, None where the scored documents hold no entity of that label and none was predicted."""
    return {
        label: (scores["f"] if scores["support"] or scores["p"] else None)
        for label, scores in metrics["per_label"].items()
    }


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def pyplot():
    import matplotlib  # here: matplotlib loads slowly, and only the commands that plot need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
