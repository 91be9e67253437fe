"""Scoring a trained pipeline on a corpus: metrics JSON (overall, per label, untyped, confusion, entity confidence)
and predictions."""

import json
from pathlib import Path
from typing import List, Optional, Tuple

import spacy
from spacy.tokens import DocBin

from ..corpus.convert import read_docs
from ..pipeline.scoring import scoring_ner, switched_off_scorer
from ..util.errors import SetupError
from ..util.outputs import atomic_outputs, content_sha256
from ..util.runtime import select_device
from .metrics import (
    ECE_BINS,
    THRESHOLDS,
    auroc,
    entity_metrics,
    entity_scores,
    expected_calibration_error,
    predict_gold,
    raw_text_metrics,
    reliability,
    threshold_table,
)
from .trained_on import check_corpus

NO_SCORES = "the NER head gives no entity scores (spaCy's transition-based `ner` has none): no calibration to measure"
CONFIDENCE_NOTE = (
    f"Scores: each predicted entity's probability at the component's temperature ('after') and at T = 1 "
    f"('before'). ECE = sum over {ECE_BINS} equal-width score bins of n_b/N * |accuracy_b - mean score_b|. "
    f"AUROC: P(a correct entity scores above a wrong one), ties half. Thresholds: P/R/F of the entities "
    f"with score >= min_score, R against all gold entities."
)


def confidence_metrics(nlp, examples: List, n_gold: int) -> Tuple[Optional[dict], Optional[str]]:
    """(the "confidence" block, None), or (None, one line saying why the predictions carry no entity scores)."""
    found = scoring_ner(nlp)
    if found is None:
        off = switched_off_scorer(nlp)
        if off is not None:
            return None, f"the entity scores are switched off (component '{off}' has spans_key = null)"
        return None, NO_SCORES
    name, pipe, key = found.name, found.pipe, found.spans_key
    scored = entity_scores(examples, key)
    if scored is None:
        return None, f"the predicted docs carry no entity scores in doc.spans['{key}']"
    return {
        "component": name,
        "spans_key": key,
        # the temperature of the scores written: of the dropout samples' means when samples > 0
        "temperature": float(getattr(pipe, "score_temperature", pipe.cfg.get("temperature", 1.0))),
        "samples": int(getattr(pipe, "samples", 0)),
        "entities": int(scored.correct.size),
        "correct": int(scored.correct.sum()),
        "gold_entities": n_gold,
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(scored.scores_t1, scored.correct),
        "ece_after": expected_calibration_error(scored.scores, scored.correct),
        "auroc": auroc(scored.scores, scored.correct),
        "reliability_before": reliability(scored.scores_t1, scored.correct),
        "reliability_after": reliability(scored.scores, scored.correct),
        "thresholds": threshold_table(scored.scores, scored.correct, n_gold, THRESHOLDS),
        "note": CONFIDENCE_NOTE,
    }, None


def evaluate_pipeline(
    *,
    model: Path,
    corpus: Path,
    output: Path,
    predictions: Optional[Path] = None,
    gpu_id: Optional[int] = -1,
    batch_size: int = 128,
) -> dict:
    _, device = select_device(gpu_id)
    nlp = spacy.load(model)
    try:
        gold = list(read_docs(corpus, nlp.vocab))
    except (ValueError, KeyError, TypeError) as err:  # spaCy's E1014, msgpack's errors: not a DocBin
        raise SetupError(f"{corpus} is not a spaCy DocBin (.spacy): make it with `spacy project run convert`") from err
    if not gold:
        raise SetupError(f"{corpus} holds no documents")
    examples, seconds = predict_gold(nlp, gold, batch_size=batch_size)
    metrics = entity_metrics(examples)
    words = sum(len(doc) for doc in gold)
    corpus_sha = content_sha256(corpus)
    metrics.update(
        {
            "model": str(model),
            "corpus": str(corpus),
            "device": device,
            "words": words,
            "words_per_second": round(words / seconds, 1),
            # what `report` checks its inputs against: a model trained or a corpus converted since is stale
            "fingerprints": {
                "model": content_sha256(model) if Path(model).exists() else None,
                "corpus": corpus_sha,
            },
            # the gold labels the model lacks, a corpus of another conversion than its training corpora
            "corpus_check": check_corpus(nlp, model, corpus, gold, corpus_sha),
        }
    )
    # the same documents as raw text, cut by the pipeline's tokenizer: what predict gives on new text
    metrics["raw_text"] = raw_text_metrics(nlp, gold, batch_size=batch_size)
    # null, never zeros, where there is nothing to measure: a reader must not take it for a perfect calibration
    metrics["confidence"], note = confidence_metrics(nlp, examples, metrics["gold_entities"])
    if note is not None:
        metrics["confidence_note"] = note
    # Both or neither: metrics beside predictions of another run would disagree in report.md and errors.html.
    with atomic_outputs(*[path for path in (output, predictions) if path is not None]) as temps:
        temps[0].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
        if predictions is not None:
            DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], docs=[eg.predicted for eg in examples]).to_disk(temps[1])
    return metrics
