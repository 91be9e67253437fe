"""k-fold cross-validation: how good the model is, and how much that figure moves with the split.

The train and dev documents are pooled (the test documents stay untouched) and dealt into k folds,
whole documents, seeded and stratified by label. Each fold is scored by a model trained on the other
folds; that model's best checkpoint is chosen on an inner dev set carved from its own training
documents, so no fold is ever scored by a model selected on it.

With `keep_models`, the k models stay in runs/fold-i/model-best and runs/models.json records what they were
made from (the corpus, the config, the folds and the training settings): `audit` reuses them when all of
that matches (`kept_models`), since each one has never seen its fold's documents.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import List, Optional, Tuple

from wasabi import msg

from ..corpus.split_checks import document_key
from ..corpus.splits import stratified_parts
from ..evaluation.report.plots import pyplot
from ..training.train import check_steps
from ..util.errors import SplitError
from ..util.outputs import atomic_output, content_sha256, remove, write_text_atomic
from ..util.runtime import cpu_name
from .common import doc_labels, load_docs, mean_sd, per_label_f, save_docs, train_and_score, write_json

INNER_DEV_SHARE = 0.1
MODELS_RECORD = "models.json"  # under output/runs: what the kept fold models were made from
# The training settings that, with the corpus, the config and the folds, make the kept models the same ones
MODEL_SETTINGS = ("max_steps", "eval_frequency", "warmup_ratio", "transformer")


def make_folds(labels, folds: int, seed: int, keys=None) -> List[int]:
    """The fold of each document; identical documents (equal `keys`) share a fold, so none is scored by a
    model trained on its copy."""
    if folds < 2:
        raise SplitError(f"folds must be 2 or more, not {folds}")
    if folds > len(labels):
        raise SplitError(
            f"{folds} folds need at least {folds} documents, and train + dev hold {len(labels)}: lower --vars.folds"
        )
    return stratified_parts(labels, [1.0] * folds, seed, keys=keys)


def fold_plan(train: Path, dev: Path, folds: int, seed: int) -> Tuple[list, list, List[int]]:
    """The pooled train + dev documents (in that order), their labels and the fold of each."""
    docs = load_docs([train, dev])
    labels = doc_labels(docs)
    return docs, labels, make_folds(labels, folds, seed, keys=[document_key(t.text for t in doc) for doc in docs])


def models_record(*, config: Path, train: Path, dev: Path, assigned: List[int], seed: int, **train_options) -> dict:
    """What the fold models are made from; two equal records mean interchangeable models."""
    return {
        "corpus": {"train": content_sha256(train), "dev": content_sha256(dev)},
        "config": content_sha256(config),
        "folds": max(assigned) + 1,
        "seed": seed,
        "assignment": hashlib.sha256(json.dumps(assigned).encode()).hexdigest(),
        "settings": {key: train_options.get(key) for key in MODEL_SETTINGS},
    }


def model_paths(output: Path, folds: int) -> List[Path]:
    return [output / "runs" / f"fold-{fold}" / "model-best" for fold in range(folds)]


def kept_models(output: Path, record: dict) -> Optional[List[Path]]:
    """The fold models that a crossval run with `keep_models` left in output/runs, if they were made from what
    `record` (models_record) says; else None."""
    path = output / "runs" / MODELS_RECORD
    try:
        kept = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None
    models = model_paths(output, record["folds"])
    return models if kept == record and all((m / "meta.json").exists() for m in models) else None


def run_fold(fold: int, docs, labels, assigned: List[int], work: Path, seed: int, **options) -> dict:
    """Train on every fold but `fold` (less an inner dev set), score on `fold`."""
    held = [doc for doc, f in zip(docs, assigned) if f == fold]
    rest = [i for i, f in enumerate(assigned) if f != fold]
    keys = [document_key(t.text for t in docs[i]) for i in rest]
    inner = stratified_parts([labels[i] for i in rest], [1 - INNER_DEV_SHARE, INNER_DEV_SHARE], seed + fold, keys=keys)
    run_dir = work / f"fold-{fold}"
    train = save_docs([docs[i] for i, part in zip(rest, inner) if part == 0], run_dir / "train.spacy")
    dev = save_docs([docs[i] for i, part in zip(rest, inner) if part == 1], run_dir / "dev.spacy")
    heldout = save_docs(held, run_dir / "heldout.spacy")
    msg.divider(f"Fold {fold + 1}: {len(held)} held-out documents, {len(rest)} to train on")
    metrics = train_and_score(run_dir=run_dir, train=train, dev=dev, score_on=heldout, seed=seed, **options)
    remove(run_dir / "model-last")  # kept or not, model-best is the one a fold's model is
    return {
        "fold": fold,
        "documents": len(held),
        "typed_f": metrics["typed"]["f"],
        "untyped_f": metrics["untyped"]["f"],
        "per_label_f": per_label_f(metrics),
        "gold_entities": metrics["gold_entities"],
        "seconds": metrics["seconds"],
        "device": metrics["device"],
    }


def summarise(results: List[dict]) -> dict:
    labels = sorted({label for r in results for label in r["per_label_f"]})
    per_label = {}
    for label in labels:
        values = [r["per_label_f"].get(label) for r in results]
        per_label[label] = mean_sd([v for v in values if v is not None]) if any(v is not None for v in values) else None
    return {
        "typed_f": mean_sd([r["typed_f"] for r in results]),
        "untyped_f": mean_sd([r["untyped_f"] for r in results]),
        "per_label_f": per_label,
    }


def plot(results: List[dict], summary: dict, path: Path) -> None:
    plt = pyplot()
    fig, (folds_ax, labels_ax) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["fold"] + 1 for r in results]
    folds_ax.bar([i - 0.2 for i in x], [r["typed_f"] for r in results], width=0.4, label="typed F")
    folds_ax.bar([i + 0.2 for i in x], [r["untyped_f"] for r in results], width=0.4, label="untyped F")
    folds_ax.axhline(summary["typed_f"]["mean"], color="tab:blue", linestyle="--", linewidth=1)
    folds_ax.set(xlabel="fold", ylabel="F on the held-out fold", ylim=(0, 1), xticks=x, title="F per fold")
    folds_ax.legend(fontsize="small", loc="lower right")
    labels = [label for label, s in summary["per_label_f"].items() if s is not None]
    labels_ax.barh(
        labels,
        [summary["per_label_f"][l]["mean"] for l in labels],
        xerr=[summary["per_label_f"][l]["sd"] for l in labels],
        color="tab:green",
        capsize=3,
    )
    labels_ax.set(xlim=(0, 1), xlabel="F (mean ± sd over folds)", title="F per label")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def report_lines(record: dict) -> List[str]:
    s = record["summary"]
    lines = [
        "# Cross-validation",
        "",
        f"{record['folds']} folds over the {record['documents']} train + dev documents (test untouched), "
        f"seed {record['seed']}, {record['max_steps']} steps per fold, {record['device']}; "
        f"{record['seconds']:.0f} s in all.",
        "",
        f"**Typed F {s['typed_f']['mean']:.3f} ± {s['typed_f']['sd']:.3f}**, untyped F "
        f"{s['untyped_f']['mean']:.3f} ± {s['untyped_f']['sd']:.3f} (mean ± sample sd over folds).",
        "",
        "| fold | documents | gold entities | typed F | untyped F | seconds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['fold'] + 1} | {r['documents']} | {r['gold_entities']} | {r['typed_f']:.3f} | "
        f"{r['untyped_f']:.3f} | {r['seconds']:.0f} |"
        for r in record["results"]
    ]
    lines += ["", "| label | F mean | F sd | folds with the label |", "|---|---|---|---|"]
    for label, stats in s["per_label_f"].items():
        lines.append(
            f"| {label} | {stats['mean']:.3f} | {stats['sd']:.3f} | {stats['n']} |"
            if stats
            else f"| {label} | - | - | 0 |"
        )
    lines += ["", "![F per fold and per label](crossval.png)", ""]
    return lines


def crossval(
    *,
    config: Path,
    train: Path,
    dev: Path,
    output: Path,
    folds: int = 5,
    seed: int = 0,
    keep_models: bool = False,
    **train_options,
) -> dict:
    check_steps(train_options["max_steps"], train_options["eval_frequency"], train_options.get("warmup_ratio", 0.1))
    docs, labels, assigned = fold_plan(train, dev, folds, seed)
    start = time.perf_counter()
    work = output / "runs"
    # why first: from the first fold trained on, the models in runs/ are no longer all the recorded ones
    remove(work / MODELS_RECORD)
    results = [
        run_fold(fold, docs, labels, assigned, work, seed, config=config, keep_model=keep_models, **train_options)
        for fold in range(folds)
    ]
    if keep_models:
        made_from = models_record(config=config, train=train, dev=dev, assigned=assigned, seed=seed, **train_options)
        write_json(work / MODELS_RECORD, made_from)
    record = {
        "folds": folds,
        "seed": seed,
        "documents": len(docs),
        "max_steps": train_options["max_steps"],
        "device": results[0]["device"],
        "cpu": cpu_name(),
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
        "summary": summarise(results),
    }
    write_json(output / "crossval.json", record)
    plot(results, record["summary"], output / "crossval.png")
    write_text_atomic(output / "report.md", "\n".join(report_lines(record)))
    return record
