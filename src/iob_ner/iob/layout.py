"""A file's layout before parsing: separator, column count, BOM, line endings, -DOCSTART- lines, and
splitting one line into its token and tag."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from ..util.errors import IobError
from .report import ReadReport

DOCSTART = "-DOCSTART-"


@dataclass
class FileLayout:
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


def scan_layout(path: Path, chunk_size: int = 1 << 20) -> FileLayout:
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
    layout = FileLayout(has_tab, bom, crlf, docstarts, first, _usual_columns(body, has_tab))
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


def describe_layout(report: ReadReport, layout: FileLayout, sents_per_doc: int) -> None:
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


def split_tab(path: Path, lineno: int, line: str, columns: int) -> Tuple[str, str]:
    """(token, tag) of a TAB-separated line: the first and last fields, if it has the file's column count."""
    fields = line.split("\t")
    if len(fields) == 1:
        raise IobError(path, lineno, f"no TAB between token and tag (the file is TAB-separated): {line!r}")
    if len(fields) != columns:
        raise IobError(path, lineno, f"{len(fields)} TAB-separated columns where the file has {columns}: {line!r}")
    return fields[0], fields[-1]


def split_whitespace(path: Path, lineno: int, line: str, columns: int) -> Tuple[str, str]:
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
