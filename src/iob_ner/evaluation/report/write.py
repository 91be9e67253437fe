"""`write_report`: report.md, the plots and errors.html of a training folder, written all or none."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from wasabi import msg

from ...corpus.prepare import read_split_record
from ...util.errors import ReportError
from ...util.outputs import atomic_outputs, remove
from .errors_html import write_errors_html
from .inputs import check_fresh, load_metrics, load_test_docs, ner_labels, read_log
from .plots import plot_learning_curve, plot_per_label, plot_reliability, plot_thresholds
from .render import distillation_lines, render_report
from .tables import per_label_table

CONFIDENCE_PLOTS = ("reliability.png", "precision-recall-threshold.png")  # only with entity scores


def write_report(*, training_dir: Path, test_corpus: Path) -> Tuple[int, int]:
    """Write report.md, the plots and errors.html, all or none; returns (documents with errors, documents)."""
    metrics = load_metrics(training_dir)
    check_fresh(metrics)
    for split, m in metrics.items():  # report.md has them at the top too
        warning = (m.get("corpus_check") or {}).get("warning")
        if warning:
            msg.warn(f"{split}: {warning}")
    gold, pred = load_test_docs(test_corpus, training_dir / "predictions-test.spacy")
    log = read_log(training_dir / "log.jsonl")
    outputs = [
        training_dir / name
        for name in ("report.md", "learning-curve.png", "per-label-f.png", "errors.html", *CONFIDENCE_PLOTS)
    ]
    confidence = metrics["test"].get("confidence")
    try:
        per_label = {split: per_label_table(m) for split, m in metrics.items()}
        with atomic_outputs(*outputs) as (
            report_tmp,
            curve_tmp,
            per_label_tmp,
            errors_tmp,
            reliability_tmp,
            thresholds_tmp,
        ):
            if not log.empty:
                plot_learning_curve(log, curve_tmp)
            plot_per_label(per_label, per_label_tmp)
            if confidence is not None:
                plot_reliability(confidence, reliability_tmp)
                plot_thresholds(confidence, thresholds_tmp)
            with_errors = write_errors_html(gold, pred, errors_tmp, ner_labels(metrics["test"].get("model")))
            report_tmp.write_text(
                render_report(
                    metrics,
                    log,
                    per_label,
                    with_errors,
                    len(gold),
                    read_split_record(test_corpus.parent),
                    distillation_lines(training_dir),
                ),
                encoding="utf8",
            )
    except KeyError as err:  # metrics of an older evaluate.py
        raise ReportError(
            f"the metrics files in {training_dir} lack {err}: rerun `spacy project run evaluate`"
        ) from None
    if log.empty:
        remove(outputs[1])  # a curve of an earlier run would look like this one's
    if confidence is None:  # the same for the plots of an earlier pipeline that gave entity scores
        for path in outputs[4:]:
            remove(path)
    return with_errors, len(gold)
