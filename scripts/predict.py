"""Run a trained pipeline on new text: .txt files, a folder of them, JSONL ({"text": ...} per line) or
Parquet (a `text` column, optionally `id`).

Writes JSONL (one document a line: id, text, entities with character offsets; Parquet where the output
ends in .parquet) and, optionally, an IOB .tsv in the UBIAI export shape for re-import into an
annotation tool. Streams: memory stays bounded. `--engine ray` runs the same pipeline on Ray actors
(scripts/predict_ray.py: local by default, a cluster with RAY_ADDRESS) and writes the same outputs.

Entity scores: where the pipeline's NER gives them (token_ner writes its entities with their probability
to doc.spans[its spans_key]), each entity record has "score", its calibrated probability (4 decimals);
`min_score` leaves the entities below it out of the JSONL and the IOB, and counts them. spaCy's
transition `ner` gives no scores: predict says so once and writes no "score" key (never a made-up 0),
and refuses a min_score above 0.

Nothing is lost at the edges: a document that cannot be processed (not UTF-8, not JSON, empty, or one
the pipeline fails on) is named with its file and line, skipped and counted, and the run goes on; a
text longer than the pipeline's max_length is split, not dropped; the outputs appear whole or not at
all, so an error or a Ctrl-C leaves the previous ones in place.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch
from wasabi import msg

from iob_ner.iob import write_iob
from iob_ner.outputs import atomic_outputs, temporary_name
from iob_ner.runtime import SetupError, parse_gpu_id, select_device

INPUT_SUFFIXES = (".txt", ".jsonl", ".parquet")
ENGINES = ("local", "ray")
BOM = b"\xef\xbb\xbf"
Span = Tuple[int, int, str]  # word start, word end, label


class InputProblems:
    """Documents that cannot be processed: reported with file and line (or file), skipped, counted."""

    def __init__(self) -> None:
        self.reasons: Counter = Counter()

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def skip(self, where: str, why: str, kind: Optional[str] = None) -> None:
        """`kind` groups reasons for the summary (`why` may hold details such as a byte position)."""
        self.reasons[kind or why] += 1
        msg.warn(f"{where}: skipped, {why}")


@dataclass
class Text:
    """One input document."""
    id: str
    where: str  # `file:line` or the file, for messages
    text: str


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


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first line, short enough for a one-line message."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- input ---------------------------------------------------------------------------------------------

def input_files(source: Path, exclude: Sequence[Path] = ()) -> List[Path]:
    """The files to read: `source` itself, or the .txt/.jsonl/.parquet files of a folder (any case), sorted.

    Files with other extensions are named once in a warning instead of vanishing without a word.
    """
    if not source.exists():
        raise SetupError(f"the input {source} does not exist")
    if not source.is_dir():
        return [source]
    # Our own outputs (and their temporary names) must not be read back as input when they sit inside
    # the input folder; hidden files and folders (.DS_Store, .gitkeep, .ipynb_checkpoints) are not input.
    ours = {p.resolve() for p in exclude} | {temporary_name(p).resolve() for p in exclude}
    files: List[Path] = []
    others: List[Path] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if path.resolve() in ours or any(part.startswith(".") for part in relative.parts):
            continue
        (files if path.suffix.lower() in INPUT_SUFFIXES else others).append(path)
    if others:
        examples = ", ".join(p.relative_to(source).as_posix() for p in others[:5])
        examples += ", ..." if len(others) > 5 else ""
        msg.warn(f"skipped {len(others)} file(s) with other extensions: {examples}")
    if not files:
        raise SetupError(f"{source} holds no .txt, .jsonl or .parquet files")
    return files


def decode_utf8(data: bytes, *, whole_file: bool = False) -> Tuple[Optional[str], str]:
    """(text, "") or (None, why). Strict: a Latin-1 byte is reported, never turned into U+FFFD."""
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as err:
        where = f"byte {err.start + 1}"
        if whole_file:
            line, column = data.count(b"\n", 0, err.start) + 1, err.start - data.rfind(b"\n", 0, err.start)
            where = f"line {line}, column {column}"
        return None, f"not UTF-8 ({err.reason}: 0x{data[err.start]:02x} at {where})"


def read_texts(files: Sequence[Path], problems: InputProblems, *, lines: bool = False,
               root: Optional[Path] = None) -> Iterator[Text]:
    """Documents from .jsonl files (a line each), .parquet files (a row each), .txt files (one each, or a
    line each with `lines`)."""
    for path in files:
        try:
            if path.suffix.lower() == ".jsonl":
                yield from _read_jsonl(path, problems)
            elif path.suffix.lower() == ".parquet":
                yield from _read_parquet(path, problems)
            elif lines:
                yield from _read_lines(path, problems)
            else:
                doc_id = path.relative_to(root).as_posix() if root else path.name
                yield from _read_file(path, doc_id, problems)
        except OSError as err:  # unreadable (permissions, a file removed meanwhile): name it, go on
            problems.skip(str(path), f"cannot be read ({err.strerror or first_line(err)})", "unreadable")


def _decoded_lines(path: Path, problems: InputProblems) -> Iterator[Tuple[int, str, str]]:
    """(line number, `file:line`, text) of each non-blank line that is UTF-8; the others are named and skipped.

    Binary, decoded a line at a time: a bad byte costs its own line only, and is reported with it.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            line, why = decode_utf8(raw.removeprefix(BOM) if lineno == 1 else raw)
            if line is None:
                problems.skip(where, why, "not UTF-8")
            elif line.strip():  # blank lines separate documents; they are not documents
                yield lineno, where, line


