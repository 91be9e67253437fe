"""What report.md is made from: the metrics of evaluate (checked to be those of the model and corpora there
now), the training log, the gold and predicted test documents, and the model's labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd
import spacy
from wasabi import msg

from ...corpus.convert import read_docs
from ...util.errors import ReportError
from ...util.outputs import content_sha256


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
            now = content_sha256(path) if Path(path).exists() else None
            if now != recorded[what]:
                change = "is gone" if now is None else f"changed (`spacy project run {command}` ran since)"
                raise ReportError(
                    f"metrics-{split}.json was measured on {path}, which {change}: rerun `spacy project run evaluate`"
                )
