"""Writing training/report.md, the learning-curve, per-label and entity-confidence plots, and training/errors.html."""

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
import spacy
from spacy import displacy
from wasabi import msg

from ..corpus.convert import read_docs
from ..corpus.prepare import read_split_record
from ..util.colors import label_colors
from ..util.errors import ReportError
from ..util.outputs import atomic_outputs, fingerprint, remove
from .metrics import confusion_labels

COUNT_COLUMNS = frozenset({"support", "gold entities", "predicted entities", "kept", "correct"})
ERROR_KINDS = ["correct", "wrong_label", "wrong_boundary", "wrong_label_and_boundary", "missed", "spurious"]
MAX_ERROR_DOCS = 300  # errors.html shows the documents with the most errors first, up to this many
CONFIDENCE_PLOTS = ("reliability.png", "precision-recall-threshold.png")  # only with entity scores
NO_SCORES = "the NER head gives no entity scores (spaCy's transition-based `ner` has none)"


def _sampled(confidence: dict) -> str:
    """How the scores were made, when not in one pass."""
    samples = confidence.get("samples") or 0
    return f"; each score is the mean over {samples} dropout passes of the transformer" if samples else ""


def _md_table(frame: pd.DataFrame, counts: bool = False) -> str:
    """A Markdown table (pandas' to_markdown needs the tabulate package); `counts`: all cells are counts."""
    count_columns = set(frame.columns) if counts else COUNT_COLUMNS
    header = "| " + " | ".join(str(c) for c in [frame.index.name or ""] + list(frame.columns)) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    rows = [
        "| " + " | ".join([str(i)] + [_cell(c, v, c in count_columns) for c, v in zip(frame.columns, row)]) + " |"
        for i, row in zip(frame.index, frame.values)
    ]
    return "\n".join([header, rule] + rows)


def _cell(column: str, value: object, count: bool) -> str:
    if column == "words/s":
        return f"{value:,.0f}"
    if isinstance(value, float) and not count:
        return f"{value:.3f}"
    return str(int(value)) if isinstance(value, (int, float)) else str(value)


def read_log(path: Path) -> pd.DataFrame:
    """spaCy's JSONL training log: losses are summed since the last evaluation, so divide by the steps."""
    rows, previous, unreadable = [], -1, 0
    if path.exists():
        for line in path.read_text(encoding="utf8").splitlines():
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError:  # an interrupted training can leave a cut last line: curve without it
                    unreadable += 1
                    continue
                steps = max(1, entry["step"] - previous)
                previous = entry["step"]
                rows.append(
                    {
                        "step": entry["step"],
                        "loss": sum(entry.get("losses", {}).values()) / steps,
                        "dev_f": entry.get("scores", {}).get("ents_f", 0.0) / 100,
                        "padding": entry.get("padding"),  # logged since the padding was counted
                    }
                )
    if unreadable:
        msg.warn(f"{path}: {unreadable} line(s) are not JSON and were left out of the learning curve")
    return pd.DataFrame(rows)


def plot_learning_curve(log: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(log["step"], log["loss"], color="tab:gray", marker=".", label="training loss per step")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss per step")
    f_axis = loss_axis.twinx()
    f_axis.plot(log["step"], log["dev_f"], color="tab:blue", marker="o", label="dev F")
    f_axis.set_ylabel("dev entity F")
    f_axis.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=2, fontsize="small")
    fig.suptitle("Learning curve")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100, format="png")  # `path` may be a temporary name without .png
    plt.close(fig)


