"""Documents as the reader builds them: tokens gathered into sentences and documents, and the cuts of
sentences and documents over a length limit, outside every entity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from ..util.errors import IobError
from .layout import DOCSTART
from .report import ReadReport
from .tags import Span, TagState

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


@dataclass
class IobDocument:
    words: List[str]
    spans: List[Span]
    sent_starts: List[int]  # token index where each sentence starts
    first_line: int


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


class DocumentBuilder:
    """Gathers tokens into sentences and documents; cuts the ones over a limit outside every entity.

    The reader's loop appends to `words` and `sent_starts` and calls `at_limit` at the line where a limit
    may be reached (a token takes a line or more), so the limits cost one comparison a token and no call.
    Every cut falls at a sentence start, where no entity is open.
    """

    def __init__(
        self,
        path: Path,
        report: ReadReport,
        tags: TagState,
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