def _read_jsonl(path: Path, problems: InputProblems) -> Iterator[Text]:
    for lineno, where, line in _decoded_lines(path, problems):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.skip(where, f"not JSON ({err})", "not JSON")  # err: the message with line and column
            continue
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            problems.skip(where, 'no "text" string', 'no "text"')
        elif not text.strip():
            problems.skip(where, "the text is empty", "empty")
        else:
            doc_id = str(record.get("id", f"{path.name}:{lineno}"))
            surrogate = re.search("[\ud800-\udfff]", doc_id + text)
            if surrogate:  # a JSON escape such as \ud800 alone: no UTF-8 output can hold it
                problems.skip(where, f"not UTF-8 (unpaired surrogate \\u{ord(surrogate.group()):04x})", "not UTF-8")
            else:
                yield Text(doc_id, where, text)


def _read_parquet(path: Path, problems: InputProblems, rows_per_read: int = 4096) -> Iterator[Text]:
    """A document per row of the `text` column (id: the `id` column, else `file:row`), a batch of rows at a
    time so that a large file is never held whole; a row without text is named with its row and skipped."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SetupError("reading Parquet needs pyarrow: pip install -r requirements-ray.txt") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow's ArrowInvalid and friends: not a Parquet file
        problems.skip(str(path), f"not Parquet ({first_line(err)})", "not Parquet")
        return
    names = parquet.schema_arrow.names
    if "text" not in names:
        problems.skip(str(path), 'no "text" column', 'no "text"')
        return
    columns = ["text"] + (["id"] if "id" in names else [])
    row = 0
    for batch in parquet.iter_batches(batch_size=rows_per_read, columns=columns):
        ids = batch.column("id").to_pylist() if "id" in columns else [None] * batch.num_rows
        for text, doc_id in zip(batch.column("text").to_pylist(), ids):
            row += 1
            where = f"{path}:{row}"
            if not isinstance(text, str):
                problems.skip(where, 'no "text" string', 'no "text"')
            elif not text.strip():
                problems.skip(where, "the text is empty", "empty")
            else:
                yield Text(str(doc_id) if doc_id is not None else f"{path.name}:{row}", where, text)


def _read_lines(path: Path, problems: InputProblems) -> Iterator[Text]:
    for lineno, where, line in _decoded_lines(path, problems):
        yield Text(f"{path.name}:{lineno}", where, line.rstrip("\r\n"))


def _read_file(path: Path, doc_id: str, problems: InputProblems) -> Iterator[Text]:
    text, why = decode_utf8(path.read_bytes().removeprefix(BOM), whole_file=True)
    if text is None:
        problems.skip(str(path), why, "not UTF-8")
    elif not text.strip():
        problems.skip(str(path), "the file is empty", "empty")
    else:
        # Newlines as text mode reads them (the behaviour before strict decoding): CRLF and CR become LF.
        yield Text(doc_id, str(path), text.replace("\r\n", "\n").replace("\r", "\n"))


# -- long texts ----------------------------------------------------------------------------------------

# Where a long text is cut, best first: after a blank line, after a sentence end or a newline, after
# any whitespace. Each match ends the chunk with its whitespace, so the next chunk starts with text.
CUTS = (re.compile(r"\n[^\S\n]*\n\s*"), re.compile(r"[.?!]\s+|\n\s*"), re.compile(r"\s+"))


def split_text(text: str, max_length: int) -> List[Tuple[int, str]]:
    """(offset, chunk) pieces of at most `max_length` characters that join back into `text` exactly."""
    pieces: List[Tuple[int, str]] = []
    start = 0
    while len(text) - start > max_length:
        window = text[start:start + max_length]
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


# -- entity scores -------------------------------------------------------------------------------------

@dataclass
class ScoringNer:
    """The pipeline's scoring entity recognizer: its name, its doc.spans key, the component itself."""
    name: str
    spans_key: str
    pipe: object


