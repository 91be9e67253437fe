"""Review queue: the N documents the model is least sure of, pre-annotated, for an annotator to correct.

Runs the pipeline on unlabelled texts (the inputs predict reads: .txt files, a folder of them, or JSONL;
bad inputs are named, skipped and counted the same way) and writes the N least sure documents as
UBIAI-importable IOB (the shape predict writes) and as JSONL (predict's records, entities with their
"score", plus "doc_score", "rank" and "doc_score_rule"). Correct them in UBIAI, export, add the export
to the training data and run `spacy project run all` again.

The rule: a document's score is the lowest, over its tokens, of the probability of the tag the model gave
the token (token_ner's token_confidence, O included: a probable entity the model left out lowers it too).
Least sure first; equal scores keep the input order. A text longer than max_length is split as predict
splits it, and its score is the lowest over its chunks. spaCy's transition `ner` gives no probabilities,
so there is nothing to rank by: review stops with one sentence.

Memory stays bounded: the documents stream through the pipeline and only the N lowest so far are kept
(in a heap), with what writing them needs. The outputs appear whole or not at all.
"""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path
from typing import List, Optional, Tuple

from wasabi import msg

from ..iob.writer import write_iob
from ..pipeline.scoring import scoring_ner, unscored_ner
from ..util.errors import SetupError
from ..util.outputs import atomic_outputs, check_outputs
from ..util.runtime import select_device
from . import skipped_text
from .inputs import check_something_read
from .pipeline import BATCH_CHARS, Prediction, Reading, check_settings, load_pipeline, source_predictions

RULE = (
    "doc_score = the lowest, over the document's tokens, of the probability of the tag the model gave the "
    "token (O included, so a probable entity the model left out lowers it too); least sure first, "
    "ties in input order"
)


def least_sure(found, n: int) -> Tuple[List[Tuple[float, int, Prediction]], int]:
    """The `n` predictions with the lowest confidence, as (score, input index, prediction) in rank order, and
    how many were seen. Keeps at most `n` at a time: a max-heap on (score, index), whose top is the one to
    drop next; a later document with an equal score never displaces an earlier one."""
    heap: List[Tuple[float, int, Prediction]] = []  # (-score, -index, prediction)
    seen = 0
    for index, prediction in enumerate(found):
        seen += 1
        score = prediction.confidence if prediction.confidence is not None else 1.0  # no token: nothing unsure
        if not math.isfinite(score):  # a broken probability is the least sure of all, never silently last
            score = 0.0
        entry = (-score, -index, prediction)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif score < -heap[0][0]:
            heapq.heapreplace(heap, entry)
    ranked = sorted(((-s, -i, p) for s, i, p in heap), key=lambda row: (row[0], row[1]))
    return ranked, seen


def review(
    *,
    model: Path,
    source: Path,
    output_jsonl: Path,
    output_iob: Optional[Path],
    n: int = 50,
    gpu_id: Optional[int] = -1,
    batch_size: int = 64,
    lines: bool = False,
    max_length: Optional[int] = None,
    batch_chars: int = BATCH_CHARS,
    progress: bool = True,
) -> dict:
    """Write the `n` documents of `source` the model is least sure of (RULE), least sure first; returns counts."""
    if n < 1:
        raise SetupError(f"n (the documents to write) must be at least 1, not {n}")
    check_settings(batch_size, max_length, 0.0, batch_chars)
    check_outputs(source, [output_jsonl, output_iob], ["the JSONL output", "the IOB output"])
    _, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    scorer = scoring_ner(nlp)
    confidence = None
    if scorer is not None:
        confidence = getattr(scorer.pipe, "token_confidence", None)
    else:  # a token_ner whose spans_key is null still ranks: only the entity scores are missing
        for name, pipe in nlp.pipeline:
            if callable(getattr(pipe, "token_confidence", None)) and "doc.ents" in nlp.get_pipe_meta(name).assigns:
                confidence = pipe.token_confidence
    if not callable(confidence):
        raise SetupError(
            f"review ranks documents by the token probabilities of the NER, and {unscored_ner(nlp)} "
            f"gives none (train with ner_head token, the default)"
        )
    if scorer is None:
        msg.warn(f"{unscored_ner(nlp)} gives no entity scores: records have no score")
    reading = Reading(
        spans_key=scorer.spans_key if scorer else None, confidence=confidence, words=output_iob is not None
    )
    outputs = [output_jsonl] + ([output_iob] if output_iob is not None else [])
    found, problems = source_predictions(
        nlp,
        source,
        outputs,
        reading,
        batch_size=batch_size,
        max_length=max_length,
        lines=lines,
        batch_chars=batch_chars,
        progress="review" if progress else "",
    )
    ranked, seen = least_sure(found, n)
    check_something_read(seen, source, problems, outputs)
    with atomic_outputs(*outputs) as temps:
        with temps[0].open("w", encoding="utf8") as out:
            for rank, (score, _, prediction) in enumerate(ranked, 1):
                record = {**prediction.record, "doc_score": round(score, 4), "rank": rank, "doc_score_rule": RULE}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        if output_iob is not None:
            with temps[1].open("w", encoding="utf8", newline="") as iob_file:
                write_iob(iob_file, ((p.words, p.spans, [0]) for _, _, p in ranked if p.words))
    scores = [score for score, _, _ in ranked]
    return {
        "read": seen,
        "skipped": problems.count,
        "skipped_reasons": dict(problems.reasons),
        "written": len(ranked),
        "entities": sum(len(p.record["entities"]) for _, _, p in ranked),
        "split": sum(p.split for _, _, p in ranked),
        "score_min": min(scores) if scores else None,
        "score_max": max(scores) if scores else None,
        "n": n,
        "device": device,
    }


def review_summary(result: dict, outputs: List[Path]) -> str:
    scores = f", doc scores {result['score_min']:.4f} to {result['score_max']:.4f}" if result["written"] else ""
    return (
        f"{result['written']} of {result['read']} document(s) written, least sure first (n = {result['n']})"
        f"{scores}, {result['entities']} entities, {skipped_text(result)}, on {result['device']} -> "
        f"{', '.join(str(p) for p in outputs)}"
    )
