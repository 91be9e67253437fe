"""Reading the documents to predict: .txt files (whole, or a line each), JSONL ({"text": ...} per line, with
an optional "id"), JSON (an array of such objects, or one), Parquet (a `text` column, optionally `id`), or a
folder of any of them: a single file and a file in a folder are read alike, by their extension.

Nothing is lost at the edges: a document that cannot be read (not UTF-8, not JSON, empty, an item that is no
object with a "text" string) is named with its file and line (a .json item: `file[index]`), skipped and
counted (`InputProblems`), and the reading goes on. Streams: a file is never held whole, except a .txt file
that is one document and a .json file (one JSON value).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from wasabi import msg

from ..util.errors import SetupError, first_line, not_utf8_hint
from ..util.outputs import temporary_name
from .json_documents import parse_json_or_reason

INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
BOM = b"\xef\xbb\xbf"
JSON_KINDS = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


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


def input_files(source: Path, exclude: Sequence[Path] = ()) -> List[Path]:
    """The files to read: `source` itself, or the .txt/.jsonl/.json/.parquet files of a folder (any case), sorted.

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
        raise SetupError(f"{source} holds no .txt, .jsonl, .json or .parquet files")
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
        return None, f"not UTF-8 ({err.reason}: 0x{data[err.start]:02x} at {where}){not_utf8_hint(data[:256])}"


# A line of an IOB/CoNLL export: a token, maybe more columns, and a last column that is a tag
IOB_LINE = re.compile(r"^\S+(?:[\t ]+\S+)*[\t ]+(?:O|[BIESLU]-\S+)$")
IOB_SNIFF_BYTES = 1 << 16


def looks_like_iob(path: Path) -> bool:
    """True when the start of a text file is an annotated IOB export (token and tag columns), not raw text:
    at least 5 non-blank lines, 90 % of them token-and-tag lines, one at least an entity tag."""
    with path.open("rb") as f:
        data = f.read(IOB_SNIFF_BYTES)
    head = data.decode("utf-8", "replace").splitlines()
    if len(data) == IOB_SNIFF_BYTES:
        head = head[:-1]  # the last line may be cut
    rows = [line.strip() for line in head if line.strip() and not line.startswith("-DOCSTART-")]
    tagged = [row for row in rows if IOB_LINE.match(row)]
    return len(rows) >= 5 and len(tagged) >= 0.9 * len(rows) and any(not row.endswith("O") for row in tagged)


class NothingRead(SetupError):
    """Every input was skipped: nothing is written, the previous outputs stay."""


def check_something_read(documents: int, source: Path, problems: InputProblems, outputs: Sequence[Path]) -> None:
    """Raise NothingRead when no document of `source` could be read (the outputs then stay as they were)."""
    if documents == 0:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(problems.reasons.items())) or "no documents"
        kept = [str(p) for p in outputs if p is not None and p.exists()]  # what a user had: said to stay
        stays = f", {', '.join(kept)} stay{'s' if len(kept) == 1 else ''} as before" if kept else ""
        raise NothingRead(
            f"no document of {source} could be read ({reasons}; the reasons are above): nothing written{stays}"
        )


def read_texts(
    files: Sequence[Path], problems: InputProblems, *, lines: bool = False, root: Optional[Path] = None
) -> Iterator[Text]:
    """Documents from .jsonl files (a line each), .json files (an item each of an array, or the one object),
    .parquet files (a row each), .txt files (one each, or a line each with `lines`); any other extension is
    read as a .txt file. A text file that is an IOB export is skipped: its tags are no text."""
    for path in files:
        try:
            if path.suffix.lower() not in (".jsonl", ".json", ".parquet") and looks_like_iob(path):
                problems.skip(
                    str(path),
                    "an annotated IOB file (token and tag columns), not raw text: predict reads texts; "
                    "score annotated data with `spacy project run evaluate`",
                    "IOB file",
                )
            elif path.suffix.lower() == ".jsonl":
                yield from _read_jsonl(path, problems)
            elif path.suffix.lower() == ".json":
                yield from _read_json(path, problems)
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


def _record_text(record, where: str, default_id: str, problems: InputProblems) -> Optional[Text]:
    """The document of one JSON record ({"text": ..., "id": ...}: a .jsonl line, a .json item), or None when
    it is named and skipped."""
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        problems.skip(where, 'no "text" string (a record is an object {"text": ..., "id": ...})', 'no "text"')
    elif not text.strip():
        problems.skip(where, "the text is empty", "empty")
    else:
        doc_id = str(record.get("id", default_id))
        surrogate = re.search("[\ud800-\udfff]", doc_id + text)
        if surrogate:  # a JSON escape such as \ud800 alone: no UTF-8 output can hold it
            problems.skip(where, f"not UTF-8 (unpaired surrogate \\u{ord(surrogate.group()):04x})", "not UTF-8")
        else:
            return Text(doc_id, where, text)
    return None


def _read_jsonl(path: Path, problems: InputProblems) -> Iterator[Text]:
    for lineno, where, line in _decoded_lines(path, problems):
        record, why = parse_json_or_reason(line)
        if why:
            problems.skip(where, why, "not JSON")
            continue
        text = _record_text(record, where, f"{path.name}:{lineno}", problems)
        if text is not None:
            yield text


def _read_json(path: Path, problems: InputProblems) -> Iterator[Text]:
    """A .json file: an array of records as a .jsonl line holds them (item i named `file[i]`, its id by default
    `name[i]`), or one record (its id by default the file's name). Held whole: it is one JSON value."""
    data, why = decode_utf8(path.read_bytes().removeprefix(BOM), whole_file=True)
    if data is None:
        problems.skip(str(path), why, "not UTF-8")
        return
    value, why = parse_json_or_reason(data)
    if why:
        problems.skip(str(path), why, "not JSON")
    elif isinstance(value, list):
        for index, record in enumerate(value):
            text = _record_text(record, f"{path}[{index}]", f"{path.name}[{index}]", problems)
            if text is not None:
                yield text
    elif isinstance(value, dict):
        text = _record_text(value, str(path), path.name, problems)
        if text is not None:
            yield text
    else:
        problems.skip(
            str(path),
            f"a JSON {JSON_KINDS.get(type(value), 'value')}, not an array of "
            '{"text": ..., "id": ...} objects nor one such object',
            "not records",
        )


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
