"""Running a pipeline over documents: long texts split into chunks that join back exactly, entities
read with their scores, a batch at a time, with a one-by-one fallback so that one bad document costs only
itself. Both engines (local and Ray) and `review` and `serve` go through here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch
from wasabi import msg

from ..errors import SetupError, first_line
from ..scoring import scores_by_span, scoring_ner, unscored_ner
from .inputs import InputProblems, Text, input_files, read_texts

Span = Tuple[int, int, str]  # word start, word end, label


@dataclass
class Piece:
    """What the pipeline found in one chunk of a text, without the Doc (which may hold large tensors)."""

    entities: List[dict]  # offsets within the chunk
    words: List[str]
    spans: List[Span]
    dropped: int = 0  # entities under min_score, left out of `entities` and `spans`
    unscored: int = 0  # entities of a scoring pipeline that came without a score (set by another component)
    confidence: Optional[float] = None  # the lowest token confidence of the chunk, where it was asked for


@dataclass
class Prediction:
    where: str
    record: dict
    words: List[str]
    spans: List[Span]
    split: bool
    dropped: int = 0
    unscored: int = 0
    confidence: Optional[float] = None  # the lowest over the chunks (None: not asked for)


# -- long texts ----------------------------------------------------------------------------------------

# Where a long text is cut, best first: after a blank line, after a sentence end or a newline, after
# any whitespace. Each match ends the chunk with its whitespace, so the next chunk starts with text.
CUTS = (re.compile(r"\n[^\S\n]*\n\s*"), re.compile(r"[.?!]\s+|\n\s*"), re.compile(r"\s+"))


def split_text(text: str, max_length: int) -> List[Tuple[int, str]]:
    """(offset, chunk) pieces of at most `max_length` characters that join back into `text` exactly."""
    pieces: List[Tuple[int, str]] = []
    start = 0
    while len(text) - start > max_length:
        window = text[start : start + max_length]
        end = len(window)  # a hard cut when the window holds no whitespace at all
        for pattern in CUTS:
            last = None
            for last in pattern.finditer(window):
                pass
            if last is not None:
                end = last.end()
                break
        pieces.append((start, window[:end]))
        start += end
    pieces.append((start, text[start:]))
    return pieces


# -- prediction ----------------------------------------------------------------------------------------


def doc_piece(doc: Doc, spans_key: Optional[str] = None, min_score: float = 0.0) -> Piece:
    """Entities with character offsets (and scores, from doc.spans[spans_key]); words and entity spans
    without whitespace tokens, which IOB lines cannot hold. Entities scored under `min_score` are left
    out of both; an entity without a score is kept (nothing says it is under)."""
    scores = scores_by_span(doc, spans_key)
    entities, kept, dropped, unscored = [], [], 0, 0
    for ent in doc.ents:
        score = scores.get((ent.start, ent.end, ent.label_))
        if score is not None and score < min_score:
            dropped += 1
            continue
        record = {"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char}
        if score is not None:
            record["score"] = round(score, 4)
        elif spans_key:
            unscored += 1
        entities.append(record)
        kept.append(ent)
    keep = [i for i, token in enumerate(doc) if not token.is_space]
    index = {old: new for new, old in enumerate(keep)}
    spans = []
    for ent in kept:
        inside = [index[i] for i in range(ent.start, ent.end) if i in index]
        if inside:
            spans.append((inside[0], inside[-1] + 1, ent.label_))
    return Piece(entities, [doc[i].text for i in keep], spans, dropped=dropped, unscored=unscored)


@dataclass
class Reading:
    """How a batch of processed docs becomes pieces: entity scores from doc.spans[spans_key] (None: the
    pipeline gives none), entities under `min_score` left out and, with `confidence` (token_ner's
    token_confidence), each chunk's lowest token confidence."""

    spans_key: Optional[str] = None
    min_score: float = 0.0
    confidence: Optional[Callable[[List[Doc]], list]] = None

    def __call__(self, docs: List[Doc]) -> List[Piece]:
        pieces = [doc_piece(doc, self.spans_key, self.min_score) for doc in docs]
        if self.confidence is not None:
            for piece, values in zip(pieces, self.confidence(docs)):
                piece.confidence = float(values.min()) if len(values) else None
        return pieces


def run_pipeline(
    nlp: Language, chunks: Sequence[str], batch_size: int, reading: Callable[[List[Doc]], List[Piece]]
) -> List[Piece]:
    """The pieces of `chunks`, read a batch of docs at a time (token_confidence reruns the head on a batch)."""
    pieces: List[Piece] = []
    for docs in minibatch(nlp.pipe(chunks, batch_size=batch_size), size=batch_size):
        pieces += reading(list(docs))
    return pieces


def merge(text: Text, offsets: Sequence[int], pieces: Sequence[Piece]) -> Prediction:
    """One record for one input document: chunk offsets shifted into the full text, words concatenated."""
    entities: List[dict] = []
    words: List[str] = []
    spans: List[Span] = []
    for offset, piece in zip(offsets, pieces):
        entities += [{**e, "start": e["start"] + offset, "end": e["end"] + offset} for e in piece.entities]
        spans += [(s + len(words), e + len(words), label) for s, e, label in piece.spans]
        words += piece.words
    record = {"id": text.id, "text": text.text, "entities": entities}
    confidences = [p.confidence for p in pieces if p.confidence is not None]
    return Prediction(
        text.where,
        record,
        words,
        spans,
        split=len(pieces) > 1,
        dropped=sum(p.dropped for p in pieces),
        unscored=sum(p.unscored for p in pieces),
        confidence=min(confidences) if confidences else None,
    )


