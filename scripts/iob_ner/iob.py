"""Streaming reader and writer for token-per-line IOB files (UBIAI exports, CoNLL-style corpora).

The reader never changes data silently: every repair it makes is counted with its first line numbers in
a `ReadReport`, `strict=True` turns each repair into an `IobError`, and anything without one safe
meaning is an `IobError` naming the file and line.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, List, Optional, Sequence, Tuple

DOCSTART = "-DOCSTART-"
PREFIXES = "BIELSU"
FIRST_LINES_KEPT = 5
# What each repair does; the keys appear in the report.
REPAIRS = {
    "empty_tag": "empty tag read as O",
    "empty_token": "line with an empty token dropped",
    "whitespace": "whitespace around a token or tag removed",
    "entity_starts_inside": "I-/E-/L- tag continuing no entity of its label: starts a new entity",
    "unclosed_entity": "IOBES/BILOU entity not closed by E-/L-: closed where the next tag starts",
}

# Written schemes, with the prefixes that end an entity and mark a one-token entity (BILUO is spaCy's name).
SCHEME_END_TAGS = {"IOB2": None, "IOB1": None, "IOBES": ("E", "S"), "BILOU": ("L", "U"), "BILUO": ("L", "U")}
Span = Tuple[int, int, str]  # token start, token end (exclusive), label


class IobError(ValueError):
    """Bad input, located: `str(err)` reads `path:line: message`."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


@dataclass
class IobDocument:
    words: List[str]
    spans: List[Span]
    sent_starts: List[int]  # token index where each sentence starts
    first_line: int


@dataclass
class ReadReport:
    path: str
    separator: str = "tab"
    columns: int = 2
    bom: bool = False
    line_endings: str = "LF"
    scheme: str = "IOB2"
    document_boundaries: bool = False
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: Counter = field(default_factory=Counter)
    repairs: dict = field(default_factory=dict)  # kind -> {"count": n, "lines": [first line numbers]}
    longest_document: int = 0
    notes: List[str] = field(default_factory=list)

    def add_repair(self, kind: str, line: int) -> None:
        entry = self.repairs.setdefault(kind, {"count": 0, "lines": [], "what": REPAIRS[kind]})
        entry["count"] += 1
        if len(entry["lines"]) < FIRST_LINES_KEPT:
            entry["lines"].append(line)

    def set_repair(self, kind: str, count: int, lines: List[int]) -> None:
        self.repairs[kind] = {"count": count, "lines": lines, "what": REPAIRS[kind]}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["entities"] = dict(sorted(self.entities.items()))
        data["entities_total"] = sum(self.entities.values())
        return data

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf8")


@dataclass
class _FileLayout:
    has_tab: bool
    bom: bool
    crlf: bool
    docstart_lines: int
    docstart_first: bool
    columns: int  # the usual number of whitespace-separated fields on a token line


def _usual_columns(head: bytes, sample: int = 1000) -> int:
    """The most common field count (of 2 or more) over the first token lines."""
    counts: Counter = Counter()
    for raw in head.splitlines()[:sample]:
        fields = len(raw.split())
        if fields >= 2 and not raw.startswith(DOCSTART.encode()):
            counts[fields] += 1
    return counts.most_common(1)[0][0] if counts else 2


def _scan_layout(path: Path, chunk_size: int = 1 << 20) -> _FileLayout:
    """One fast binary pass: separator, BOM, line endings and -DOCSTART- lines, before parsing."""
    marker = b"\n" + DOCSTART.encode()
    has_tab = crlf = False
    docstarts = 0
    with path.open("rb") as f:
        head = f.read(chunk_size)
        bom = head.startswith(b"\xef\xbb\xbf")
        body = head[3:] if bom else head
        first = body.startswith(DOCSTART.encode())
        crlf = b"\r\n" in head
        tail = b"\n"  # so a DOCSTART on line 1 counts too
        chunk = body
        while chunk:
            window = tail + chunk
            docstarts += window.count(marker)
            has_tab = has_tab or b"\t" in chunk
            tail = window[-(len(marker) - 1):]
            chunk = f.read(chunk_size)
    return _FileLayout(has_tab, bom, crlf, docstarts, first, 2 if has_tab else _usual_columns(body))