def scoring_ner(nlp: Language) -> Optional[ScoringNer]:
    """The component that sets doc.ents and writes them, with scores, to doc.spans[its spans_key]: token_ner.

    Found by what it is (a `spans_key` setting on a component that assigns doc.ents), not by its name or
    the default key, so a renamed component or a key overridden in the config is still found. The last
    one wins where there are several: it is the closest to the final doc.ents.
    """
    found = None
    for name, pipe in nlp.pipeline:
        key = getattr(pipe, "spans_key", None)
        if isinstance(key, str) and key and "doc.ents" in nlp.get_pipe_meta(name).assigns:
            found = ScoringNer(name, key, pipe)
    return found


def unscored_ner(nlp: Language) -> str:
    """Who sets the entities of a pipeline without scores, for a message: "the pipeline's ner (transition)"."""
    names = []
    for name in nlp.pipe_names:
        meta = nlp.get_pipe_meta(name)
        if "doc.ents" in meta.assigns:
            kind = "transition" if meta.factory == "ner" else meta.factory
            if getattr(nlp.get_pipe(name), "spans_key", "") is None:
                kind += ", spans_key null"
            names.append(name if name == kind else f"{name} ({kind})")
    return f"the pipeline's {', '.join(names)}" if names else "the pipeline (no entity recognizer)"


def entity_scores(doc: Doc, spans_key: Optional[str]) -> Dict[Tuple[int, int, str], float]:
    """{(token start, token end, label): calibrated probability} from doc.spans[spans_key]; {} when absent."""
    if not spans_key or spans_key not in doc.spans:
        return {}
    group = doc.spans[spans_key]
    scores = group.attrs.get("scores")
    if scores is None or len(scores) != len(group):
        return {}
    return {(span.start, span.end, span.label_): float(score) for span, score in zip(group, scores)}


# -- prediction ----------------------------------------------------------------------------------------

def doc_piece(doc: Doc, spans_key: Optional[str] = None, min_score: float = 0.0) -> Piece:
    """Entities with character offsets (and scores, from doc.spans[spans_key]); words and entity spans
    without whitespace tokens, which IOB lines cannot hold. Entities scored under `min_score` are left
    out of both; an entity without a score is kept (nothing says it is under)."""
    scores = entity_scores(doc, spans_key)
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


