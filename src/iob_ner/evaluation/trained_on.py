"""What a pipeline was trained on, and whether a corpus it is evaluated on fits it.

Training records, in the pipeline's meta.json (`nlp.meta["iob_ner_trained_on"]`), the paths and content
fingerprints (sha256) of its training and dev corpora, and where they were converted from (corpus/split.json
beside the training corpus, when there is one). evaluate compares a corpus with that record and with the
model's labels: a corpus of other labels (NCBI-disease's Disease against a MatScholar model's MAT, CMT, ...)
or of another conversion gives scores that say nothing about the model, and evaluate and report say so."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..corpus.prepare import read_split_record
from ..util.outputs import content_sha256

META_KEY = "iob_ner_trained_on"


def trained_on_record(train: Optional[str], dev: Optional[str], fingerprints: Dict[str, str]) -> Optional[dict]:
    """The meta.json record of a training run: None without the corpora's digests (from training_input_digests)."""
    if not fingerprints.get("training corpus") or not fingerprints.get("dev corpus"):
        return None
    record: Dict[str, Any] = {
        "train": {"path": str(train), "sha256": fingerprints["training corpus"]},
        "dev": {"path": str(dev), "sha256": fingerprints["dev corpus"]},
    }
    split = read_split_record(Path(str(train)).parent) if train else None
    if split is not None and isinstance(split.get("sources"), dict):
        record["converted_from"] = split["sources"]
    return record


def model_labels(nlp) -> List[str]:
    """The entity labels of a loaded pipeline's components (the transformer has none)."""
    labels = set()
    for name, names in nlp.pipe_labels.items():
        if name != "transformer":
            labels.update(names)
    return sorted(labels)


def corpus_split(corpus: Path) -> Optional[str]:
    """ "dev" or "test" for corpus/dev.spacy and corpus/test.spacy (what project.yml evaluates), else None."""
    stem = Path(corpus).name.split(".")[0]
    return stem if stem in ("dev", "test") else None


def check_corpus(nlp, model: Path, corpus: Path, gold: Iterable, corpus_sha: str) -> dict:
    """The "corpus_check" block of evaluate's metrics: the gold labels the model lacks (with their counts),
    whether the model knows none of them, whether the corpus is of another conversion than the model's
    training corpora, and one warning sentence (None when all fits)."""
    counts = Counter(ent.label_ for doc in gold for ent in doc.ents)
    known = model_labels(nlp)
    missing = {label: n for label, n in counts.most_common() if known and label not in known}
    none_known = bool(counts) and bool(known) and len(missing) == len(counts)
    recorded = nlp.meta.get(META_KEY)
    split = corpus_split(corpus)
    other = _other_corpus(recorded, Path(corpus), split, corpus_sha) if isinstance(recorded, dict) else None
    return {
        "split": split,
        "gold_labels": dict(counts.most_common()),
        "model_labels": known,
        "labels_missing": missing,
        "no_label_known": none_known,
        "trained_on": recorded if isinstance(recorded, dict) else None,
        "other_corpus": other,
        "warning": _warning(model, corpus, known, missing, none_known, other),
    }


def _other_corpus(recorded: dict, corpus: Path, split: Optional[str], corpus_sha: str) -> Optional[str]:
    """Why `corpus` is not of the conversion the model was trained on, or None where it is or nothing tells.

    The corpus is one of the training corpora itself; else dev must be the recorded dev corpus; test (or
    any corpus with a dev.spacy beside it) is of another conversion when that dev.spacy is not the recorded
    one, and split.json beside it then says what it was converted from."""
    try:
        shas = {recorded["train"]["sha256"], recorded["dev"]["sha256"]}
        dev_sha, dev_path = recorded["dev"]["sha256"], recorded["dev"]["path"]
    except (KeyError, TypeError):
        return None
    if corpus_sha in shas:
        return None
    trained = f"the model was trained with dev corpus {dev_path}"
    sources = recorded.get("converted_from")
    if isinstance(sources, dict) and (sources.get("dev") or sources.get("train")):
        trained += f" (converted from {sources.get('dev') or sources['train']})"
    if split == "dev":
        if Path(str(dev_path)).resolve() == corpus.resolve():  # the same file, converted again since
            return f"{corpus} was converted again since the model was trained with it: {trained}"
        return f"{corpus} is not the dev corpus the model was trained with: {trained}"
    sibling = corpus.parent / "dev.spacy"
    if not sibling.is_file() or content_sha256(sibling) == dev_sha:
        return None
    now = read_split_record(corpus.parent)
    source = ""
    if now is not None and isinstance(now.get("sources"), dict) and now["sources"].get("train"):
        source = f", from {now['sources']['train']}"
    return f"{corpus} comes from another conversion than the model's corpora ({corpus.parent} was converted again{source}): {trained}"


def _warning(
    model: Path, corpus: Path, known: List[str], missing: Dict[str, int], none_known: bool, other: Optional[str]
) -> Optional[str]:
    if not missing and other is None:
        return None
    parts = []
    lacking = ", ".join(f"{label} ({n})" for label, n in missing.items())
    if none_known:
        parts.append(
            f"{model} knows none of {corpus}'s gold labels: {lacking} entities, against its labels "
            f"{', '.join(known)}. These scores mean nothing for this corpus"
        )
    elif missing:
        parts.append(f"{model} lacks gold labels of {corpus}: {lacking} entities it can never predict")
    if other is not None:
        parts.append(other)
    return (
        "; ".join(parts) + ". Evaluate a model trained on this corpus (`spacy project run train` after `convert`), "
        "or convert the corpus the model was trained on."
    )