def predictions(
    nlp: Language,
    texts: Iterable[Text],
    problems: InputProblems,
    *,
    batch_size: int,
    max_length: int,
    reading: Optional[Callable[[List[Doc]], List[Piece]]] = None,
) -> Iterator[Prediction]:
    """Predictions in input order, a batch of documents at a time; `reading` (default: plain Reading())
    turns the processed docs into pieces."""
    reading = reading or Reading()
    texts = iter(texts)
    while True:
        batch = list(islice(texts, batch_size))
        if not batch:
            return
        chunked = [split_text(t.text, max_length) for t in batch]
        try:
            pieces = run_pipeline(nlp, [c for cs in chunked for _, c in cs], batch_size, reading)
        except Exception:
            # One bad document must not cost its batch: rerun one at a time, skip only those that fail.
            # Nothing of the failed batch was yielded yet, so every good document comes out exactly once.
            yield from _one_by_one(nlp, batch, chunked, problems, reading)
            continue
        at = 0
        for text, chunks in zip(batch, chunked):
            yield merge(text, [o for o, _ in chunks], pieces[at : at + len(chunks)])
            at += len(chunks)


def _one_by_one(
    nlp: Language,
    batch: Sequence[Text],
    chunked: Sequence[List[Tuple[int, str]]],
    problems: InputProblems,
    reading: Callable[[List[Doc]], List[Piece]],
) -> Iterator[Prediction]:
    for text, chunks in zip(batch, chunked):
        try:
            pieces = run_pipeline(nlp, [c for _, c in chunks], len(chunks), reading)
        except Exception as err:
            problems.skip(
                text.where, f"the pipeline failed ({type(err).__name__}: {first_line(err)})", "pipeline error"
            )
            continue
        yield merge(text, [o for o, _ in chunks], pieces)


def check_settings(batch_size: int, max_length: Optional[int], min_score: float) -> None:
    """The checks on predict's numbers that both engines make before anything starts."""
    if batch_size < 1:
        raise SetupError(f"batch_size must be at least 1, not {batch_size}")
    if max_length is not None and max_length < 1:
        raise SetupError(f"max_length must be at least 1 (or 0: the pipeline's own), not {max_length}")
    check_min_score(min_score)


def check_min_score(min_score: float) -> None:
    """predict's and serve's threshold on entity probabilities: one sentence when it cannot be one."""
    if not 0.0 <= min_score <= 1.0:
        raise SetupError(f"min_score must be a probability between 0 and 1, not {min_score:g}")


def load_pipeline(model: Path) -> Language:
    if not model.is_dir() and not spacy.util.is_package(str(model)):
        raise SetupError(f"the model {model} is neither a pipeline folder nor an installed pipeline package")
    try:
        return spacy.load(model if model.is_dir() else str(model))
    except Exception as err:  # any failure here means "not a usable pipeline": one sentence, no traceback
        raise SetupError(f"cannot load the pipeline {model} ({first_line(err)})") from None


def entity_reading(nlp: Language, min_score: float = 0.0) -> Reading:
    """How predict reads entities: with the scoring NER's scores, or (said once, with a warning) without.

    A min_score above 0 needs scores: without them it stops with one sentence (SetupError)."""
    scorer = scoring_ner(nlp)
    if scorer is None:
        who = unscored_ner(nlp)
        if min_score > 0:
            raise SetupError(
                f"min_score {min_score:g} needs entity scores, and {who} gives none "
                f"(train with ner_head token, the default, or leave min_score at 0)"
            )
        msg.warn(f"{who} gives no entity scores: records have no score")
        return Reading()
    return Reading(spans_key=scorer.spans_key, min_score=min_score)


def source_predictions(
    nlp: Language,
    source: Path,
    outputs: Sequence[Path],
    reading: Callable[[List[Doc]], List[Piece]],
    *,
    batch_size: int,
    max_length: Optional[int],
    lines: bool,
    progress: str = "",
) -> Tuple[Iterator[Prediction], InputProblems]:
    """The predictions for every document of `source` (a file or folder, `outputs` never read as input), in
    order, and the problems met reading it; texts over `max_length` (default: nlp.max_length) are split.
    `progress`: a tqdm bar with that name. What predict's local engine and review share."""
    limit = max_length or nlp.max_length
    nlp.max_length = limit  # chunks of `limit` characters must pass the pipeline's own length check
    files = input_files(source, exclude=outputs)
    problems = InputProblems()
    texts = read_texts(files, problems, lines=lines, root=source if source.is_dir() else None)
    found = predictions(nlp, texts, problems, batch_size=batch_size, max_length=limit, reading=reading)
    if progress:
        from tqdm import tqdm

        found = tqdm(found, unit="doc", desc=progress, leave=False, mininterval=2)
    return found, problems
