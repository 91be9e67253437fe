"""Entity-level scores beyond spaCy's Scorer: untyped F, error kinds, a label confusion table, and the calibration
and ranking quality of the predicted entities' scores (reliability bins, ECE, AUROC, a threshold table)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example

from ..corpus.tokenizer_fit import char_range, detokenize
from ..pipeline.token_ner import SPANS_KEY

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
    predicted = [drop_transformer_output(doc) for doc in nlp.pipe(inputs, batch_size=batch_size)]
    seconds = time.perf_counter() - start
    return [Example(p, g) for p, g in zip(predicted, gold)], seconds


def drop_transformer_output(doc: Doc) -> Doc:
    """`doc` without the transformer's output (doc._.trf_data: every wordpiece's hidden state, on the GPU
    where the pipeline runs there), which nothing after prediction reads: held for every doc of a corpus, it
    would grow memory with the corpus. As spaCy's `doc_cleaner` component does."""
    if Doc.has_extension("trf_data") and doc._.trf_data is not None:
        doc._.trf_data = None
    doc.tensor = None
    return doc


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


RAW_TEXT_NOTE = (
    "The pipeline run on each document's raw text, rebuilt from the gold tokens as convert's tokenizer fit check "
    "rebuilds it (tokenizer_fit.detokenize), and tokenized by the pipeline's own tokenizer, as predict, review "
    "and serve see new text; an entity is right when its character offsets and label match a gold entity's. "
    "reachable: the share of gold entities whose start and end fall on the pipeline's token boundaries."
)


def raw_text_metrics(nlp: Language, gold: Sequence[Doc], batch_size: int = 128) -> dict:
    """Typed P/R/F overall and per label, by character offsets, of `nlp` on the raw text of the gold docs:
    the score a user gets on new text, beside the one on the gold tokens (which the tokenizer never cuts
    differently)."""
    texts: List[str] = []
    gold_spans: List[set] = []
    for doc in gold:
        words = [token.text for token in doc]
        text, starts = detokenize(words)
        texts.append(text)
        gold_spans.append({(*char_range(words, starts, e.start, e.end), e.label_) for e in doc.ents})
    counts: Dict[str, Counter] = defaultdict(Counter)
    reachable = 0
    for doc, wanted in zip(nlp.pipe(texts, batch_size=batch_size), gold_spans):
        found = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        reachable += sum(doc.char_span(start, end) is not None for start, end, _ in wanted)
        for span in found:
            counts[span[2]]["tp" if span in wanted else "fp"] += 1
        for span in wanted - found:
            counts[span[2]]["fn"] += 1
        drop_transformer_output(doc)
    total = sum(counts.values(), Counter())
    n_gold = sum(len(spans) for spans in gold_spans)
    return {
        **_prf(total["tp"], total["fp"], total["fn"]),
        "gold_entities": n_gold,
        "predicted_entities": total["tp"] + total["fp"],
        "reachable": reachable / n_gold if n_gold else 1.0,
        "per_label": {
            label: {**_prf(c["tp"], c["fp"], c["fn"]), "support": c["tp"] + c["fn"]}
            for label, c in sorted(counts.items())
        },
        "note": RAW_TEXT_NOTE,
    }


def confusion_labels(confusion: Dict[str, Dict[str, int]]) -> Tuple[List[str], List[str]]:
    rows = sorted(k for k in confusion if k != SPURIOUS) + ([SPURIOUS] if SPURIOUS in confusion else [])
    cols = sorted({c for row in confusion.values() for c in row} - {MISSED})
    return rows, cols + ([MISSED] if any(MISSED in row for row in confusion.values()) else [])


# --- Entity confidence: calibration and ranking of the predicted entities' scores ----------------------
# Plain numpy on two parallel lists: each predicted entity's score (a probability) and whether it is correct,
# i.e. its span and label exactly match a gold entity.

ECE_BINS = 10
# min_score values of the threshold table (evaluate's "confidence" block, report.md)
THRESHOLDS = tuple(round(0.1 * i, 2) for i in range(10)) + (0.95,)


class EntityScores(NamedTuple):
    """Every predicted entity of a corpus, in document order: its score at the component's temperature, at T = 1,
    and whether it is exactly (span and label) a gold entity."""

    scores: numpy.ndarray
    scores_t1: numpy.ndarray
    correct: numpy.ndarray


