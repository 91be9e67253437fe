"""Texts of any length through a pipeline in passes of bounded size, with the entities of the text whole.

Two cuts, for two reasons:

- `max_length` (default nlp.max_length): the longest text the pipeline sees as one document. A longer
  text is cut (after a blank line, else a sentence end, else whitespace) into chunks, each a document of
  its own, as spaCy would refuse it whole.
- `batch_chars`: the most characters of text in one pass of the pipeline. spacy-transformers runs every
  window of a doc in one batch (its max_batch_items groups docs, never cuts one), so the attention
  scores of all the windows of a doc exist at once: 12 heads x 373 x 373 floats a window with
  all-MiniLM-L6-v2, 1.6 GB for a 300,000-character doc, and a million characters took predict to a
  6.2 GB peak. So a chunk longer than `batch_chars` goes through in pieces of at most that many
  characters, cut the same way, and the texts of a batch go in passes of at most that many characters.

A piece is not run alone: its Doc also holds the tokens around it that the model looks at (`Window`),
and only the entities that start in the piece are its own. With spacy-transformers' strided windows,
the Doc starts where a window of the whole chunk starts, so every token of the piece is seen through
exactly the windows it would be seen through in the whole chunk: the streamed entities are those of the
chunk in one pass, but for float rounding (a batch of other shapes), which flips the rare near-tie.
Other pipelines get a margin of `MARGIN` tokens on each side (exact for models that look that far or
less: a CNN tok2vec, rules; a transformer over whole docs or sentences sees each piece as its own doc).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

# Characters of text in one pass of the pipeline, and the longest piece of a text. On the CPU with
# all-MiniLM-L6-v2, predict on a 300,000-character line peaked at 965 MB with 25,000, 1,041 MB with
# 50,000 and 1,210 MB with 100,000 (loading the pipeline alone peaks near 960 MB). A piece also runs the
# context around it, about 290 tokens with 256-token windows: 3 % more work at 50,000 characters.
BATCH_CHARS = 50_000
MARGIN = 128  # tokens of context on each side of a piece, for a pipeline without strided windows

# Where a long text is cut, best first: after a blank line, after a sentence end or a newline, after
# any whitespace. Each match ends the chunk with its whitespace and must be followed by text (the
# lookahead), so the next chunk starts with a token and both tokenize as the text whole does.
CUTS = tuple(re.compile(p + r"(?=\S)") for p in (r"\n[^\S\n]*\n\s*", r"[.?!]\s+|\n\s*", r"\s+"))


def split_text(text: str, max_length: int) -> List[Tuple[int, str]]:
    """(offset, chunk) pieces of at most `max_length` characters that join back into `text` exactly."""
    pieces: List[Tuple[int, str]] = []
    start = 0
    while len(text) - start > max_length:
        window = text[start : start + max_length + 1]  # one more: the character after a cut must be text
        end = max_length  # a hard cut when the window holds no whitespace followed by text
        for pattern in CUTS:
            last = None
            for last in pattern.finditer(window):
                pass
            if last is not None and last.end() <= max_length:
                end = last.end()
                break
        pieces.append((start, text[start : start + end]))
        start += end
    pieces.append((start, text[start:]))
    return pieces


@dataclass(frozen=True)
class Window:
    """How far the pipeline looks around a token: spacy-transformers' windows of `size` tokens every
    `stride` tokens from the start of the doc, or (stride 0) a margin of `size` tokens on each side."""

    size: int
    stride: int = 0

    def context(self, start: int, end: int, length: int) -> Tuple[int, int]:
        """The tokens [c, d) of a doc of `length` tokens to run so that each token of [start, end) is seen
        as in the whole doc. Strided: c is the start of the first window over `start`, d the end of the
        last window over `end - 1`; the doc [c, d) then has exactly those windows and no other."""
        if not self.stride:
            return max(0, start - self.size), min(length, end + self.size)
        first = max(0, (start - self.size) // self.stride + 1)  # the first k with k*stride + size > start
        last = (end - 1) // self.stride
        return first * self.stride, min(length, last * self.stride + self.size)


def pipeline_window(nlp: Language) -> Window:
    """The pipeline's Window: its transformer's strided windows where it has one, else the margin."""
    strided = set()
    for name in nlp.pipe_names:
        model = nlp.config["components"].get(name, {}).get("model")
        spans = model.get("get_spans") if isinstance(model, dict) else None
        if isinstance(spans, dict) and str(spans.get("@span_getters", "")).startswith(
            "spacy-transformers.strided_spans"
        ):
            strided.add((int(spans["window"]), int(spans["stride"])))
    if len(strided) == 1:
        size, stride = strided.pop()
        if 0 < stride <= size:  # a larger stride leaves tokens out of every window: nothing to align to
            return Window(size, stride)
    # Two transformers with different windows cannot both be aligned: a margin as wide as the widest.
    return Window(max([MARGIN] + [size for size, _ in strided]))


@dataclass
class Part:
    """One doc of a pass: a whole chunk (a str, tokenized by the pipeline) or a piece of a chunk with
    its context (a Doc of the chunk's own tokens), and what to keep of it."""

    index: int  # the text's place in its batch
    chunk: int  # the max_length chunk of the text it comes from (0: the first)
    offset: int  # where the doc starts in the text, in characters
    content: Optional[Union[str, Doc]]  # None once the pass has run: its Doc is no longer held
    chars: int
    keep: Optional[Tuple[int, int]] = None  # the doc's tokens whose entities are this part's (None: all)


def piece_chars(nlp: Language, batch_chars: int) -> int:
    """The longest piece: `batch_chars`, or less where token_ner scores with dropout samples, since
    it runs each doc with entities that many times more, all copies in one batch."""
    samples = max([int(getattr(pipe, "samples", 0) or 0) for _, pipe in nlp.pipeline] + [1])
    return max(1, batch_chars // samples)


def text_parts(nlp: Language, text: str, index: int, max_length: int, longest: int, window: Window) -> Iterator[Part]:
    """The parts of one text, lazily: a chunk of up to `longest` characters whole, a longer one in
    pieces (each built only when the pass that runs it is being filled)."""
    for number, (offset, chunk) in enumerate(split_text(text, max_length)):
        if len(chunk) <= longest:
            yield Part(index, number, offset, chunk, len(chunk))
        else:
            yield from _pieces(nlp, chunk, Part(index, number, offset, None, 0), longest, window)


def _pieces(nlp: Language, chunk: str, where: Part, longest: int, window: Window) -> Iterator[Part]:
    # The chunk's tokens, a piece at a time: each piece ends after whitespace and the next starts with
    # text, so they are the tokens of the chunk whole. Held as lists of words for one chunk at a time
    # (a few tens of MB for a million characters), never as a Doc of the chunk.
    words: List[str] = []
    spaces: List[bool] = []
    starts: List[int] = []
    bounds = [0]
    for at, piece in split_text(chunk, longest):
        for token in nlp.make_doc(piece):
            words.append(token.text)
            spaces.append(bool(token.whitespace_))
            starts.append(at + token.idx)
        bounds.append(len(words))
    starts.append(len(chunk))
    for a, b in zip(bounds, bounds[1:]):
        c, d = window.context(a, b, len(words))
        doc = Doc(nlp.vocab, words=words[c:d], spaces=spaces[c:d])
        yield Part(where.index, where.chunk, where.offset + starts[c], doc, starts[d] - starts[c], (a - c, b - c))


def passes(parts: Iterable[Part], batch_size: int, batch_chars: int) -> Iterator[List[Part]]:
    """The parts in passes of at most `batch_size` docs and `batch_chars` characters (a longer part alone)."""
    group: List[Part] = []
    chars = 0
    for part in parts:
        if group and (len(group) == batch_size or chars + part.chars > batch_chars):
            yield group
            group, chars = [], 0
        group.append(part)
        chars += part.chars
    if group:
        yield group