def run_pipeline(nlp: Language, chunks: Sequence[str], batch_size: int, reading: Callable[[List[Doc]], List[Piece]]
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
    return Prediction(text.where, record, words, spans, split=len(pieces) > 1,
                      dropped=sum(p.dropped for p in pieces), unscored=sum(p.unscored for p in pieces),
                      confidence=min(confidences) if confidences else None)


def predictions(nlp: Language, texts: Iterable[Text], problems: InputProblems, *, batch_size: int,
                max_length: int, reading: Optional[Callable[[List[Doc]], List[Piece]]] = None
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
            yield merge(text, [o for o, _ in chunks], pieces[at:at + len(chunks)])
            at += len(chunks)


def _one_by_one(nlp: Language, batch: Sequence[Text], chunked: Sequence[List[Tuple[int, str]]],
                problems: InputProblems, reading: Callable[[List[Doc]], List[Piece]]) -> Iterator[Prediction]:
    for text, chunks in zip(batch, chunked):
        try:
            pieces = run_pipeline(nlp, [c for _, c in chunks], len(chunks), reading)
        except Exception as err:
            problems.skip(text.where, f"the pipeline failed ({type(err).__name__}: {first_line(err)})",
                          "pipeline error")
            continue
        yield merge(text, [o for o, _ in chunks], pieces)


# -- output --------------------------------------------------------------------------------------------

def write_predictions(found: Iterable[Prediction], out: IO[str], iob_file: Optional[IO[str]]) -> Dict[str, int]:
    """Write each document's JSONL line (and IOB form); returns the counts."""
    counts = {"documents": 0, "entities": 0, "split": 0, "below_min_score": 0, "unscored": 0}

    def iob_documents() -> Iterator[Tuple[List[str], List[Span], List[int]]]:
        for prediction in found:
            out.write(json.dumps(prediction.record, ensure_ascii=False) + "\n")
            counts["documents"] += 1
            counts["entities"] += len(prediction.record["entities"])
            counts["split"] += prediction.split
            counts["below_min_score"] += prediction.dropped
            counts["unscored"] += prediction.unscored
            if prediction.words:
                yield prediction.words, prediction.spans, [0]

    if iob_file is None:
        for _ in iob_documents():
            pass
    else:
        write_iob(iob_file, iob_documents())
    return counts


# Parquet output: the JSONL records' columns, typed once so that every row group has the same schema
# (a batch without any entity or score would otherwise be inferred as list<null>).
PARQUET_ROWS = 10_000  # rows per row group: bounded memory, and few enough groups for fast reads


def parquet_schema():
    import pyarrow as pa

    entity = pa.struct([("text", pa.string()), ("label", pa.string()), ("start", pa.int64()),
                        ("end", pa.int64()), ("score", pa.float64())])
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("entities", pa.list_(entity))])


class ParquetSink:
    """A write()-able stand-in for the JSONL file: takes the JSONL lines, writes Parquet row groups."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SetupError("writing Parquet needs pyarrow: pip install -r requirements-ray.txt") from None
        self.schema = parquet_schema()
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows: List[dict] = []

    def write(self, line: str) -> None:
        self.rows.append(json.loads(line))
        if len(self.rows) >= PARQUET_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_outputs(found: Iterable[Prediction], output: Path, iob_output: Optional[Path]) -> Dict[str, int]:
    """Write the predictions to `output` (JSONL, or Parquet where it ends in .parquet) and the optional IOB
    file, whole or not at all; returns write_predictions' counts. Both engines end here."""
    with atomic_outputs(*([output] + ([iob_output] if iob_output is not None else []))) as temps:
        if output.suffix.lower() == ".parquet":
            sink = ParquetSink(temps[0])
            try:
                counts = _write_with_iob(found, sink, temps[1:])
            finally:
                sink.close()
        else:
            with temps[0].open("w", encoding="utf8") as out:
                counts = _write_with_iob(found, out, temps[1:])
    return counts


def _write_with_iob(found: Iterable[Prediction], out, iob_temp: Sequence[Path]) -> Dict[str, int]:
    if not iob_temp:
        return write_predictions(found, out, None)
    with iob_temp[0].open("w", encoding="utf8", newline="") as iob_file:
        return write_predictions(found, out, iob_file)


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
            raise SetupError(f"min_score {min_score:g} needs entity scores, and {who} gives none "
                             f"(train with ner_head token, the default, or leave min_score at 0)")
        msg.warn(f"{who} gives no entity scores: records have no score")
        return Reading()
    return Reading(spans_key=scorer.spans_key, min_score=min_score)


def predict(*, model: Path, source: Path, output: Path, iob_output: Optional[Path] = None,
            gpu_id: Optional[int] = -1, batch_size: int = 64, lines: bool = False,
            max_length: Optional[int] = None, min_score: float = 0.0, engine: str = "local",
            actors: int = 0, shard_size: int = 10_240, ray_address: Optional[str] = None,
            ray_wheel: Optional[Path] = None) -> dict:
    """Predict entities for every document of `source`; returns counts. `max_length` (default: the
    pipeline's nlp.max_length) is the longest text processed whole; longer ones are split. Entities
    whose score is under `min_score` are left out (and counted). `engine` "ray" runs on Ray actors
    (`actors`, 0: one a GPU or CPU; `shard_size` documents a resumable shard; `ray_address` or
    RAY_ADDRESS: an existing cluster, else a local one; `ray_wheel`: the pipeline package's wheel, sent
    to the workers) and writes the same outputs."""
    check_settings(batch_size, max_length, min_score)
    if engine not in ENGINES:
        raise SetupError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "ray":
        from predict_ray import predict_ray  # Ray is optional: imported only when asked for

        return predict_ray(model=model, source=source, output=output, iob_output=iob_output, gpu_id=gpu_id,
                           batch_size=batch_size, lines=lines, max_length=max_length, min_score=min_score,
                           actors=actors, shard_size=shard_size, address=ray_address,
                           wheels=[ray_wheel] if ray_wheel else [])
    _, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    reading = entity_reading(nlp, min_score)
    limit = max_length or nlp.max_length
    nlp.max_length = limit  # chunks of `limit` characters must pass the pipeline's own length check
    outputs = [output] + ([iob_output] if iob_output is not None else [])
    files = input_files(source, exclude=outputs)
    problems = InputProblems()
    from tqdm import tqdm

    texts = read_texts(files, problems, lines=lines, root=source if source.is_dir() else None)
    found = tqdm(predictions(nlp, texts, problems, batch_size=batch_size, max_length=limit, reading=reading),
                 unit="doc", desc="predict", leave=False, mininterval=2)
    counts = write_outputs(found, output, iob_output)
    return {**counts, "skipped": problems.count, "skipped_reasons": dict(problems.reasons), "device": device,
            "scored": reading.spans_key is not None, "min_score": min_score}


