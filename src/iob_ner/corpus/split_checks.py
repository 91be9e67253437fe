"""What must hold between train, dev and test, checked alike by `convert` (on the IOB documents) and
`debug-data` (on the .spacy corpora): no document in two splits, no evaluation label that train lacks.

A document is compared by its words, so a re-exported file, a copy under another name or the training file
passed again as test are all found, whatever their bytes. Carving keeps identical documents together
(`splits.stratified_parts` with keys), so only files given by the user can share documents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence

DocumentKey = bytes
# At or above this share of an evaluation split found in another split, the files are the same data: an
# error. Below it, a warning: a few identical short documents (a heading, a boilerplate sentence) happen.
SAME_DATA_SHARE = 0.5
SHOWN = 3  # places quoted per finding


def document_key(words: Iterable[str]) -> DocumentKey:
    """A document's identity by content: its words in order (16 bytes, so millions of documents fit)."""
    return hashlib.blake2b("\n".join(words).encode("utf8"), digest_size=16).digest()


@dataclass
class Overlap:
    """The documents of an evaluation split (dev or test) that an earlier split holds too, word for word."""

    split: str
    shared: Dict[str, int]  # earlier split -> documents of `split` it holds
    total: int  # documents in `split`
    places: List[str]  # where the first few shared documents are, in `split`

    @property
    def count(self) -> int:
        return sum(self.shared.values())

    @property
    def same_data(self) -> bool:
        return self.count >= SAME_DATA_SHARE * self.total

    def sentence(self) -> str:
        share = f"{self.count} of the {self.total} {self.split} documents ({self.count / self.total:.0%})"
        where = " or ".join(f"{name} ({n})" if len(self.shared) > 1 else name for name, n in self.shared.items())
        example = f" (e.g. {', '.join(self.places)})" if self.places else ""
        harm = (
            "the test score would reward what the model memorised or was selected on"
            if self.split == "test"
            else "the best checkpoint would be chosen on documents the model trained on"
        )
        return f"{share} are also in {where}, word for word{example}: {harm}"


def find_overlaps(
    keys: Mapping[str, Sequence[DocumentKey]], places: Mapping[str, Sequence[str]] = {}, dev_is_test: bool = False
) -> List[Overlap]:
    """Dev documents found in train, test documents found in train or dev (not dev when `dev_is_test`), among
    the splits in `keys`; `places[split][i]` names document i of a split (default: "document i")."""
    found = []
    for split, earlier in (("dev", ["train"]), ("test", ["train"] + ([] if dev_is_test else ["dev"]))):
        if not keys.get(split):
            continue
        sets = {name: set(keys[name]) for name in earlier if name in keys}
        shared: Dict[str, int] = {}
        first: List[int] = []
        for i, key in enumerate(keys[split]):
            holder = next((name for name, seen in sets.items() if key in seen), None)
            if holder is not None:
                shared[holder] = shared.get(holder, 0) + 1
                first += [i] if len(first) < SHOWN else []
        if shared:
            named = places.get(split)
            shown = [named[i] if named else f"document {i}" for i in first]
            found.append(Overlap(split, shared, len(keys[split]), shown))
    return found


def unseen_labels(train: Mapping[str, int], evaluated: Mapping[str, int]) -> Dict[str, int]:
    """Entities per label of an evaluation split whose label train never shows (the model cannot predict them)."""
    return {label: n for label, n in evaluated.items() if n and not train.get(label)}


def listing(counts: Mapping[str, int]) -> str:
    """ "A (12), B (3)": labels by count, most first."""
    return ", ".join(f"{label} ({n})" for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def unseen_sentence(split: str, unseen: Mapping[str, int]) -> str:
    return (
        f"{split}: {sum(unseen.values())} entities with label(s) never seen in train: {listing(unseen)}; "
        f"the model can never predict them, and they lower {split} recall"
    )
