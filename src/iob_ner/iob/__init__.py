"""Streaming reader and writer for token-per-line IOB files (UBIAI exports, CoNLL-style corpora).

The reader never changes data silently: every repair it makes is counted with its first line numbers in
a `ReadReport`, `strict=True` turns each repair into an `IobError`, and anything without one safe
meaning is an `IobError` naming the file and line. Sentences and documents over a length limit (an
export without blank lines) are cut outside every entity and counted like repairs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Generator, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..util.errors import IobError, SetupError, not_utf8_hint

DOCSTART = "-DOCSTART-"
PREFIXES = "BIELSU"
# Tag prefix letters as written, lower case included (b-skill is B- + skill, never a bare label "b-skill").
_PREFIX_OF = {**{c: c for c in PREFIXES}, **{c.lower(): c for c in PREFIXES}}
FIRST_LINES_KEPT = 5
# Limits that keep memory and training batches bounded on exports without sentence breaks (UBIAI writes
# a whole document without blank lines); 0 means no limit.
MAX_SENTENCE_TOKENS = 5_000
MAX_DOCUMENT_TOKENS = 100_000
# Tokens after which a sentence may end, where an over-long sentence is cut first: . ! ? ; ... and the
# ellipsis, the CJK full stop, exclamation, question mark and semicolon, the Arabic question mark, the danda.
SENTENCE_ENDS = frozenset(
    {".", "!", "?", ";", "...", "\u2026", "\u3002", "\uff01", "\uff1f", "\uff1b", "\u061f", "\u0964"}
)
_NO_LIMIT = 1 << 62
# What each repair does; the keys appear in the report.
REPAIRS = {
    "empty_tag": "empty tag read as O",
    "empty_token": "line with an empty token dropped",
    "whitespace": "whitespace around a token or tag removed",
    "entity_starts_inside": "I-/E-/L- tag continuing no entity of its label: starts a new entity",
    "unclosed_entity": "IOBES/BILOU entity not closed by E-/L-: closed where the next tag starts",
    "lower_case_prefix": "lower-case tag prefix read as a prefix",
    "lower_case_outside": "lower-case o tag read as O",
    "long_sentence": "sentence over {limit} tokens split into pieces of at most {limit}",
    "long_document": "document over {limit} tokens split into documents at sentence boundaries",
}

# Written schemes, with the prefixes that end an entity and mark a one-token entity (BILUO is spaCy's name).
SCHEME_END_TAGS = {"IOB2": None, "IOB1": None, "IOBES": ("E", "S"), "BILOU": ("L", "U"), "BILUO": ("L", "U")}
Span = Tuple[int, int, str]  # token start, token end (exclusive), label


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

    def add_repair(self, kind: str, line: int, limit: int = 0) -> None:
        """Count a repair at `line`; `limit` fills the {limit} of its description."""
        entry = self.repairs.get(kind)
        if entry is None:  # why: a file of lower-case tags adds a repair a line; build the entry once
            entry = self.repairs[kind] = {"count": 0, "lines": [], "what": REPAIRS[kind].format(limit=limit)}
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
    columns: int  # the usual number of fields on a token line: TAB-separated in a file with a TAB, else whitespace


def _usual_columns(head: bytes, has_tab: bool, sample: int = 1000) -> int:
    """The most common field count (of 2 or more) over the first token lines.

    In a file with a TAB only TABs separate fields: a token or a label may hold spaces.
    """
    counts: Counter = Counter()
    # why: split only the first 64 kB; splitting the whole 1 MB head costs as much as parsing 5,000 lines
    for raw in head[: 1 << 16].splitlines()[:sample]:
        fields = raw.count(b"\t") + 1 if has_tab else len(raw.split())
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
            tail = window[-(len(marker) - 1) :]
            chunk = f.read(chunk_size)
    layout = _FileLayout(has_tab, bom, crlf, docstarts, first, _usual_columns(body, has_tab))
    _check_not_swapped(path, body, has_tab)
    return layout


_TAG = re.compile(r"(?:O|[BIESLUbiesl]-\S+)\Z|o\Z")


def _check_not_swapped(path: Path, head: bytes, has_tab: bool, sample: int = 1000) -> None:
    """A file whose first column holds the tags and whose last holds the words (an export's columns
    swapped) would read as an IO file whose every word is a label: refused, naming its first line."""
    firsts = lasts = lines = 0
    first_line = 0
    for lineno, raw in enumerate(head[: 1 << 16].splitlines()[:sample], 1):
        fields = raw.decode("utf8", "replace").split("\t" if has_tab else None)
        if len(fields) < 2 or raw.startswith(DOCSTART.encode()):
            continue
        lines += 1
        first, last = _TAG.match(fields[0].strip()), _TAG.match(fields[-1].strip())
        firsts, lasts = firsts + bool(first), lasts + bool(last)
        if first and not last and not first_line:
            first_line = lineno
    if lines >= 3 and firsts >= 0.9 * lines and lasts < 0.5 * lines:
        raise IobError(
            path,
            first_line or 1,
            "the first column holds the tags (O, B-X, I-X) and the last one the words: the columns look "
            "swapped; each line must be the token, then its tag (TOKEN<TAB>TAG)",
        )


def _describe_layout(report: ReadReport, layout: _FileLayout, sents_per_doc: int) -> None:
    """What the layout scan found, into the report, with a note for each choice the reader makes."""
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
    report.columns = layout.columns
    if layout.columns > 2:
        report.notes.append(f"{layout.columns} columns: token first, tag last, others ignored")


def _split_tab(path: Path, lineno: int, line: str, columns: int) -> Tuple[str, str]:
    """(token, tag) of a TAB-separated line: the first and last fields, if it has the file's column count."""
    fields = line.split("\t")
    if len(fields) == 1:
        raise IobError(path, lineno, f"no TAB between token and tag (the file is TAB-separated): {line!r}")
    if len(fields) != columns:
        raise IobError(path, lineno, f"{len(fields)} TAB-separated columns where the file has {columns}: {line!r}")
    return fields[0], fields[-1]


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
        return stripped[: len(stripped) - len(tag) - 1], line[len(stripped) - len(tag) :]
    fields = line.split()
    if len(fields) != columns:
        raise IobError(path, lineno, f"{len(fields)} columns where the file has {columns}: {line!r}")
    return fields[0], fields[-1]


