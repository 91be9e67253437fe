"""Teacher and student side by side on the same documents, in one process, on the CPU: F per label and words/s
at the same batch size and threads. What `distill` records in distillation.json and `report` shows.

The speed-up of one pass of each, one after the other, varied 8.7x to 102x on one machine with what else
ran; so each model is timed `ROUNDS` times, alternately, after a warm-up pass, on a few hundred documents,
and the record gives the median of the per-round ratios with their min-max."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any, Dict, List, Sequence

import spacy
import torch
from spacy.tokens import Doc

from ..evaluation.metrics import entity_metrics, predict_gold
from ..util.runtime import cpu_name, select_device

ROUNDS = 3  # timed passes of each model, alternately: teacher, student, teacher, student, ...
TIMING_DOCS = 300  # the first documents of the corpus: enough to time, few enough to keep the rounds short


def scores(nlp, model: Path, gold: Sequence[Doc], batch_size: int) -> Dict[str, Any]:
    """One pipeline's test scores (typed P/R/F, F per label) over all of `gold`; the pass is also its warm-up
    (lazy set-up, the first torch call, thinc's buffers: not speed)."""
    examples, _ = predict_gold(nlp, gold, batch_size=batch_size)
    metrics = entity_metrics(examples)
    return {
        "model": str(model),
        "typed": metrics["typed"],
        "per_label_f": {label: row["f"] for label, row in metrics["per_label"].items()},
    }


def timed_rounds(nlps: Dict[str, Any], texts: Sequence[Doc], batch_size: int, rounds: int) -> Dict[str, List[float]]:
    """Seconds of each pipeline on `texts`, per round, the pipelines alternating within each round: a load
    that comes and goes on a shared machine falls on both, and shows in the spread of the rounds."""
    seconds: Dict[str, List[float]] = {name: [] for name in nlps}
    for _ in range(rounds):
        for name, nlp in nlps.items():
            seconds[name].append(predict_gold(nlp, texts, batch_size=batch_size)[1])
    return seconds


def compare(
    teacher: Path,
    student: Path,
    gold: Sequence[Doc],
    batch_size: int,
    rounds: int = ROUNDS,
    timing_docs: int = TIMING_DOCS,
) -> Dict[str, Any]:
    """Both pipelines on `gold`, on the CPU this process runs on (its threads): F on all of it, then the
    speed-up as the median over `rounds` alternate timed passes on its first `timing_docs` documents, with
    the spread (min-max) of the per-round ratios."""
    select_device(-1)  # why: the student is for CPUs; a GPU run compares on this machine's CPU too
    nlps = {"teacher": spacy.load(teacher), "student": spacy.load(student)}
    found = {name: scores(nlp, path, gold, batch_size) for (name, nlp), path in zip(nlps.items(), (teacher, student))}
    texts = list(gold[:timing_docs])
    words = sum(len(doc) for doc in texts)
    seconds = timed_rounds(nlps, texts, batch_size, rounds)
    ratios = [t / s for t, s in zip(seconds["teacher"], seconds["student"])]  # same words: student's w/s / teacher's
    for name, side in found.items():
        per_round = [words / s for s in seconds[name]]
        side.update(
            {
                "words": words,
                "seconds": [round(s, 3) for s in seconds[name]],
                "words_per_second": round(median(per_round), 1),
                "words_per_second_rounds": [round(w, 1) for w in per_round],
            }
        )
    return {
        **found,
        "speedup": round(median(ratios), 2),
        "speedup_min": round(min(ratios), 2),
        "speedup_max": round(max(ratios), 2),
        "speedup_rounds": [round(r, 2) for r in ratios],
        "rounds": rounds,
        "timing_documents": len(texts),
        "timing_words": words,
        "f_difference": round(found["student"]["typed"]["f"] - found["teacher"]["typed"]["f"], 4),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "documents": len(gold),
    }


def comparison_lines(record: Dict[str, Any]) -> List[str]:
    """report.md's "Teacher and student" section from distillation.json."""
    side = record["comparison"]
    teacher, student = side["teacher"], side["student"]
    labels = sorted(set(teacher["per_label_f"]) | set(student["per_label_f"]))
    rows = [
        f"| {label} | {teacher['per_label_f'].get(label, 0.0):.3f} | {student['per_label_f'].get(label, 0.0):.3f} |"
        for label in labels
    ]
    timing = record["timing"]
    return [
        "## Teacher and student",
        "",
        f"This pipeline is a CNN student distilled from `{teacher['model']}` ({record['settings']['mode']} targets "
        f"at temperature {record['settings']['temperature']:g}, {record['silver_docs']:,} teacher-labelled "
        f"documents). Both measured on `{record['comparison_corpus']}` in one process on {side['cpu']}, "
        f"batch size {side['batch_size']}, {side['threads']} thread(s).",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| typed F | {teacher['typed']['f']:.3f} | {student['typed']['f']:.3f} |",
        *rows,
        f"| words/s{' (median)' if 'rounds' in side else ''} | {teacher['words_per_second']:,.0f} | "
        f"{student['words_per_second']:,.0f} |",
        "",
        f"The student runs {speedup_text(side)}, at {100 * side['f_difference']:+.1f} F points. "
        f"Distillation took {timing['labelling_seconds']:.0f} s of labelling"
        f"{' (reused from an earlier run)' if record['labels_reused'] else ''} and {timing['training_seconds']:.0f} s "
        f"of training; peak memory {record['peak_memory_mb']:,.0f} MB.",
        "",
    ]


def speedup_text(side: Dict[str, Any], what: str = "as fast") -> str:
    """The speed-up, e.g. "12.3x as fast (median of 3 rounds, ...)"; one pass's, as an older distill recorded it."""
    if "rounds" not in side:
        return f"{side['speedup']:.1f}x {what} (one pass of each: rerun distill for a median over rounds)"
    return (
        f"{side['speedup']:.1f}x {what} (median of {side['rounds']} rounds, teacher and student alternately after "
        f"a warm-up pass, on {side['timing_documents']:,} documents of {side['timing_words']:,} words; per round "
        f"{side['speedup_min']:.1f}x to {side['speedup_max']:.1f}x)"
    )
