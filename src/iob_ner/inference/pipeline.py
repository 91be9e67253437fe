"""Running a pipeline over documents: each text in bounded passes (`stream`: long texts cut into chunks
that join back exactly, chunks longer than a pass streamed in pieces with the entities of the chunk
whole), entities read with their scores, a batch at a time, with a one-by-one fallback so that one bad
document costs only itself. Both engines (local and Ray) and `review` and `serve` go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import spacy
from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm
from wasabi import msg

from ..pipeline.scoring import scores_by_span, scoring_ner, unscored_ner
from ..util.errors import SetupError, first_line
from ..util.runtime import give_back_freed_memory
from .inputs import InputProblems, Text, input_files, read_texts
from .stream import BATCH_CHARS, Window, passes, piece_chars, pipeline_window, text_parts

Span = Tuple[int, int, str]  # word start, word end, label
Keep = Optional[Tuple[int, int]]  # the tokens of a doc whose entities are its piece's (None: all)


@dataclass
class PartResult:
    """What the pipeline found in one part of a text (a chunk, or a piece of one), without the Doc (which
    may hold large tensors). The part itself, what goes in, is `stream.Part`; this is what comes out of it,
    one for one, and `merge` joins a text's results into its `Prediction`."""

    entities: List[dict]  # offsets within the part's doc, then (part_results) within the text
    words: List[str]  # empty where words are not asked for (no IOB output)
    spans: List[Span]
    dropped: int = 0  # entities under min_score, left out of `entities` and `spans`
    unscored: int = 0  # entities of a scoring pipeline that came without a score (set by another component)
    confidence: Optional[float] = None  # the lowest token confidence of the part, where it was asked for
    chunk: int = 0  # the max_length chunk it belongs to


@dataclass
class Prediction:
    where: str
    record: dict
    words: List[str]
    spans: List[Span]
    split: bool  # cut at max_length into documents of their own (streaming in pieces is not a split)
    dropped: int = 0
    unscored: int = 0
    confidence: Optional[float] = None  # the lowest over the chunks (None: not asked for)


# -- prediction ----------------------------------------------------------------------------------------


def part_result(
    doc: Doc, spans_key: Optional[str] = None, min_score: float = 0.0, keep: Keep = None, words: bool = True
) -> PartResult:
    """Entities with character offsets (and scores, from doc.spans[spans_key]); words and entity spans
    without whitespace tokens, which IOB lines cannot hold. Entities scored under `min_score` are left
    out of both; an entity without a score is kept (nothing says it is under). With `keep`, only the
    entities that start in those tokens, and only their words: the rest of the doc is context."""
    first, end = keep or (0, len(doc))
    scores = scores_by_span(doc, spans_key)
    entities, kept, dropped, unscored = [], [], 0, 0
    for ent in doc.ents:
        if not first <= ent.start < end:
            continue
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
    if not words:
        return PartResult(entities, [], [], dropped=dropped, unscored=unscored)
    # Word numbers count from the piece's first token: an entity that runs on past the piece (its start
    # is the piece's) ends at the numbers the next piece's words take, which merge() puts right after.
    index = {old: new for new, old in enumerate(i for i in range(first, len(doc)) if not doc[i].is_space)}
    spans = []
    for ent in kept:
        inside = [index[i] for i in range(ent.start, ent.end) if i in index]
        if inside:
            spans.append((inside[0], inside[-1] + 1, ent.label_))
    texts = [doc[i].text for i in range(first, end) if not doc[i].is_space]
    return PartResult(entities, texts, spans, dropped=dropped, unscored=unscored)


@dataclass
class Reading:
    """How a batch of processed docs becomes pieces: entity scores from doc.spans[spans_key] (None: the
    pipeline gives none), entities under `min_score` left out, with `confidence` (token_ner's
    token_confidence) each part's lowest token confidence and, with `words`, the words and entity spans
    that IOB output needs (a list of every word of a text: left out where nothing writes IOB)."""

    spans_key: Optional[str] = None
    min_score: float = 0.0
    confidence: Optional[Callable[[List[Doc]], list]] = None
    words: bool = True

    def __call__(self, docs: List[Doc], keeps: Optional[Sequence[Keep]] = None) -> List[PartResult]:
        keeps = keeps or [None] * len(docs)
        pieces = [part_result(doc, self.spans_key, self.min_score, keep, self.words) for doc, keep in zip(docs, keeps)]
        if self.confidence is not None:
            for piece, values, keep in zip(pieces, self.confidence(docs), keeps):
                values = values[slice(*keep)] if keep else values
                piece.confidence = float(values.min()) if len(values) else None
        return pieces


@dataclass(frozen=True)
class PassPlan:
    """How texts go through the pipeline: `batch_size` docs and `batch_chars` characters a pass at most,
    texts over `max_length` cut into documents of their own, chunks over `piece_chars` streamed in pieces
    with the context `window` says. The settings only: `stream.passes` groups the parts into passes."""

    batch_size: int
    max_length: int
    batch_chars: int
    piece_chars: int
    window: Window

    @classmethod
    def of(cls, nlp: Language, batch_size: int, max_length: int, batch_chars: int = BATCH_CHARS) -> "PassPlan":
        return cls(batch_size, max_length, batch_chars, piece_chars(nlp, batch_chars), pipeline_window(nlp))