def plot_per_label(per_label: Dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({split: table["f"] for split, table in per_label.items()})
    ax = frame.plot.barh(figsize=(7, 0.5 * len(frame) + 1.5), xlim=(0, 1))
    ax.set_xlabel("entity F")
    ax.set_title("F per label")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100, format="png")
    plt.close(ax.figure)


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_reliability(confidence: dict, path: Path) -> None:
    """Accuracy against mean score per bin, before (T = 1) and after the temperature, over the diagonal;
    the light bars are each bin's share of the entities (after), with its count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = confidence["reliability_after"]
    total = max(1, sum(row["count"] for row in bins))
    width = bins[0]["hi"] - bins[0]["lo"]
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.bar(
        [row["lo"] for row in bins],
        [row["count"] / total for row in bins],
        width=width,
        align="edge",
        color="tab:blue",
        alpha=0.15,
        edgecolor="white",
        label="share of entities per bin (after)",
    )
    for row in bins:
        if row["count"]:
            ax.text(
                row["lo"] + width / 2,
                row["count"] / total + 0.01,
                str(row["count"]),
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:blue",
            )
    ax.plot([0, 1], [0, 1], linestyle="--", color="tab:gray", label="perfect calibration")
    temperature = confidence["temperature"]
    for key, label, color, style in (
        ("reliability_before", "before (T = 1)", "tab:orange", "s--"),
        ("reliability_after", f"after (T = {temperature:.3g})", "tab:blue", "o-"),
    ):
        rows = [row for row in confidence[key] if row["count"]]
        ax.plot(
            [row["confidence"] for row in rows],
            [row["accuracy"] for row in rows],
            style,
            color=color,
            label=label,
            markersize=5,
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("entity score (mean in bin)")
    ax.set_ylabel("share of the bin's entities that are correct")
    ax.set_title(
        f"Reliability (test): ECE {_number(confidence['ece_before'])} at T = 1, "
        f"{_number(confidence['ece_after'])} at T = {temperature:.3g}",
        fontsize="medium",
    )
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def plot_thresholds(confidence: dict, path: Path) -> None:
    """Precision, recall and F of the entities kept at each min_score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confidence["thresholds"]
    x = [row["min_score"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    # different markers and dashes: where two lines coincide, both stay visible
    for key, label, color, style in (
        ("p", "precision", "tab:green", "o-"),
        ("r", "recall", "tab:red", "s--"),
        ("f", "F", "tab:blue", "^:"),
    ):
        # nothing kept: no precision to draw (the table's 0.0 with "kept 0")
        values = [float("nan") if key == "p" and not row["kept"] else row[key] for row in rows]
        ax.plot(x, values, style, color=color, label=label, markersize=5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("min_score: keep the entities scoring at least this")
    ax.set_ylabel("entity P / R / F (test)")
    ax.set_title("Precision and recall against the score threshold (test)", fontsize="medium")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def threshold_frame(confidence: dict) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {"kept": row["kept"], "correct": row["correct"], "P": row["p"], "R": row["r"], "F": row["f"]}
            for row in confidence["thresholds"]
        ],
        index=[f"{row['min_score']:g}" for row in confidence["thresholds"]],
    )
    frame.index.name = "min score"
    return frame


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
        f"- ECE ({confidence['bins']} equal-width bins): {_number(confidence['ece_before'])} before the temperature "
        f"(T = 1), {_number(confidence['ece_after'])} after (T = {temperature:.3g})",
        f"- AUROC, correct against wrong predicted entities: {_number(confidence['auroc'])}",
        "",
        "ECE is the average gap between the scores (confidence) and how often entities with such scores are right "
        "(0: a score of 0.8 is right 80 % of the time); AUROC is the chance that a correct entity scores above a "
        "wrong one (0.5: the score cannot tell them apart). To trade recall for precision, keep only entities "
        "scoring at least a threshold with `--vars.min_score` (each row: what that threshold gives on test).",
        "",
        _md_table(threshold_frame(confidence)),
        "",
        "![Reliability diagram](reliability.png)",
        "",
        "![Precision and recall against the threshold](precision-recall-threshold.png)",
        "",
    ]


def per_label_table(metrics: dict) -> pd.DataFrame:
    frame = pd.DataFrame(metrics["per_label"]).T[["p", "r", "f", "support"]]
    frame["support"] = frame["support"].astype(int)
    frame.index.name = "label"
    return frame


def confusion_table(confusion: Dict[str, Dict[str, int]]) -> pd.DataFrame:
    rows, cols = confusion_labels(confusion)
    frame = pd.DataFrame([[confusion.get(r, {}).get(c, 0) for c in cols] for r in rows], index=rows, columns=cols)
    frame.index.name = "gold \\ predicted"
    return frame