class _TagState:
    """Decodes one file's tags into entity spans, whatever the scheme, and infers the scheme."""

    def __init__(self, path: Path, report: ReadReport, strict: bool) -> None:
        self.path, self.report, self.strict = path, report, strict
        self.cache: dict = {}  # tag -> (prefix, label), read by the reader's loop without a call
        self.lower_case: dict = {}  # the same for lower-case tags, each line of which is a repair
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
        """(prefix, label) of a tag the cache does not hold: a new tag, or a lower-case one.

        Lower-case tags stay out of the cache so that every line holding one is counted as a repair.
        """
        parsed = self.lower_case.get(tag) or self._read(tag, lineno)
        if parsed[0] and tag[0] != parsed[0]:  # b-skill, i-Skill, o
            self.lower_case[tag] = parsed
            kind = "lower_case_outside" if parsed[0] == "O" else "lower_case_prefix"
            if self.strict:
                self._strict_fail(kind, lineno, tag)
            self.report.add_repair(kind, lineno)
        else:
            self.cache[tag] = parsed
        return parsed

    def _read(self, tag: str, lineno: int) -> Tuple[str, str]:
        """(prefix, label) of a tag seen for the first time; checks that the file keeps one scheme."""
        if tag == "O" or tag == "o":
            return ("O", "")
        prefix = _PREFIX_OF.get(tag[0]) if len(tag) >= 2 and tag[1] == "-" else None
        if prefix is not None:
            if len(tag) == 2:
                raise IobError(self.path, lineno, f"tag {tag!r} has no label")
            if self.first_prefixed is None:
                self.first_prefixed = (lineno, tag)
                if self.first_bare is not None:
                    self._mixed_schemes(*self.first_bare)
            return (prefix, tag[2:])  # the label keeps its case: b-Skill is B- + Skill
        # A bare label (IO scheme): valid only if no tag in the file has a prefix.
        if self.first_prefixed is not None:
            self._mixed_schemes(lineno, tag)
        if self.first_bare is None:
            self.first_bare = (lineno, tag)
        return ("", tag)

    def _mixed_schemes(self, lineno: int, tag: str) -> None:
        line, prefixed = self.first_prefixed or (0, "")
        raise IobError(
            self.path,
            lineno,
            f"tag {tag!r} is neither O nor a B-/I-/E-/L-/S-/U- tag, which this file uses (line {line}: {prefixed!r})",
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

    def _strict_fail(self, kind: str, lineno: int, tag: str = "") -> None:
        detail = f": {tag!r}" if tag else ""
        raise IobError(self.path, lineno, f"{REPAIRS[kind]} (strict mode allows no repairs){detail}")

    def check_some_outside(self) -> None:
        """An IO "export" in which no token is O is not annotated text: it is text whose second word on
        each line was read as a label (prose, or a word list). Refused, naming the first such line."""
        seen = list(self.cache.values()) + list(self.lower_case.values())
        if self.report.scheme == "IO" and not any(prefix == "O" for prefix, _ in seen) and self.first_bare:
            line, tag = self.first_bare
            labels = sorted({label for prefix, label in seen if not prefix})
            shown = ", ".join(repr(label) for label in labels[:3]) + (
                f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            )
            raise IobError(
                self.path,
                line,
                f"no token of the file is tagged O, and its tags are words ({shown}): this is not an IOB "
                f"export, where each line is a token, then its tag (TOKEN<TAB>TAG), and most tags are O",
            )

    def finish(self) -> None:
        """Settle the scheme and the repairs that depend on it."""
        if self.end_tags_seen:
            self.report.scheme = "IOBES/BILOU"
            kinds = {t[0] for t in self.cache.values()} | {t[0] for t in self.lower_case.values()}
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


def _best_cut(words: List[str], spans: List[Span], start: int, hi: int) -> int:
    """Where to cut the sentence that starts at `start`: a token index in (start, hi] outside every entity, or 0.

    After the last token that ends a sentence (".", "!", "?", ";" ...), else at the last token boundary.
    """
    inside = set()
    for s, e, _ in reversed(spans):  # spans are in token order: the sentence's are the last ones
        if e <= start:
            break
        inside.update(range(s + 1, e))
    fallback = 0
    for cut in range(hi, start, -1):
        if cut in inside:
            continue
        if words[cut - 1] in SENTENCE_ENDS:
            return cut
        if not fallback:
            fallback = cut
    return fallback


class _DocumentBuilder:
    """Gathers tokens into sentences and documents; cuts the ones over a limit outside every entity.

    The reader's loop appends to `words` and `sent_starts` and calls `at_limit` at the line where a limit
    may be reached (a token takes a line or more), so the limits cost one comparison a token and no call.
    Every cut falls at a sentence start, where no entity is open.
    """

    def __init__(
        self,
        path: Path,
        report: ReadReport,
        tags: _TagState,
        strict: bool,
        max_sentence_tokens: int,
        max_document_tokens: int,
    ) -> None:
        self.path, self.report, self.tags, self.strict = path, report, tags, strict
        self.sentence_limit = max_sentence_tokens or _NO_LIMIT
        # why: a document must hold a whole sentence piece, so its limit is never below the sentence limit
        self.document_limit = max(max_document_tokens or _NO_LIMIT, self.sentence_limit)
        self.words: List[str] = []
        self.sent_starts: List[int] = []  # sentences and pieces of sentences
        self.doc_line = 1
        # For line numbers in a sentence being cut: the first line of the sentence as written, and the
        # index and line of the current piece's first token.
        self.sentence_line, self.piece_start, self.piece_line = 0, 0, 0
        self.drops: List[Tuple[int, int]] = []  # (token index, its line) after each line dropped in a sentence
        self.split_sentence_line = self.split_document_line = 0  # the last over-long ones, counted once
        self.long_entity_noted = False
        self.limit_line = _NO_LIMIT  # the line at which at_limit is due again

    def line_dropped(self, lineno: int) -> None:
        """A line dropped inside the sentence (empty token): the next token is on the line after it."""
        self.drops.append((len(self.words), lineno + 1))

    def take(self, lineno: int) -> IobDocument:
        """The whole document (at -DOCSTART-, a sentence group's end, the file's end)."""
        self.tags.close(len(self.words), lineno)
        doc = IobDocument(self.words, self.tags.spans, self.sent_starts, self.doc_line)
        self.words, self.sent_starts, self.tags.spans = [], [], []
        if self.drops:
            self.drops = []
        return self._counted(doc)

    def at_limit(self, group: int, sentence_line: int, lineno: int) -> List[IobDocument]:
        """Cut the sentence or the document that reached its limit; returns the documents completed.

        Called before the token of line `lineno` (index len(words)) is appended, once its tag has been
        decoded; the sentence started on `sentence_line`. Where documents are groups of `group`
        sentences, each piece counts as a sentence.
        """
        if sentence_line != self.sentence_line:  # no cut in this sentence yet: its pieces start here
            self.sentence_line = self.piece_line = sentence_line
            self.piece_start = self.sent_starts[-1]
        n = len(self.words)
        if n - self.sent_starts[-1] >= self.sentence_limit:
            self._cut_sentence(n)
        done = []
        if group and len(self.sent_starts) > group:
            done.append(self._take_before(self.sent_starts[-1]))
        if len(self.words) >= self.document_limit and self.sent_starts[-1] > 0:
            if self.split_document_line != self.doc_line:
                self._repair("long_document", self.doc_line, self.document_limit)
            done.append(self._take_before(self.sent_starts[-1]))
            self.split_document_line = self.doc_line  # the rest of the same document: counted already
        n, start = len(self.words), self.sent_starts[-1]
        # Tokens left before a limit; none where an entity fills the sentence: try again at the next token.
        room = min(start + self.sentence_limit, self.document_limit) - n
        self.limit_line = lineno + max(room, 1)
        return done

    def _cut_sentence(self, n: int) -> None:
        start, tags = self.sent_starts[-1], self.tags
        # An open entity may go on with the next token: no cut after its first token.
        cut = _best_cut(self.words, tags.spans, start, n if tags.open_label is None else tags.open_start)
        if not cut:
            return
        if self.split_sentence_line != self.sentence_line:
            self._repair("long_sentence", self.sentence_line, self.sentence_limit)
            self.split_sentence_line = self.sentence_line
        if cut - start > self.sentence_limit and not self.long_entity_noted:
            self.long_entity_noted = True
            self.report.notes.append(
                f"the sentence piece from line {self.piece_line} holds an entity over {self.sentence_limit} "
                f"tokens: kept whole, the piece is longer than {self.sentence_limit} tokens"
            )
        self.piece_start, self.piece_line = cut, self._line_of(cut)
        self.sent_starts.append(cut)
        self.report.sentences += 1

    def _repair(self, kind: str, line: int, limit: int) -> None:
        if self.strict:
            fix = (
                "add blank lines between its sentences or raise max_sentence_tokens"
                if kind == "long_sentence"
                else f"add {DOCSTART} lines between its documents or raise max_document_tokens"
            )
            what = "sentence" if kind == "long_sentence" else "document"
            raise IobError(self.path, line, f"{what} over {limit} tokens (strict mode allows no repairs): {fix}")
        self.report.add_repair(kind, line, limit)

    def _take_before(self, cut: int) -> IobDocument:
        """The tokens before `cut`, the current piece's start, as a document; the rest starts the next."""
        spans, tags = self.tags.spans, self.tags
        k = len(spans)
        while k and spans[k - 1][0] >= cut:
            k -= 1
        doc = IobDocument(self.words[:cut], spans[:k], [s for s in self.sent_starts if s < cut], self.doc_line)
        self.doc_line = self.piece_line
        self.words = self.words[cut:]
        tags.spans = [(s - cut, e - cut, label) for s, e, label in spans[k:]]
        if tags.open_label is not None:
            tags.open_start -= cut
        self.sent_starts = [s - cut for s in self.sent_starts if s >= cut]
        self.piece_start = 0
        self.drops = [(i - cut, line) for i, line in self.drops if i > cut]
        return self._counted(doc)

    def _line_of(self, index: int) -> int:
        """The line of the current piece's token at `index`."""
        for at, line in reversed(self.drops):
            if at <= self.piece_start:
                break
            if at <= index:
                return line + index - at
        return self.piece_line + index - self.piece_start

    def _counted(self, doc: IobDocument) -> IobDocument:
        report = self.report
        report.documents += 1
        report.tokens += len(doc.words)
        report.longest_document = max(report.longest_document, len(doc.words))
        report.entities.update(label for _, _, label in doc.spans)
        return doc


def _repair_fields(
    path: Path, lineno: int, line: str, token: str, tag: str, report: ReadReport, strict: bool
) -> Tuple[str, str]:
    """(token, tag) of a line with surrounding whitespace, an empty token ("": drop it) or an empty tag."""
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
        return "", ""
    if not tag:
        if strict:
            raise IobError(path, lineno, f"empty tag (strict mode allows no repairs): {line!r}")
        report.add_repair("empty_tag", lineno)
        tag = "O"
    return token, tag


def _read_lines(
    path: Path,
    lines: Iterable[str],
    layout: _FileLayout,
    report: ReadReport,
    docs: _DocumentBuilder,
    group: int,
    strict: bool,
) -> Generator[IobDocument, None, int]:
    """The hot loop: lines to (token, tag) to the document being built; returns the last line number.

    Repairs and cuts are calls out of the loop: a clean token line costs no call but the tag cache's.
    """
    tags, tag_cache = docs.tags, docs.tags.cache
    has_tab, columns, extra_columns = layout.has_tab, layout.columns, layout.has_tab and layout.columns > 2
    sentence_limit, document_limit = docs.sentence_limit, docs.document_limit
    words, sent_starts = docs.words, docs.sent_starts
    in_sentence, lineno, sentence_line, limit_line = False, 0, 0, 0
    for lineno, line in enumerate(lines, 1):
        if not line or line.isspace():
            if in_sentence:
                in_sentence = False
                tags.close(len(words), lineno)
                report.sentences += 1
                if group and len(sent_starts) >= group:
                    yield docs.take(lineno)
                    words, sent_starts = docs.words, docs.sent_starts
            continue
        if line.startswith(DOCSTART):
            report.sentences += in_sentence  # a sentence still open ends here
            in_sentence = False
            if words:
                yield docs.take(lineno)
                words, sent_starts = docs.words, docs.sent_starts
            continue
        if extra_columns:  # token first, tag last, as many TAB columns on every line
            fields = line.split("\t")
            if len(fields) != columns:
                _split_tab(path, lineno, line, columns)  # raises, naming the line
            token, tag = fields[0], fields[-1]
        elif has_tab:
            token, tab, tag = line.partition("\t")
            if not tab or "\t" in tag:
                token, tag = _split_tab(path, lineno, line, columns)
        else:
            token, tag = _split_whitespace(path, lineno, line, columns)
        stripped_token, stripped_tag = token.strip(), tag.strip()
        if len(stripped_token) != len(token) or len(stripped_tag) != len(tag) or not stripped_token or not stripped_tag:
            token, tag = _repair_fields(path, lineno, line, token, tag, report, strict)
            if not token:
                if in_sentence:
                    docs.line_dropped(lineno)
                continue
        if not in_sentence:
            in_sentence = True
            n = len(words)
            if not n:
                docs.doc_line = lineno
            sent_starts.append(n)
            sentence_line = lineno
            # why: each token takes a line or more, so no limit can be reached before this line
            room = document_limit - n
            limit_line = lineno + (sentence_limit if sentence_limit < room else room)
        parsed = tag_cache.get(tag) or tags.parse(tag, lineno)
        if parsed[0] != "O" or tags.open_label is not None:
            tags.step(len(words), parsed[0], parsed[1], lineno)
        if lineno >= limit_line:
            yield from docs.at_limit(group, sentence_line, lineno)
            words, sent_starts, limit_line = docs.words, docs.sent_starts, docs.limit_line
        words.append(token)
    report.sentences += in_sentence
    if words:
        yield docs.take(lineno + 1)
    return lineno


def read_iob(
    path: Path | str,
    *,
    sents_per_doc: int = 1,
    strict: bool = False,
    report: Optional[ReadReport] = None,
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS,
    max_document_tokens: int = MAX_DOCUMENT_TOKENS,
) -> Iterator[IobDocument]:
    """Yield the documents of an IOB file one at a time, filling `report` as it goes.

    `-DOCSTART-` lines separate documents, blank lines separate sentences. Where the file marks no
    documents, every `sents_per_doc` sentences form one. A sentence over `max_sentence_tokens` is cut
    into pieces (sentences of their own), a document over `max_document_tokens` into documents, never
    inside an entity; 0 sets no limit. Raises IobError on input with no safe reading; checks that need
    the whole file (the scheme) raise by the time the last document is yielded.
    """
    path = Path(path)
    check_read_options(sents_per_doc, max_sentence_tokens, max_document_tokens)
    report = report if report is not None else ReadReport(path=str(path))
    layout = _scan_layout(path)
    _describe_layout(report, layout, sents_per_doc)
    tags = _TagState(path, report, strict)
    group = 0 if report.document_boundaries else max(1, sents_per_doc)
    docs = _DocumentBuilder(path, report, tags, strict, max_sentence_tokens, max_document_tokens)
    try:
        with path.open("r", encoding="utf-8-sig", newline=None) as f:
            last_line = yield from _read_lines(path, _lines(f), layout, report, docs, group, strict)
    except UnicodeDecodeError as err:
        with path.open("rb") as raw:
            hint = not_utf8_hint(raw.read(256))
        raise IobError(path, _first_undecodable_line(path), f"not valid UTF-8 ({err.reason}){hint}") from None
    if report.tokens == 0:
        raise IobError(path, max(last_line, 1), "the file holds no token lines")
    tags.finish()
    tags.check_some_outside()


def located_documents(path: Path | str, **read_options) -> Iterator[Tuple[IobDocument, List[int]]]:
    """`read_iob`'s documents, each with the line of each of its tokens (1-based, as the reader counts them).

    A document's tokens are the token lines from its first line on, skipping blank lines, -DOCSTART-
    lines and lines dropped for an empty token: a second pass over the file, split as the reader splits
    it, finds them. Every token found is checked against the document's word.
    """
    path = Path(path)
    layout = _scan_layout(path)
    with path.open("r", encoding="utf-8-sig", newline=None) as f:
        numbered = enumerate(_lines(f), 1)
        for document in read_iob(path, **read_options):
            lines: List[int] = []
            for lineno, line in numbered:
                if lineno < document.first_line:
                    continue
                token = _token_of(path, lineno, line, layout)
                if not token:
                    continue
                if token != document.words[len(lines)]:  # a bug, not the user's: the two passes disagree
                    raise ValueError(
                        f"{path}:{lineno}: token {token!r} where the reader has {document.words[len(lines)]!r}"
                    )
                lines.append(lineno)
                if len(lines) == len(document.words):
                    break
            yield document, lines


def _token_of(path: Path, lineno: int, line: str, layout: _FileLayout) -> str:
    """The token of a line as `_read_lines` reads it, stripped; "" for a line that holds none."""
    if not line or line.isspace() or line.startswith(DOCSTART):
        return ""
    if layout.has_tab:
        token = line.split("\t", 1)[0]
    else:
        token = _split_whitespace(path, lineno, line, layout.columns)[0]
    return token.strip()


def check_read_options(sents_per_doc: int, max_sentence_tokens: int, max_document_tokens: int) -> None:
    """The numbers that say how a file is cut into documents: one sentence when one cannot be meant."""
    if sents_per_doc < 1:
        raise SetupError(f"sents_per_doc must be at least 1 (sentences per document), not {sents_per_doc}")
    for name, value in (("max_sentence_tokens", max_sentence_tokens), ("max_document_tokens", max_document_tokens)):
        if value < 0:
            raise SetupError(f"{name} must be a number of tokens, or 0 for no limit, not {value}")


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