def part_results(nlp: Language, texts: Sequence[str], plan: PassPlan, reading: Callable) -> List[List[PartResult]]:
    """The pieces of each text, in order, a pass at a time: only one pass's Docs are ever held."""
    found: List[List[PartResult]] = [[] for _ in texts]
    parts = (
        part
        for i, text in enumerate(texts)
        for part in text_parts(nlp, text, i, plan.max_length, plan.piece_chars, plan.window)
    )
    for group in passes(parts, plan.batch_size, plan.batch_chars):
        docs = list(nlp.pipe([part.content for part in group], batch_size=len(group)))
        pieces = reading(docs, [part.keep for part in group])
        # Nothing holds this pass's Docs (and their transformer outputs) past here: two passes never coexist.
        del docs
        for part in group:
            part.content = None
        if sum(part.chars for part in group) * 2 >= plan.batch_chars:  # a big pass: its memory back (4 ms)
            give_back_freed_memory()
        for part, piece in zip(group, pieces):
            for entity in piece.entities:  # in place: a long text's entities are many, never copied
                entity["start"] += part.offset
                entity["end"] += part.offset
            piece.chunk = part.chunk
            found[part.index].append(piece)
    return found


def merge(text: Text, pieces: Sequence[PartResult]) -> Prediction:
    """One record for one input document: the pieces' entities, words concatenated. An entity that
    overlaps the one before it (the previous piece's, run on past its end) is left out: each part of the
    text has one reading."""
    entities: List[dict] = []
    words: List[str] = []
    spans: List[Span] = []
    for piece in pieces:
        for e in piece.entities:
            if not entities or e["start"] >= entities[-1]["end"]:
                entities.append(e)
        for s, e, label in piece.spans:
            if not spans or s + len(words) >= spans[-1][1]:
                spans.append((s + len(words), e + len(words), label))
        words += piece.words
    record = {"id": text.id, "text": text.text, "entities": entities}
    confidences = [p.confidence for p in pieces if p.confidence is not None]
    return Prediction(
        text.where,
        record,
        words,
        spans,
        split=any(p.chunk for p in pieces),
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
    batch_chars: int = BATCH_CHARS,
    reading: Optional[Callable[[List[Doc]], List[PartResult]]] = None,
) -> Iterator[Prediction]:
    """Predictions in input order, a batch of `batch_size` documents at a time (in passes of at most
    `batch_chars` characters); `reading` (default: plain Reading()) turns the processed docs into pieces."""
    reading = reading or Reading()
    plan = PassPlan.of(nlp, batch_size, max_length, batch_chars)
    texts = iter(texts)
    while True:
        batch = list(islice(texts, batch_size))
        if not batch:
            return
        try:
            found = part_results(nlp, [t.text for t in batch], plan, reading)
        except Exception:
            # One bad document must not cost its batch: rerun one at a time, skip only those that fail.
            # Nothing of the failed batch was yielded yet, so every good document comes out exactly once.
            yield from _one_by_one(nlp, batch, plan, problems, reading)
            continue
        for text, pieces in zip(batch, found):
            yield merge(text, pieces)


def _one_by_one(
    nlp: Language, batch: Sequence[Text], plan: PassPlan, problems: InputProblems, reading: Callable
) -> Iterator[Prediction]:
    for text in batch:
        try:
            (pieces,) = part_results(nlp, [text.text], plan, reading)
        except Exception as err:
            problems.skip(
                text.where, f"the pipeline failed ({type(err).__name__}: {first_line(err)})", "pipeline error"
            )
            continue
        yield merge(text, pieces)


def check_settings(
    batch_size: int, max_length: Optional[int], min_score: float, batch_chars: int = BATCH_CHARS
) -> None:
    """The checks on predict's numbers that both engines make before anything starts."""
    if batch_size < 1:
        raise SetupError(f"batch_size must be at least 1, not {batch_size}")
    if batch_chars < 1:
        raise SetupError(f"batch_chars must be at least 1, not {batch_chars}")
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


def entity_reading(nlp: Language, min_score: float = 0.0, words: bool = True) -> Reading:
    """How predict reads entities: with the scoring NER's scores, or (said once, with a warning) without;
    `words`: with the words and spans of IOB output.

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
        return Reading(words=words)
    return Reading(spans_key=scorer.spans_key, min_score=min_score, words=words)


def source_predictions(
    nlp: Language,
    source: Path,
    outputs: Sequence[Path],
    reading: Callable[[List[Doc]], List[PartResult]],
    *,
    batch_size: int,
    max_length: Optional[int],
    lines: bool,
    batch_chars: int = BATCH_CHARS,
    progress: str = "",
) -> Tuple[Iterator[Prediction], InputProblems]:
    """The predictions for every document of `source` (a file or folder, `outputs` never read as input), in
    order, and the problems met reading it; texts over `max_length` (default: nlp.max_length) are split,
    and every pass holds at most `batch_chars` characters. `progress`: a tqdm bar with that name. What
    predict's local engine and review share."""
    limit = max_length or nlp.max_length
    nlp.max_length = limit  # chunks of `limit` characters must pass the pipeline's own length check
    files = input_files(source, exclude=outputs)
    problems = InputProblems()
    texts = read_texts(files, problems, lines=lines, root=source if source.is_dir() else None)
    found = predictions(
        nlp, texts, problems, batch_size=batch_size, max_length=limit, batch_chars=batch_chars, reading=reading
    )
    if progress:
        found = tqdm(found, unit=" docs", desc=progress, leave=False, mininterval=2)  # "12 docs", not "12doc"
    return found, problems
