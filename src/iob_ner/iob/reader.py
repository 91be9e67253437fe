"""Streaming reader for token-per-line IOB files (UBIAI exports, CoNLL-style corpora).

The reader never changes data silently: every repair it makes is counted with its first line numbers in
a `ReadReport`, `strict=True` turns each repair into an `IobError`, and anything without one safe
meaning is an `IobError` naming the file and line. Sentences and documents over a length limit (an
export without blank lines) are cut outside every entity and counted like repairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Generator, Iterable, Iterator, List, Optional, Tuple

from ..util.errors import IobError, SetupError, not_utf8_hint
from .documents import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS, DocumentBuilder, IobDocument
from .layout import DOCSTART, FileLayout, describe_layout, scan_layout, split_tab, split_whitespace
from .report import REPAIRS, ReadReport
from .tags import TagState


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
    layout: FileLayout,
    report: ReadReport,
    docs: DocumentBuilder,
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
                split_tab(path, lineno, line, columns)  # raises, naming the line
            token, tag = fields[0], fields[-1]
        elif has_tab:
            token, tab, tag = line.partition("\t")
            if not tab or "\t" in tag:
                token, tag = split_tab(path, lineno, line, columns)
        else:
            token, tag = split_whitespace(path, lineno, line, columns)
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
    layout = scan_layout(path)
    describe_layout(report, layout, sents_per_doc)
    tags = TagState(path, report, strict)
    group = 0 if report.document_boundaries else max(1, sents_per_doc)
    docs = DocumentBuilder(path, report, tags, strict, max_sentence_tokens, max_document_tokens)
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
    layout = scan_layout(path)
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


def _token_of(path: Path, lineno: int, line: str, layout: FileLayout) -> str:
    """The token of a line as `_read_lines` reads it, stripped; "" for a line that holds none."""
    if not line or line.isspace() or line.startswith(DOCSTART):
        return ""
    if layout.has_tab:
        token = line.split("\t", 1)[0]
    else:
        token = split_whitespace(path, lineno, line, layout.columns)[0]
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
