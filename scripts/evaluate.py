"""Score a trained pipeline on a corpus: metrics JSON (overall, per label, untyped, confusion, entity confidence)
and predictions."""
import json
from pathlib import Path
from typing import Any, List, Optional, Tuple

import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg

from iob_ner.corpus import read_docs
from iob_ner.metrics import (ECE_BINS, THRESHOLDS, auroc, entity_metrics, entity_scores, expected_calibration_error,
                             predict_gold, reliability, threshold_table)
from iob_ner.outputs import atomic_outputs
from iob_ner.runtime import SetupError, parse_gpu_id, select_device

NO_SCORES = "the NER head gives no entity scores (spaCy's transition-based `ner` has none): no calibration to measure"
CONFIDENCE_NOTE = (f"Scores: each predicted entity's probability at the component's temperature ('after') and at T = 1 "
                   f"('before'). ECE = sum over {ECE_BINS} equal-width score bins of n_b/N * |accuracy_b - mean score_b|. "
                   f"AUROC: P(a correct entity scores above a wrong one), ties half. Thresholds: P/R/F of the entities "
                   f"with score >= min_score, R against all gold entities.")


def scoring_component(nlp) -> Optional[Tuple[str, Any]]:
    """(name, pipe) of the first component that scores its entities (token_ner: it can fit a temperature)."""
    return next(((name, pipe) for name, pipe in nlp.pipeline if hasattr(pipe, "fit_temperature")), None)


def confidence_metrics(nlp, examples: List, n_gold: int) -> Tuple[Optional[dict], Optional[str]]:
    """(the "confidence" block, None), or (None, one line saying why the predictions carry no entity scores)."""
    found = scoring_component(nlp)
    if found is None:
        return None, NO_SCORES
    name, pipe = found
    key = getattr(pipe, "spans_key", None)
    if not key:
        return None, f"the entity scores are switched off (component '{name}' has spans_key = null)"
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


def evaluate_pipeline(*, model: Path, corpus: Path, output: Path, predictions: Optional[Path] = None,
                      gpu_id: Optional[int] = -1, batch_size: int = 128) -> dict:
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
    metrics.update({"model": str(model), "corpus": str(corpus), "device": device, "words": words,
                    "words_per_second": round(words / seconds, 1)})
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


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    corpus: Path = typer.Argument(..., exists=True),
    output: Path = typer.Argument(..., help="Metrics JSON"),
    predictions: Optional[Path] = typer.Option(None, help="Also save the predicted docs (.spacy)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
) -> None:
    try:
        m = evaluate_pipeline(model=model, corpus=corpus, output=output, predictions=predictions, gpu_id=parse_gpu_id(gpu_id))
    except SetupError as err:
        msg.fail(str(err), exits=1)
    rows = [(label, f"{s['p']:.3f}", f"{s['r']:.3f}", f"{s['f']:.3f}", s["support"]) for label, s in m["per_label"].items()]
    rows.append(("ALL (typed)", f"{m['typed']['p']:.3f}", f"{m['typed']['r']:.3f}", f"{m['typed']['f']:.3f}", m["gold_entities"]))
    rows.append(("ALL (untyped)", f"{m['untyped']['p']:.3f}", f"{m['untyped']['r']:.3f}", f"{m['untyped']['f']:.3f}", m["gold_entities"]))
    msg.table(rows, header=("label", "P", "R", "F", "support"), divider=True)
    confidence = m["confidence"]
    if confidence is None:
        msg.info(f"No entity confidence: {m['confidence_note']}")
    else:
        def number(value: Optional[float]) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        sampled = f", means over {confidence['samples']} dropout passes" if confidence.get("samples") else ""
        msg.info(f"Entity confidence ({confidence['entities']} predicted entities{sampled}, temperature "
                 f"{confidence['temperature']:.3g}): ECE {number(confidence['ece_before'])} at T = 1 -> "
                 f"{number(confidence['ece_after'])} ({confidence['bins']} bins), AUROC {number(confidence['auroc'])}")
    msg.good(f"{corpus}: {m['examples']} documents, {m['words']} words at {m['words_per_second']:.0f} words/s "
             f"on {m['device']} -> {output}")


if __name__ == "__main__":
    typer.run(main)
