"""Tag schemes: decoding one file's tags into entity spans (inferring IOB2, IOB1, IOBES, BILOU or IO) and
encoding spans back into tags."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from ..util.errors import IobError
from .report import FIRST_LINES_KEPT, REPAIRS, ReadReport

PREFIXES = "BIELSU"
# Tag prefix letters as written, lower case included (b-skill is B- + skill, never a bare label "b-skill").
_PREFIX_OF = {**{c: c for c in PREFIXES}, **{c.lower(): c for c in PREFIXES}}


# Written schemes, with the prefixes that end an entity and mark a one-token entity (BILUO is spaCy's name).
SCHEME_END_TAGS = {"IOB2": None, "IOB1": None, "IOBES": ("E", "S"), "BILOU": ("L", "U"), "BILUO": ("L", "U")}
Span = Tuple[int, int, str]  # token start, token end (exclusive), label


class TagState:
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