def _split_whitespace(path: Path, lineno: int, line: str, columns: int) -> Tuple[str, str]:
    """(token, tag) of a whitespace-separated line; surrounding whitespace is left for the caller."""
    if line[0].isspace():  # leading whitespace: the token is empty
        fields = line.split()
        return "", fields[-1] if fields else ""
    if columns == 2:
        # token<space>tag: the token is all before the tag and one separator, spaces and all
        stripped = line.rstrip()
        fields = stripped.rsplit(None, 1)
        if len(fields) == 1:
            return line, ""
        tag = fields[1]
        return stripped[: len(stripped) - len(tag) - 1], line[len(stripped) - len(tag):]
    fields = line.split()
    if len(fields) != columns:
        raise IobError(path, lineno, f"{len(fields)} columns where the file has {columns}: {line!r}")
    return fields[0], fields[-1]


class _TagState:
    """Decodes one file's tags into entity spans, whatever the scheme, and infers the scheme."""

    def __init__(self, path: Path, report: ReadReport, strict: bool) -> None:
        self.path, self.report, self.strict = path, report, strict
        self.cache: dict = {}
        self.first_prefixed: Optional[Tuple[int, str]] = None
        self.first_bare: Optional[Tuple[int, str]] = None
        self.end_tags_seen = False  # E-/L-/S-/U-: IOBES or BILOU
        self.iob2_evidence = False  # a B- tag that follows no entity of its label
        # Repairs whose status depends on the scheme, settled in finish(): [count, first lines].
        self.starts_inside: list = [0, []]  # I-/E-/L- starts: repairs unless the file is IOB1
        self.unclosed: list = [0, []]  # entities left open: repairs in IOBES/BILOU
        self.open_label: Optional[str] = None
        self.open_start = 0
        self.open_prefix = ""
        self.spans: List[Span] = []

    def parse(self, tag: str, lineno: int) -> Tuple[str, str]:
        """(prefix, label) of a tag seen for the first time; checks that the file keeps one scheme."""
        if tag == "O":
            parsed = ("O", "")
        elif len(tag) >= 2 and tag[1] == "-" and tag[0] in PREFIXES:
            if len(tag) == 2:
                raise IobError(self.path, lineno, f"tag {tag!r} has no label")
            parsed = (tag[0], tag[2:])
            if self.first_prefixed is None:
                self.first_prefixed = (lineno, tag)
                if self.first_bare is not None:
                    self._mixed_schemes(*self.first_bare)
        else:  # a bare label (IO scheme): valid only if no tag in the file has a prefix
            parsed = ("", tag)
            if self.first_prefixed is not None:
                self._mixed_schemes(lineno, tag)
            if self.first_bare is None:
                self.first_bare = (lineno, tag)
        self.cache[tag] = parsed
        return parsed

    def _mixed_schemes(self, lineno: int, tag: str) -> None:
        line, prefixed = self.first_prefixed or (0, "")
        raise IobError(
            self.path, lineno,
            f"tag {tag!r} is neither O nor a B-/I-/E-/L-/S-/U- tag, which this file uses "
            f"(line {line}: {prefixed!r})",
        )

    def step(self, index: int, prefix: str, label: str, lineno: int) -> None:
        """Consume the tag of token `index`."""
        open_label = self.open_label
        if prefix == "O":
            self.close(index, lineno)
        elif prefix == "B":
            if open_label != label:
                self._iob2_evidence()
            self.close(index, lineno)
            self._open(index, label, prefix)
        elif prefix == "I" or prefix == "":
            if open_label != label:
                self.close(index, lineno)
                self._open(index, label, prefix)
                if prefix == "I":
                    self._starts_inside(lineno)
            else:
                self.open_prefix = prefix
        elif prefix in "EL":
            self._end_tags()
            if open_label != label:
                self.close(index, lineno)
                self._starts_inside(lineno)
                self.open_start = index
            self.spans.append((self.open_start, index + 1, label))
            self.open_label = None
        else:  # S, U
            self._end_tags()
            self.close(index, lineno)
            self.spans.append((index, index + 1, label))

    def _open(self, index: int, label: str, prefix: str) -> None:
        self.open_label, self.open_start, self.open_prefix = label, index, prefix

    def close(self, index: int, lineno: int) -> None:
        if self.open_label is None:
            return
        self.spans.append((self.open_start, index, self.open_label))
        if self.open_prefix in ("B", "I"):
            _tally(self.unclosed, lineno)
            if self.strict and self.end_tags_seen:
                self._strict_fail("unclosed_entity", lineno)
        self.open_label = None

    def _starts_inside(self, lineno: int) -> None:
        _tally(self.starts_inside, lineno)
        if self.strict and (self.iob2_evidence or self.end_tags_seen):
            self._strict_fail("entity_starts_inside", lineno)

    def _iob2_evidence(self) -> None:
        if not self.iob2_evidence:
            self.iob2_evidence = True
            if self.strict and self.starts_inside[0]:
                self._strict_fail("entity_starts_inside", self.starts_inside[1][0])

    def _end_tags(self) -> None:
        if not self.end_tags_seen:
            self.end_tags_seen = True
            if self.strict and self.unclosed[0]:
                self._strict_fail("unclosed_entity", self.unclosed[1][0])
            if self.strict and self.starts_inside[0]:
                self._strict_fail("entity_starts_inside", self.starts_inside[1][0])

    def _strict_fail(self, kind: str, lineno: int) -> None:
        raise IobError(self.path, lineno, f"{REPAIRS[kind]} (strict mode allows no repairs)")

    def finish(self) -> None:
        """Settle the scheme and the repairs that depend on it."""
        if self.end_tags_seen:
            self.report.scheme = "IOBES/BILOU"
            kinds = {t[0] for t in self.cache.values()}
            if kinds & set("ES") and not kinds & set("LU"):
                self.report.scheme = "IOBES"
            elif kinds & set("LU") and not kinds & set("ES"):
                self.report.scheme = "BILOU"
        elif self.first_bare is not None:
            self.report.scheme = "IO"
        elif self.starts_inside[0] and not self.iob2_evidence:
            self.report.scheme = "IOB1"
        else:
            self.report.scheme = "IOB2"
        if self.report.scheme != "IOB1" and self.starts_inside[0]:
            self.report.set_repair("entity_starts_inside", *self.starts_inside)
        if self.end_tags_seen and self.unclosed[0]:
            self.report.set_repair("unclosed_entity", *self.unclosed)


