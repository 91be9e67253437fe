"""Teacher and student side by side on the same documents, in one process, on the CPU: F per label and words/s
at the same batch size and threads. What `distill` records in distillation.json and `report` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import spacy
from spacy.tokens import Doc

from ..metrics import entity_metrics, predict_gold

WARM_UP_DOCS = 16  # run before timing: lazy set-up (the first torch call, thinc's buffers) is not speed


def measure(model: Path, gold: Sequence[Doc], batch_size: int) -> Dict[str, Any]:
    """One pipeline's test scores (typed P/R/F, F per label) and words/s over `gold`."""
    nlp = spacy.load(model)
    predict_gold(nlp, list(gold[:WARM_UP_DOCS]), batch_size=batch_size)
    examples, seconds = predict_gold(nlp, gold, batch_size=batch_size)
    metrics = entity_metrics(examples)
    words = sum(len(doc) for doc in gold)
    return {
        "model": str(model),
        "typed": metrics["typed"],
        "per_label_f": {label: row["f"] for label, row in metrics["per_label"].items()},
        "words": words,
        "seconds": round(seconds, 3),
        "words_per_second": round(words / seconds, 1),
    }


def compare(teacher: Path, student: Path, gold: Sequence[Doc], batch_size: int) -> Dict[str, Any]:
    """Both pipelines on `gold`, one after the other, on the CPU this process runs on (its threads)."""
    import torch

    from ..runtime import cpu_name, select_device

    select_device(-1)  # why: the student is for CPUs; a GPU run compares on this machine's CPU too
    found = {"teacher": measure(teacher, gold, batch_size), "student": measure(student, gold, batch_size)}
    return {
        **found,
        "speedup": round(found["student"]["words_per_second"] / found["teacher"]["words_per_second"], 2),
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
        f"| words/s | {teacher['words_per_second']:,.0f} | {student['words_per_second']:,.0f} |",
        "",
        f"The student runs {side['speedup']:.1f}x as fast, at {100 * side['f_difference']:+.1f} F points. "
        f"Distillation took {timing['labelling_seconds']:.0f} s of labelling"
        f"{' (reused from an earlier run)' if record['labels_reused'] else ''} and {timing['training_seconds']:.0f} s "
        f"of training; peak memory {record['peak_memory_mb']:,.0f} MB.",
        "",
    ]
