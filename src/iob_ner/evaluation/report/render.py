"""report.md's text: the sections, from the metrics, the log, the tables and where the data came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from ...distill.compare import comparison_lines
from ...util.errors import ReportError
from .tables import confusion_table, md_table, number_text, threshold_frame

ERROR_KINDS = ["correct", "wrong_label", "wrong_boundary", "wrong_label_and_boundary", "missed", "spurious"]


NO_SCORES = "the NER head gives no entity scores (spaCy's transition-based `ner` has none)"


def _sampled(confidence: dict) -> str:
    """How the scores were made, when not in one pass."""
    samples = confidence.get("samples") or 0
    return f"; each score is the mean over {samples} dropout passes of the transformer" if samples else ""


def confidence_lines(metrics: dict) -> List[str]:
    """report.md's "Confidence (test)" section: numbers, how to read them, the threshold table and the plots;
    one sentence where the pipeline gives no entity scores."""
    lines = ["## Confidence (test)", ""]
    if "confidence" not in metrics:
        return lines + [
            "metrics-test.json has no entity confidence (an older evaluate.py wrote it): rerun "
            "`spacy project run evaluate`.",
            "",
        ]
    confidence = metrics["confidence"]
    if confidence is None:
        note = metrics.get("confidence_note") or NO_SCORES
        return lines + [f"{note[0].upper()}{note[1:].rstrip('.')}.", ""]
    temperature = confidence["temperature"]
    return lines + [
        f'Each predicted entity has a probability (`doc.spans["{confidence["spans_key"]}"]`, attribute `scores`), '
        f"at the temperature stored in component `{confidence['component']}`: T = {temperature:.3g} (`train` fits it "
        f"on dev){_sampled(confidence)}. {confidence['correct']} of the {confidence['entities']} predicted test entities are correct "
        f"({confidence['gold_entities']} gold entities).",
        "",
        f"- ECE ({confidence['bins']} equal-width bins): {number_text(confidence['ece_before'])} before the temperature "
        f"(T = 1), {number_text(confidence['ece_after'])} after (T = {temperature:.3g})",
        f"- AUROC, correct against wrong predicted entities: {number_text(confidence['auroc'])}",
        "",
        "ECE is the average gap between the scores (confidence) and how often entities with such scores are right "
        "(0: a score of 0.8 is right 80 % of the time); AUROC is the chance that a correct entity scores above a "
        "wrong one (0.5: the score cannot tell them apart). To trade recall for precision, keep only entities "
        "scoring at least a threshold with `--vars.min_score` (each row: what that threshold gives on test).",
        "",
        md_table(threshold_frame(confidence)),
        "",
        "![Reliability diagram](reliability.png)",
        "",
        "![Precision and recall against the threshold](precision-recall-threshold.png)",
        "",
    ]


DEV_IS_TEST = (
    "**Warning: dev is the test set** (`dev_is_test = true`): the best checkpoint was chosen on the "
    "test documents, so the test scores below are optimistic."
)


def split_lines(split: Optional[dict]) -> Tuple[List[str], List[str]]:
    """(lines before the title, lines after it): the dev-is-test warning goes first, where the data came from next."""
    if split is None:
        return [], []
    counts = ", ".join(f"{n} {name}" for name, n in split["documents_per_split"].items())
    first = [DEV_IS_TEST, ""] if split.get("dev_is_test") else []
    return first, [f"Data: {split['note']} ({counts} documents)."]


def render_report(
    metrics: Dict[str, dict],
    log: pd.DataFrame,
    per_label: Dict[str, pd.DataFrame],
    with_errors: int,
    n_docs: int,
    split: Optional[dict] = None,
    distilled: Sequence[str] = (),
) -> str:
    """report.md's text; `distilled`: the "Teacher and student" section of a distilled pipeline."""
    overall = pd.DataFrame(
        {
            split: {
                "typed P": m["typed"]["p"],
                "typed R": m["typed"]["r"],
                "typed F": m["typed"]["f"],
                # the same, the pipeline run on raw text (evaluate's raw_text; n/a in metrics written before it)
                "typed F, raw text": m["raw_text"]["f"] if "raw_text" in m else "n/a",
                "untyped F": m["untyped"]["f"],
                "gold entities": m["gold_entities"],
                "predicted entities": m["predicted_entities"],
                "words/s": m["words_per_second"],
            }
            for split, m in metrics.items()
        }
    ).T
    overall.index.name = "split"
    errors = (
        pd.DataFrame({split: m["errors"] for split, m in metrics.items()}).reindex(ERROR_KINDS).fillna(0).astype(int).T
    )
    errors.index.name = "split"
    best = log.loc[log["dev_f"].idxmax()] if not log.empty else None
    before_title, data = split_lines(split)
    mismatch, other_corpus = mismatch_lines(metrics)
    lines = [
        *mismatch,
        *before_title,
        "# NER report",
        "",
        *data,
        f"Model: `{metrics['test']['model']}`, evaluated on {metrics['test']['device']}.",
        best_line(best, log, other_corpus),
        padding_line(log),
        "",
        "## Overall",
        "",
        "Typed F counts an entity as right when its boundaries and label both match; untyped F asks only for "
        "the boundaries. A large gap between them means the model finds the spans but confuses labels. "
        "Both score the model on the export's own tokens; typed F, raw text, scores it on the documents' text "
        "cut by the pipeline's tokenizer, as on new text (predict, serve): lower where that tokenizer cuts the "
        "text differently from the export (docs/languages.md).",
        "",
        md_table(overall),
        "",
        *distilled,
        "## Per label (test)",
        "",
        md_table(per_label["test"]),
        "",
        "## Per label (dev)",
        "",
        md_table(per_label["dev"]),
        "",
        "## Kinds of error",
        "",
        "Per gold entity: `correct`, `wrong_label` (same span), `wrong_boundary` (overlapping, same label), "
        "`wrong_label_and_boundary`, `missed` (no overlap); per prediction overlapping no gold entity: `spurious`.",
        "",
        md_table(errors, counts=True),
        "",
        "## Label confusion (test)",
        "",
        "Rows: gold labels; columns: labels of the predicted entities that overlap them.",
        "",
        md_table(confusion_table(metrics["test"]["confusion"]), counts=True),
        "",
        *confidence_lines(metrics["test"]),
        "## Plots and error view",
        "",
        ("![Learning curve](learning-curve.png)" if not log.empty else "No training log was found."),
        "",
        "![F per label](per-label-f.png)",
        "",
        f"[errors.html](errors.html): {with_errors} of {n_docs} test documents with errors, gold beside predicted.",
        "",
    ]
    return "\n".join(lines)