def _tally(counter: list, lineno: int) -> None:
    counter[0] += 1
    if len(counter[1]) < FIRST_LINES_KEPT:
        counter[1].append(lineno)


def read_iob(
    path: Path | str,
    *,
    sents_per_doc: int = 1,
    strict: bool = False,
    report: Optional[ReadReport] = None,
) -> Iterator[IobDocument]:
    """Yield the documents of an IOB file one at a time, filling `report` as it goes.

    `-DOCSTART-` lines separate documents, blank lines separate sentences. Where the file marks no
    documents, every `sents_per_doc` sentences form one. Raises IobError on input with no safe reading;
    checks that need the whole file (the scheme) raise by the time the last document is yielded.
    """
    path = Path(path)
    report = report if report is not None else ReadReport(path=str(path))
    layout = _scan_layout(path)
    report.separator = "tab" if layout.has_tab else "whitespace"
    report.bom, report.line_endings = layout.bom, "CRLF" if layout.crlf else "LF"
    # A -DOCSTART- on line 1 alone opens the file; any other one separates documents.
    report.document_boundaries = layout.docstart_lines > (1 if layout.docstart_first else 0)
    if report.document_boundaries:
        if sents_per_doc != 1:
            report.notes.append(f"sents_per_doc={sents_per_doc} not applied: the file marks documents with {DOCSTART}")
    else:
        report.notes.append(f"no {DOCSTART} lines: every {sents_per_doc} sentence(s) form a document")
    if not layout.has_tab:
        report.notes.append("no TAB in the file: columns split on whitespace")
    tags = _TagState(path, report, strict)
    group = 0 if report.document_boundaries else max(1, sents_per_doc)
    words: List[str] = []
    sent_starts: List[int] = []
    in_sentence = False
    doc_line = 1
    lineno = 0
    has_tab = layout.has_tab
    columns = report.columns = layout.columns
    if columns > 2:
        report.notes.append(f"{columns} columns: token first, tag last, others ignored")
    tag_cache = tags.cache

    def take_document() -> IobDocument:
        nonlocal words, sent_starts
        tags.close(len(words), lineno)
        doc = IobDocument(words, tags.spans, sent_starts, doc_line)
        report.documents += 1
        report.tokens += len(words)
        report.longest_document = max(report.longest_document, len(words))
        report.entities.update(label for _, _, label in doc.spans)
        words, sent_starts, tags.spans = [], [], []
        return doc

    try:
        with path.open("r", encoding="utf-8-sig", newline=None) as f:
            for lineno, line in enumerate(_lines(f), 1):
                if not line or line.isspace():
                    if in_sentence:
                        in_sentence = False
                        tags.close(len(words), lineno)
                        report.sentences += 1
                        if group and len(sent_starts) >= group:
                            yield take_document()
                    continue
                if line.startswith(DOCSTART):
                    if in_sentence:
                        in_sentence = False
                        report.sentences += 1
                    if words:
                        yield take_document()
                    doc_line = lineno + 1
                    continue
                if has_tab:
                    token, tab, tag = line.partition("\t")
                    if not tab:
                        raise IobError(path, lineno, f"no TAB between token and tag (the file is TAB-separated): {line!r}")
                    if "\t" in tag:  # more columns: the tag is the last
                        tag = tag.rpartition("\t")[2]
                else:
                    token, tag = _split_whitespace(path, lineno, line, columns)
                stripped_token, stripped_tag = token.strip(), tag.strip()
                if len(stripped_token) != len(token) or len(stripped_tag) != len(tag):
                    if strict:
                        raise IobError(path, lineno, f"{REPAIRS['whitespace']} (strict mode allows no repairs): {line!r}")
                    report.add_repair("whitespace", lineno)
                    token, tag = stripped_token, stripped_tag
                if not token:
                    if strict:
                        raise IobError(path, lineno, f"empty token (strict mode allows no repairs): {line!r}")
                    report.add_repair("empty_token", lineno)
                    continue
                if not tag:
                    if strict:
                        raise IobError(path, lineno, f"empty tag (strict mode allows no repairs): {line!r}")
                    report.add_repair("empty_tag", lineno)
                    tag = "O"
                if not in_sentence:
                    in_sentence = True
                    if not words:
                        doc_line = lineno
                    sent_starts.append(len(words))
                parsed = tag_cache.get(tag) or tags.parse(tag, lineno)
                if parsed[0] != "O" or tags.open_label is not None:
                    tags.step(len(words), parsed[0], parsed[1], lineno)
                words.append(token)
    except UnicodeDecodeError as err:
        raise IobError(path, _first_undecodable_line(path), f"not valid UTF-8 ({err.reason})") from None
    lineno += 1
    if in_sentence:
        report.sentences += 1
    if words:
        yield take_document()
    if report.tokens == 0:
        raise IobError(path, max(lineno - 1, 1), "the file holds no token lines")
    tags.finish()