def _scores_and_flags(scores: Sequence[float], correct: Sequence[bool]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    s = numpy.asarray(scores, dtype="float64").reshape(-1)
    c = numpy.asarray(correct, dtype=bool).reshape(-1)
    if s.shape != c.shape:
        raise ValueError(f"{s.size} scores but {c.size} correctness flags")
    if s.size and (numpy.isnan(s).any() or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be probabilities in [0, 1]")
    return s, c


def _bin_index(scores: numpy.ndarray, bins: int) -> numpy.ndarray:
    """Equal-width bins over [0, 1]: bin b holds scores in [b/bins, (b+1)/bins), the last one also 1.0."""
    return numpy.clip(numpy.floor(scores * bins).astype("int64"), 0, bins - 1)


def reliability(scores: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> List[dict]:
    """Per equal-width score bin ([lo, hi), the last closed): count, mean score and accuracy (None when empty)."""
    s, c = _scores_and_flags(scores, correct)
    index = _bin_index(s, bins)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "count": n,
                "confidence": float(s[inside].mean()) if n else None,
                "accuracy": float(c[inside].mean()) if n else None,
            }
        )
    return rows


def expected_calibration_error(
    scores: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> Optional[float]:
    """ECE = Σ_b (n_b / N) · |accuracy_b − mean score_b| over `bins` equal-width bins of [0, 1] (10: the usual).

    The average gap between how sure the scores are and how often they are right; 0 is perfectly
    calibrated. None without any entity.
    """
    s, c = _scores_and_flags(scores, correct)
    if not s.size:
        return None
    return float(
        sum(
            row["count"] / s.size * abs(row["accuracy"] - row["confidence"])
            for row in reliability(s, c, bins)
            if row["count"]
        )
    )


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> Optional[float]:
    """P(a correct entity scores higher than a wrong one), ties counted half (Mann-Whitney U / (n_correct · n_wrong)).

    1.0: the score ranks every correct entity above every wrong one; 0.5: no better than chance. None when
    the entities are all correct or all wrong (no pair to compare).
    """
    s, c = _scores_and_flags(scores, correct)
    n_pos, n_neg = int(c.sum()), int((~c).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = numpy.unique(s, return_inverse=True, return_counts=True)
    # why average ranks: tied scores share the mean of their ranks, which counts each tied pair as half
    average_rank = numpy.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[numpy.asarray(inverse).reshape(-1)]
    u = ranks[c].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_table(
    scores: Sequence[float], correct: Sequence[bool], n_gold: int, thresholds: Sequence[float] = THRESHOLDS
) -> List[dict]:
    """For each min_score: the predicted entities kept (score >= min_score), how many are correct, and their
    precision, recall (against all `n_gold` gold entities, also those never predicted) and F.

    Precision is 0.0 when nothing is kept (as spaCy's scorer does).
    """
    s, c = _scores_and_flags(scores, correct)
    rows = []
    for threshold in thresholds:
        kept = s >= threshold
        tp = int((kept & c).sum())
        n_kept = int(kept.sum())
        rows.append(
            {"min_score": float(threshold), "kept": n_kept, "correct": tp, **_prf(tp, n_kept - tp, max(0, n_gold - tp))}
        )
    return rows


def entity_scores(examples: Iterable[Example], key: str = SPANS_KEY) -> Optional[EntityScores]:
    """The predicted entities' scores (doc.spans[key].attrs "scores" and "scores_t1") and correctness
    (span and label exactly a reference entity) over `examples`; None when the predicted docs carry no scores
    (a pipeline without token_ner, e.g. spaCy's transition `ner`, or token_ner with spans_key None).
    """
    scores: List[numpy.ndarray] = []
    scores_t1: List[numpy.ndarray] = []
    correct: List[bool] = []
    for eg in examples:
        group = eg.predicted.spans.get(key) if key else None
        if group is None or "scores" not in group.attrs or "scores_t1" not in group.attrs:
            return None
        gold = {(s.start, s.end, s.label_) for s in eg.get_aligned_spans_y2x(eg.reference.ents)}
        s = numpy.asarray(group.attrs["scores"], dtype="float64").reshape(-1)
        t1 = numpy.asarray(group.attrs["scores_t1"], dtype="float64").reshape(-1)
        if not (len(s) == len(t1) == len(group)):
            raise ValueError(f"doc.spans[{key!r}] holds {len(group)} spans but {len(s)} scores and {len(t1)} scores_t1")
        scores.append(s)
        scores_t1.append(t1)
        correct += [(span.start, span.end, span.label_) in gold for span in group]
    if not scores:
        return None
    return EntityScores(numpy.concatenate(scores), numpy.concatenate(scores_t1), numpy.asarray(correct, dtype=bool))
