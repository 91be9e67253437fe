"""Seeded, stratified splits of whole documents: train/dev/test carving and k folds.

Stratification is iterative (Sechidis, Tsoumakas & Vlahavas 2011, "On the stratification of
multi-label data"): the rarest label is placed first, each of its documents going to the part that
still wants the most of that label, so rare labels spread over every part before common ones fill
them. A repair pass then moves or swaps documents so that every label with at least one document
per part appears in each part. Documents that hold several labels can make that impossible (three
documents labelled {A, B}, {B, C}, {A, C} cannot give two parts all three labels): `missing_labels`
names what is left, for the caller to report.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Dict, Hashable, List, Optional, Sequence

from ..util.errors import SplitError


def _targets(n: int, shares: Sequence[float]) -> List[float]:
    total = sum(shares)
    return [n * share / total for share in shares]


def stratified_parts(
    labels: Sequence[Counter], shares: Sequence[float], seed: int, keys: Optional[Sequence[Hashable]] = None
) -> List[int]:
    """The part (an index into `shares`) of each document, given each document's entity labels.

    Every part gets at least one document; documents stay whole; the same seed gives the same parts.
    `keys`: documents with equal keys (the same words, split_checks.document_key) go to the same part, so
    that a document exported twice cannot be trained on and tested on. Without duplicates the parts are
    exactly those without keys.
    """
    if keys is None or len(set(keys)) == len(keys):
        return _stratified_parts(labels, shares, seed)
    unit_of: Dict[Hashable, int] = {}
    units: List[Counter] = []
    for key, counts in zip(keys, labels):
        if key not in unit_of:
            unit_of[key] = len(units)
            units.append(Counter())
        units[unit_of[key]].update(counts)  # the union: duplicates may be annotated differently
    parts = _stratified_parts(units, shares, seed)
    return [parts[unit_of[key]] for key in keys]


def _stratified_parts(labels: Sequence[Counter], shares: Sequence[float], seed: int) -> List[int]:
    n, k = len(labels), len(shares)
    if k < 1 or any(share <= 0 for share in shares):
        raise SplitError(f"split shares must be positive, not {list(shares)}")
    if n < k:
        raise SplitError(f"{n} document(s) cannot be split into {k} parts: each part needs a document")
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    docs_want = _targets(n, shares)
    label_docs: Dict[str, List[int]] = {}
    for i in order:
        for label in sorted(labels[i]):
            label_docs.setdefault(label, []).append(i)
    label_want = {label: _targets(len(docs), shares) for label, docs in label_docs.items()}
    part = [-1] * n
    remaining = {label: list(docs) for label, docs in label_docs.items()}
    while any(remaining.values()):
        # the label with the fewest unplaced documents goes first (ties: by name, for determinism)
        label = min((l for l, docs in remaining.items() if docs), key=lambda l: (len(remaining[l]), l))
        for i in remaining[label]:
            if part[i] >= 0:
                continue
            want = label_want[label]
            best = max(range(k), key=lambda p: (want[p], docs_want[p], -p))
            _place(i, best, part, labels, label_want, docs_want)
        for docs in remaining.values():
            docs[:] = [i for i in docs if part[i] < 0]
    for i in order:  # documents without entities
        if part[i] < 0:
            _place(i, max(range(k), key=lambda p: (docs_want[p], -p)), part, labels, label_want, docs_want)
    _ensure_nonempty(part, k, order)
    _spread_labels(part, labels, k)
    return part


def _place(
    i: int,
    p: int,
    part: List[int],
    labels: Sequence[Counter],
    label_want: Dict[str, List[float]],
    docs_want: List[float],
) -> None:
    part[i] = p
    docs_want[p] -= 1
    for label in labels[i]:
        label_want[label][p] -= 1


def _ensure_nonempty(part: List[int], k: int, order: List[int]) -> None:
    """Give an empty part a document from the largest part (tiny corpora with few labels)."""
    for p in range(k):
        if p not in part:
            sizes = Counter(part)
            donor = max(range(k), key=lambda q: (sizes[q], -q))
            moved = next(i for i in reversed(order) if part[i] == donor)
            part[moved] = p


def _spread_labels(part: List[int], labels: Sequence[Counter], k: int) -> None:
    """Every label with at least k documents should appear in every part: where one is missing, move a
    document holding it into that part, or swap it for one of that part's documents, whichever first
    lowers the number of (part, label) gaps. Each accepted change lowers it, so this ends."""
    label_docs: Dict[str, List[int]] = {}
    for i, counter in enumerate(labels):
        for label in counter:
            label_docs.setdefault(label, []).append(i)
    spread = {label for label, docs in label_docs.items() if len(docs) >= k}
    gaps = _Gaps(part, labels, spread, k)
    for label in sorted(spread, key=lambda l: (len(label_docs[l]), l)):
        for p in range(k):
            if gaps.count[p][label]:
                continue
            for i in label_docs[label]:
                if gaps.try_move(i, p) or any(gaps.try_swap(i, j) for j in range(len(part)) if part[j] == p):
                    break


class _Gaps:
    """Documents per (part, label), to score a move or a swap by the gaps it opens and closes."""

    def __init__(self, part: List[int], labels: Sequence[Counter], spread: set, k: int) -> None:
        self.part, self.spread = part, spread
        self.labels = [set(counter) & spread for counter in labels]
        self.count = [Counter() for _ in range(k)]
        self.size = Counter(part)
        for i, p in enumerate(part):
            self.count[p].update(self.labels[i])

    def _gaps(self, parts: Sequence[int]) -> int:
        return sum(1 for p in set(parts) for label in self.spread if not self.count[p][label])

    def _move(self, i: int, p: int) -> None:
        old = self.part[i]
        self.count[old].subtract(self.labels[i])
        self.count[p].update(self.labels[i])
        self.size[old] -= 1
        self.size[p] += 1
        self.part[i] = p

    def try_move(self, i: int, p: int) -> bool:
        old = self.part[i]
        if old == p or self.size[old] < 2:
            return False
        before = self._gaps((old, p))
        self._move(i, p)
        if self._gaps((old, p)) < before:
            return True
        self._move(i, old)
        return False

    def try_swap(self, i: int, j: int) -> bool:
        a, b = self.part[i], self.part[j]
        if a == b:
            return False
        before = self._gaps((a, b))
        self._move(i, b)
        self._move(j, a)
        if self._gaps((a, b)) < before:
            return True
        self._move(i, a)
        self._move(j, b)
        return False


def label_counts(labels: Sequence[Counter], part: Sequence[int], k: int) -> List[Counter]:
    """Entities per label in each part."""
    totals = [Counter() for _ in range(k)]
    for counter, p in zip(labels, part):
        totals[p].update(counter)
    return totals


def missing_labels(labels: Sequence[Counter], part: Sequence[int], k: int) -> List[tuple]:
    """(label, part) pairs where a label with at least k documents has none in that part."""
    docs_with = Counter(label for counter in labels for label in counter)
    present = [set() for _ in range(k)]
    for counter, p in zip(labels, part):
        present[p].update(counter)
    return [
        (label, p) for label in sorted(docs_with) if docs_with[label] >= k for p in range(k) if label not in present[p]
    ]