def mismatch_lines(metrics: Dict[str, dict]) -> Tuple[List[str], bool]:
    """(report.md's first lines: evaluate's warning of each split whose corpus does not fit the model, whether
    a corpus is not the model's own): gold labels the model lacks, a corpus of another conversion."""
    lines, other = [], False
    for split, m in metrics.items():
        check = m.get("corpus_check") or {}  # metrics of an older evaluate have none
        if check.get("warning"):
            lines += [f"**Warning ({split}): {check['warning']}**", ""]
        other = other or bool(check.get("other_corpus")) or bool(check.get("no_label_known"))
    return lines, other


def best_line(best: Optional[pd.Series], log: pd.DataFrame, other_corpus: bool) -> str:
    """The training log's best dev F; where the corpus evaluated is not the model's, said to be the training's."""
    if best is None:
        return ""
    where = f"at step {int(best['step'])} of {int(log['step'].max())}"
    if other_corpus:
        return (
            f"The training run's best dev F, {best['dev_f']:.3f} {where}, was measured on the dev corpus the model "
            "was trained with, not on the corpus of this report."
        )
    return f"Best dev F {best['dev_f']:.3f} {where}."


def padding_line(log: pd.DataFrame) -> str:
    """The share of the transformer's training positions that were padding, as the log's last line has it."""
    if log.empty or "padding" not in log or log["padding"].isna().all():
        return ""
    share = float(log["padding"].dropna().iloc[-1])
    return (
        f"Padding: {share:.1%} of the transformer's wordpiece positions in training were padding (each row of a "
        "batch is padded to the longest: `[training.batcher]` in the config groups documents by length)."
    )


def distillation_lines(training_dir: Path) -> List[str]:
    """The teacher-and-student section where `training_dir` holds a distilled student (distill's record)."""
    path = training_dir / "distillation.json"
    if not path.is_file():
        return []
    try:
        return comparison_lines(json.loads(path.read_text(encoding="utf8")))
    except (ValueError, KeyError, TypeError):
        raise ReportError(f"{path} is not what distill writes: rerun `spacy project run distill`") from None