def _lines(f: IO[str], chunk_size: int = 1 << 22) -> Iterator[str]:
    """The lines of a text file without their newline: split per 4 MB block, faster than line iteration.

    Only "\n" ends a line (the file object has already turned CRLF into it); unlike str.splitlines, a
    token holding U+2028 or U+0085 stays one token.
    """
    rest = ""
    while True:
        chunk = f.read(chunk_size)
        if not chunk:
            break
        lines = (rest + chunk).split("\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _first_undecodable_line(path: Path) -> int:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 1


def spans_to_tags(spans: Iterable[Span], length: int, scheme: str = "IOB2") -> List[str]:
    """Encode entity spans as per-token tags in IOB2, IOB1, IOBES or BILOU."""
    if scheme not in SCHEME_END_TAGS:
        raise ValueError(f"unknown tag scheme {scheme!r}: use one of {', '.join(SCHEME_END_TAGS)}")
    tags = ["O"] * length
    ends = SCHEME_END_TAGS[scheme]
    previous_end, previous_label = -1, None
    for start, end, label in sorted(spans):
        tags[start:end] = [f"I-{label}"] * (end - start)
        if scheme == "IOB1":
            if previous_end == start and previous_label == label:
                tags[start] = f"B-{label}"
        else:
            tags[start] = f"B-{label}"
        if ends and end - start == 1:
            tags[start] = f"{ends[1]}-{label}"
        elif ends:
            tags[end - 1] = f"{ends[0]}-{label}"
        previous_end, previous_label = end, label
    return tags


def write_iob(
    out: IO[str],
    documents: Iterable[Tuple[Sequence[str], Iterable[Span], Sequence[int]]],
    *,
    scheme: str = "IOB2",
    docstart: bool = True,
    newline: str = "\r\n",
) -> int:
    """Write (words, spans, sentence starts) documents in the UBIAI export shape; returns the count.

    The shape: `token<TAB>TAG`, a `-DOCSTART- -X- O O` line before each document, a blank line between
    sentences (none inside a one-sentence document), CRLF line endings and no final newline.
    """
    count = 0
    for words, spans, sent_starts in documents:
        lines: List[str] = []
        if docstart:
            lines.append(f"{DOCSTART} -X- O O")
        elif count:
            lines.append("")
        starts = set(sent_starts) - {0}
        for i, (word, tag) in enumerate(zip(words, spans_to_tags(spans, len(words), scheme))):
            if i in starts:
                lines.append("")
            lines.append(f"{word}\t{tag}")
        out.write((newline if count else "") + newline.join(lines))
        count += 1
    return count
