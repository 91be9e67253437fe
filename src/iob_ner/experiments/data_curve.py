"""Data-size curve: dev F after training on 25, 50, 75 and 100 % of the training documents.

Answers "do I need to annotate more?". The subsets are nested (each holds the smaller ones), made of
whole documents, seeded and stratified by label; each trains for the same number of steps per word
(max_steps is the full set's, scaled by the subset's share of the words), so a smaller set is not
short-changed on epochs. All are scored on the same dev set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Sequence

from wasabi import msg

from ..corpus.splits import stratified_parts
from ..evaluation.report.plots import pyplot
from ..training.train import check_steps
from ..util.errors import SplitError
from ..util.outputs import atomic_output, write_text_atomic
from ..util.runtime import cpu_name
from .common import doc_labels, load_docs, save_docs, train_and_score, write_json

QUARTERS = (25, 50, 75, 100)
FLAT = 0.01  # dev F within this of the full set's counts as "flat"


def nested_subsets(labels, seed: int) -> List[List[int]]:
    """Document indices of the 25/50/75/100 % subsets: four stratified quarters, added one by one."""
    if len(labels) < len(QUARTERS):
        raise SplitError(f"a data-size curve needs at least {len(QUARTERS)} training documents, not {len(labels)}")
    quarter = stratified_parts(labels, [1.0] * len(QUARTERS), seed)
    return [[i for i, q in enumerate(quarter) if q <= k] for k in range(len(QUARTERS))]


def reading(fs: Sequence[float]) -> str:
    """One line: still rising at the full set, higher at a smaller size, or flat since which share?"""
    gain = fs[-1] - fs[-2]
    if gain >= FLAT:
        return f"still rising (+{gain:.3f} dev F from {QUARTERS[-2]} % to 100 %): more annotation should help"
    best = max(range(len(fs)), key=lambda i: fs[i])
    if fs[best] - fs[-1] >= FLAT:
        return (
            f"not rising: dev F was higher with {QUARTERS[best]} % of the documents ({fs[best]:.3f} against "
            f"{fs[-1]:.3f}); differences this size can be noise of a small dev set or too few steps: compare "
            f"the spread in crossval, or raise max_steps"
        )
    since = next(q for i, q in enumerate(QUARTERS) if all(abs(f - fs[-1]) < FLAT for f in fs[i:]))
    return (
        f"flat since {since} % (dev F within {FLAT} of the full set's from there on): more of the same "
        f"annotation is unlikely to help much; look at the weakest labels instead"
    )


def plot(points: List[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["documents"] for p in points], [p["dev_f"] for p in points], marker="o")
    for p in points:
        ax.annotate(
            f"{p['share']} %",
            (p["documents"], p["dev_f"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize="small",
        )
    ax.set(xlabel="training documents", ylabel="dev entity F", ylim=(0, 1), title="Dev F against training size")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def data_curve(
    *,
    config: Path,
    train: Path,
    dev: Path,
    output: Path,
    seed: int = 0,
    max_steps: int,
    eval_frequency: int,
    **train_options,
) -> dict:
    check_steps(max_steps, eval_frequency, train_options.get("warmup_ratio", 0.1))
    docs = load_docs([train])
    subsets = nested_subsets(doc_labels(docs), seed)
    words = sum(len(doc) for doc in docs)
    start = time.perf_counter()
    points = []
    for share, subset in zip(QUARTERS, subsets):
        part_words = sum(len(docs[i]) for i in subset)
        steps = max(1, round(max_steps * part_words / words))
        run_dir = output / "runs" / f"{share}"
        msg.divider(f"{share} %: {len(subset)} documents, {part_words} words, {steps} steps")
        part = save_docs([docs[i] for i in subset], run_dir / "train.spacy")
        metrics = train_and_score(
            run_dir=run_dir,
            config=config,
            train=part,
            dev=dev,
            score_on=dev,
            seed=seed,
            max_steps=steps,
            eval_frequency=max(1, min(eval_frequency, steps)),
            **train_options,
        )
        points.append(
            {
                "share": share,
                "documents": len(subset),
                "words": part_words,
                "steps": steps,
                "dev_f": metrics["typed"]["f"],
                "dev_untyped_f": metrics["untyped"]["f"],
                "seconds": metrics["seconds"],
                "device": metrics["device"],
            }
        )
    record = {
        "seed": seed,
        "max_steps": max_steps,
        "cpu": cpu_name(),
        "points": points,
        "reading": reading([p["dev_f"] for p in points]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(output / "data-curve.json", record)
    plot(points, output / "data-curve.png")
    write_text_atomic(output / "report.md", "\n".join(report_lines(record)))
    return record


def report_lines(record: dict) -> List[str]:
    lines = [
        "# Data-size curve",
        "",
        f"**Reading: {record['reading']}.**",
        "",
        f"Nested, stratified subsets of the training documents (seed {record['seed']}), the same steps per "
        f"word ({record['max_steps']} steps for the full set), the same dev set; {record['points'][0]['device']}; "
        f"{record['seconds']:.0f} s in all.",
        "",
        "| share | documents | words | steps | dev F | dev untyped F | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['share']} % | {p['documents']} | {p['words']} | {p['steps']} | {p['dev_f']:.3f} | "
        f"{p['dev_untyped_f']:.3f} | {p['seconds']:.0f} |"
        for p in record["points"]
    ]
    return lines + ["", "![Dev F against training size](data-curve.png)", ""]
