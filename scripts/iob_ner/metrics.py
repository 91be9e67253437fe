"""Entity-level scores beyond spaCy's Scorer: untyped F, error kinds and a label confusion table."""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Sequence, Tuple

from spacy.scorer import get_ner_prf
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

MISSED, SPURIOUS = "(missed)", "(spurious)"


def _prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def predict_gold(nlp: Language, gold: Sequence[Doc], batch_size: int = 128) -> Tuple[List[Example], float]:
    """Run `nlp` on the words of gold docs: (examples pairing prediction and gold, seconds of nlp.pipe).

    The pipeline's last step copies scores to the CPU, so the time is the whole work, on a GPU too.
    """
    inputs = [Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in gold]
    start = time.perf_counter()
    predicted = list(nlp.pipe(inputs, batch_size=batch_size))
    seconds = time.perf_counter() - start
    return [Example(p, g) for p, g in zip(predicted, gold)], seconds


def entity_metrics(examples: Iterable[Example]) -> dict:
    """Typed P/R/F overall and per label (spaCy's scorer), untyped F, error kinds and confusion."""
    examples = list(examples)
    scores = get_ner_prf(examples)
    support: Counter = Counter()
    untyped = Counter()
    errors = Counter()
    confusion: Dict[str, Counter] = defaultdict(Counter)
    for eg in examples:
        gold = {(e.start, e.end): e.label_ for e in eg.reference.ents}
        pred = {(e.start, e.end): e.label_ for e in eg.predicted.ents}
        support.update(gold.values())
        untyped["tp"] += len(gold.keys() & pred.keys())
        untyped["fp"] += len(pred.keys() - gold.keys())
        untyped["fn"] += len(gold.keys() - pred.keys())
        for (start, end), label in gold.items():
            overlapping = [(s, e, l) for (s, e), l in pred.items() if s < end and start < e]
            if not overlapping:
                confusion[label][MISSED] += 1
                errors["missed"] += 1
            for s, e, predicted in overlapping:
                confusion[label][predicted] += 1
            if (start, end) in pred:
                errors["correct" if pred[(start, end)] == label else "wrong_label"] += 1
            elif overlapping:
                same = any(l == label for _, _, l in overlapping)
                errors["wrong_boundary" if same else "wrong_label_and_boundary"] += 1
        for (start, end), label in pred.items():
            if not any(s < end and start < e for s, e in gold):
                confusion[SPURIOUS][label] += 1
                errors["spurious"] += 1
    per_type = scores.get("ents_per_type") or {}
    labels = sorted(set(support) | set(per_type))
    return {
        "examples": len(examples),
        "gold_entities": sum(support.values()),
        "predicted_entities": sum(len(eg.predicted.ents) for eg in examples),
        "typed": {"p": scores["ents_p"], "r": scores["ents_r"], "f": scores["ents_f"]},
        "untyped": _prf(untyped["tp"], untyped["fp"], untyped["fn"]),
        "per_label": {
            label: {**{k: per_type.get(label, {}).get(k, 0.0) for k in ("p", "r", "f")}, "support": support[label]}
            for label in labels
        },
        "errors": dict(errors),
        "confusion": {gold: dict(row) for gold, row in sorted(confusion.items())},
    }


def confusion_labels(confusion: Dict[str, Dict[str, int]]) -> Tuple[List[str], List[str]]:
    rows = sorted(k for k in confusion if k != SPURIOUS) + ([SPURIOUS] if SPURIOUS in confusion else [])
    cols = sorted({c for row in confusion.values() for c in row} - {MISSED})
    return rows, cols + ([MISSED] if any(MISSED in row for row in confusion.values()) else [])