def write_errors_html(gold_docs: List, pred_docs: List, path: Path, model_labels: Sequence[str] = ()) -> int:
    """Gold and predicted entities side by side, the documents with the most errors first. Colours come from
    every label the model knows (`model_labels`) and the documents hold, as on the page of `serve`."""

    def errors(gold, pred) -> int:
        g = {(e.start, e.end, e.label_) for e in gold.ents}
        p = {(e.start, e.end, e.label_) for e in pred.ents}
        return len(g ^ p)

    ranked = sorted(range(len(gold_docs)), key=lambda i: -errors(gold_docs[i], pred_docs[i]))
    with_errors = sum(1 for i in ranked if errors(gold_docs[i], pred_docs[i]))
    labels = sorted({e.label_ for d in gold_docs + pred_docs for e in d.ents} | set(model_labels))
    options = {"ents": labels, "colors": label_colors(labels)}  # the colours of the page of `serve` too
    rows = []
    for i in ranked[:MAX_ERROR_DOCS]:
        count = errors(gold_docs[i], pred_docs[i])
        with warnings.catch_warnings():  # W006 "no entities to visualize": normal for a document here
            warnings.filterwarnings("ignore", message=r"\[W006\]")
            cells = [displacy.render(d, style="ent", page=False, options=options) for d in (gold_docs[i], pred_docs[i])]
        rows.append(
            f'<tr class="{"bad" if count else "ok"}"><td>#{i}<br>{count} error(s)</td>'
            f"<td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>NER errors</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td{{border-top:1px solid #ccc;vertical-align:top;padding:6px;width:45%}}
td:first-child{{width:8%;color:#555}} tr.bad td:first-child{{color:#b00}}</style></head><body>
<h1>Test documents: gold and predicted entities</h1>
<p>{with_errors} of {len(gold_docs)} documents have errors; shown first.
Showing {min(len(gold_docs), MAX_ERROR_DOCS)} documents.</p>
<table><tr><th></th><th>gold</th><th>predicted</th></tr>{"".join(rows)}</table></body></html>"""
    path.write_text(page, encoding="utf8")
    return with_errors


def ner_labels(model: Optional[str]) -> List[str]:
    """The entity labels of the pipeline folder `model` (its meta.json), [] when it is not there."""
    try:
        labels = json.loads((Path(model) / "meta.json").read_text(encoding="utf8"))["labels"]
    except (TypeError, OSError, ValueError, KeyError):
        return []
    return sorted({label for name, names in labels.items() if name != "transformer" for label in names})


def load_metrics(training_dir: Path) -> Dict[str, dict]:
    metrics = {}
    for split in ("dev", "test"):
        path = training_dir / f"metrics-{split}.json"
        if not path.is_file():
            raise ReportError(f"{path} is missing: run `spacy project run evaluate` first")
        try:
            metrics[split] = json.loads(path.read_text(encoding="utf8"))
        except ValueError:
            raise ReportError(f"{path} is not valid JSON: rerun `spacy project run evaluate`") from None
    return metrics


def load_test_docs(test_corpus: Path, predictions: Path) -> Tuple[List, List]:
    """Gold and predicted test documents, checked to be the same documents (in number) before pairing."""
    vocab = spacy.blank("en").vocab
    docs = {}
    for path, command in ((test_corpus, "convert"), (predictions, "evaluate")):
        if not path.exists():
            raise ReportError(f"{path} is missing: run `spacy project run {command}` first")
        try:
            docs[path] = list(read_docs(path, vocab))
        except Exception:  # spaCy's E1014, zlib, msgpack alike: not a DocBin
            raise ReportError(f"{path} is not a spaCy DocBin (.spacy): rerun `spacy project run {command}`") from None
    gold, pred = docs[test_corpus], docs[predictions]
    # predictions of an older test corpus: errors.html would pair gold documents with other texts' predictions
    if len(gold) != len(pred):
        raise ReportError(
            f"{predictions} holds {len(pred)} documents but {test_corpus} holds {len(gold)}: "
            f"rerun `spacy project run evaluate`"
        )
    differs = next((i for i, (g, p) in enumerate(zip(gold, pred)) if [t.text for t in g] != [t.text for t in p]), None)
    if differs is not None:
        raise ReportError(
            f"{predictions} holds other texts than {test_corpus} (from document {differs} on): "
            f"rerun `spacy project run evaluate`"
        )
    return gold, pred


def check_fresh(metrics: Dict[str, dict]) -> None:
    """The metrics must be those of the model and corpora there now: a `convert` or `train` since `evaluate`
    would put this data's description over another model's scores. evaluate records both fingerprints."""
    for split, record in metrics.items():
        recorded = record.get("fingerprints")
        if recorded is None:
            raise ReportError(f"metrics-{split}.json comes from an older evaluate: rerun `spacy project run evaluate`")
        for what, path, command in (("corpus", record["corpus"], "convert"), ("model", record["model"], "train")):
            if recorded[what] is None:
                continue  # an installed pipeline package: nothing on disk to compare
            now = fingerprint(path) if Path(path).exists() else None
            if now != recorded[what]:
                change = "is gone" if now is None else f"changed (`spacy project run {command}` ran since)"
                raise ReportError(
                    f"metrics-{split}.json was measured on {path}, which {change}: rerun `spacy project run evaluate`"
                )


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
        _md_table(overall),
        "",
        *distilled,
        "## Per label (test)",
        "",
        _md_table(per_label["test"]),
        "",
        "## Per label (dev)",
        "",
        _md_table(per_label["dev"]),
        "",
        "## Kinds of error",
        "",
        "Per gold entity: `correct`, `wrong_label` (same span), `wrong_boundary` (overlapping, same label), "
        "`wrong_label_and_boundary`, `missed` (no overlap); per prediction overlapping no gold entity: `spurious`.",
        "",
        _md_table(errors, counts=True),
        "",
        "## Label confusion (test)",
        "",
        "Rows: gold labels; columns: labels of the predicted entities that overlap them.",
        "",
        _md_table(confusion_table(metrics["test"]["confusion"]), counts=True),
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
    from ..distill.compare import comparison_lines

    path = training_dir / "distillation.json"
    if not path.is_file():
        return []
    try:
        return comparison_lines(json.loads(path.read_text(encoding="utf8")))
    except (ValueError, KeyError, TypeError):
        raise ReportError(f"{path} is not what distill writes: rerun `spacy project run distill`") from None


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
