"""Writer of IOB files in the UBIAI export shape."""

from __future__ import annotations

from typing import IO, Iterable, List, Sequence, Tuple

from .layout import DOCSTART
from .tags import Span, spans_to_tags


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