def skipped_text(result: dict) -> str:
    """"N input(s) skipped (2 not JSON, 1 not UTF-8)", for the summaries of predict and review."""
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(result["skipped_reasons"].items()))
    return f"{result['skipped']} input(s) skipped{f' ({reasons})' if reasons else ''}"


def summary(result: dict, outputs: Sequence[Path]) -> str:
    below = (f"{result['below_min_score']} entities under min_score {result['min_score']:g} left out, "
             if result.get("min_score") else "")
    unscored = (f"{result['unscored']} entities without a score (set by another component), "
                if result.get("unscored") else "")
    shards = (f" ({result['shards']} shard(s), {result['shards_reused']} reused from an earlier run)"
              if result.get("engine") == "ray" else "")
    return (f"{result['documents']} document(s) written, {result['entities']} entities, {below}{unscored}"
            f"{skipped_text(result)}, {result['split']} long "
            f"text(s) split, on {result['device']}{shards} -> {', '.join(str(p) for p in outputs)}")


def main(
    model: Path = typer.Argument(..., help="Pipeline folder (training/model-best) or installed package name"),
    source: Path = typer.Argument(..., help=".txt, .jsonl or .parquet file, or a folder of them"),
    output: Path = typer.Argument(..., help="JSONL output (Parquet where it ends in .parquet)"),
    iob: Optional[Path] = typer.Option(None, help="Also write an IOB .tsv (UBIAI export shape)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
    batch_size: int = typer.Option(64),
    lines: bool = typer.Option(False, "--lines", help="Each line of a .txt file is one document"),
    max_length: int = typer.Option(0, help="Split texts longer than this (characters; 0: the pipeline's max_length)"),
    min_score: float = typer.Option(0.0, help="Leave out entities whose probability is under this (needs token_ner)"),
    engine: str = typer.Option("local", help="local (this process) or ray (pip install -r requirements-ray.txt)"),
    actors: int = typer.Option(0, help="Ray engine: pipeline copies (0: one per GPU, else one per CPU)"),
    shard_size: int = typer.Option(10_240, help="Ray engine: documents a resumable shard (rounded up to whole batches)"),
    ray_address: str = typer.Option("", help="Ray engine: a cluster's address (default: RAY_ADDRESS, else a local Ray)"),
    ray_wheel: Optional[Path] = typer.Option(None, help="Ray engine: the pipeline's wheel, installed on the workers"),
) -> None:
    try:
        result = predict(model=model, source=source, output=output, iob_output=iob, gpu_id=parse_gpu_id(gpu_id),
                         batch_size=batch_size, lines=lines, max_length=max_length or None, min_score=min_score,
                         engine=engine, actors=actors, shard_size=shard_size, ray_address=ray_address or None,
                         ray_wheel=ray_wheel)
    except (SetupError, OSError) as err:
        msg.fail(first_line(err), exits=1)
    except KeyboardInterrupt:
        resume = "; rerun the same command to go on from the finished shards" if engine == "ray" else ""
        msg.fail(f"interrupted: the previous outputs are left as they were{resume}", exits=130)
    (msg.warn if result["skipped"] else msg.good)(summary(result, [output] + ([iob] if iob else [])))


if __name__ == "__main__":
    typer.run(main)
