"""What the reader found in one file: its layout, scheme, counts, and every repair with its first lines."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

FIRST_LINES_KEPT = 5


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
