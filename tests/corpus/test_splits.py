"""Stratified document splits and folds: disjoint, complete, seeded, every label spread where it can be."""

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iob_ner.corpus.splits import SplitError, missing_labels, stratified_parts

LABELS = "ABCDEFG"


def corpus(seed: int, n: int, most_labels: int = 3):
    rng = random.Random(seed)
    return [
        Counter({label: rng.randint(1, 4) for label in rng.sample(LABELS, rng.randint(0, most_labels))})
        for _ in range(n)
    ]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 80), k=st.integers(2, 5), split_seed=st.integers(0, 3))
def test_parts_are_complete_nonempty_and_keep_every_label_with_k_documents_in_every_part(seed, n, k, split_seed):
    """With one label a document the guarantee always holds (NCBI-disease, most job-ad exports)."""
    labels = corpus(seed, n, most_labels=1)
    part = stratified_parts(labels, [1.0] * k, split_seed)
    assert len(part) == n and set(part) == set(range(k))  # each document in exactly one part, no part empty
    assert missing_labels(labels, part, k) == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 80), k=st.integers(2, 5), split_seed=st.integers(0, 3))
def test_several_labels_a_document_leave_gaps_only_where_none_can_be_filled_by_one_move(seed, n, k, split_seed):
    labels = corpus(seed, n)
    part = stratified_parts(labels, [1.0] * k, split_seed)
    assert len(part) == n and set(part) == set(range(k))
    for label, p in missing_labels(labels, part, k):
        # every document with the label sits where moving it out would open another gap
        for i in (i for i, c in enumerate(labels) if label in c):
            moved = list(part)
            moved[i] = p
            assert (
                len(missing_labels(labels, moved, k)) >= len(missing_labels(labels, part, k))
                or Counter(part)[part[i]] == 1
            )


def test_three_documents_with_two_labels_each_cannot_fill_two_parts_and_say_so():
    labels = [Counter({"A": 1, "B": 1}), Counter({"B": 1, "C": 1}), Counter({"A": 1, "C": 1}), Counter()]
    part = stratified_parts(labels, [1.0, 1.0], 0)
    assert missing_labels(labels, part, 2)


def test_same_seed_same_split_other_seed_other_split():
    labels = corpus(1, 60)
    assert stratified_parts(labels, [0.8, 0.1, 0.1], 0) == stratified_parts(labels, [0.8, 0.1, 0.1], 0)
    assert stratified_parts(labels, [0.8, 0.1, 0.1], 0) != stratified_parts(labels, [0.8, 0.1, 0.1], 1)


def test_shares_are_followed_and_a_single_document_label_stays_in_the_largest_part():
    labels = corpus(2, 100)
    labels[7] = Counter({"RARE": 1})
    part = stratified_parts(labels, [0.8, 0.1, 0.1], 0)
    sizes = Counter(part)
    assert 75 <= sizes[0] <= 85 and 7 <= sizes[1] <= 13 and 7 <= sizes[2] <= 13
    assert part[7] == 0


def test_more_parts_than_documents_is_one_sentence():
    with pytest.raises(SplitError, match="3 document\\(s\\) cannot be split into 5 parts"):
        stratified_parts(corpus(0, 3), [1.0] * 5, 0)
