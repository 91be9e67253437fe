"""The padding the transformer computes: training batches of similar wordpiece length (spaCy's
batch_by_padded with iob_ner.wordpiece_count.v1), prediction in groups of similar length, and the counters
that measure both (src/iob_ner/training/batching.py, src/iob_ner/pipeline/layers/transformer.py)."""

import random

import numpy
import pytest
import spacy
from spacy.training.batchers import minibatch_by_words
from spacy.util import registry
from support.paths import ROOT

from iob_ner.pipeline.layers.transformer import (
    Padding,
    TransformerShim,
    length_groups,
    padding_share,
    transformer_shims,
)


@pytest.mark.parametrize(
    "lengths",
    [[5, 40, 7, 39, 12, 100, 6, 6, 33, 80], [3] * 7 + [9], list(range(1, 300, 7)), [64] * 200 + [2]],
)
def test_length_groups_hold_every_row_once_within_the_ratio_and_the_positions(lengths):
    groups = length_groups(lengths, positions=512, ratio=1.25)
    assert groups is not None
    assert sorted(i for rows, _ in groups for i in rows) == list(range(len(lengths)))
    for rows, width in groups:
        assert width == max(lengths[i] for i in rows)
        assert min(lengths[i] for i in rows) * 1.25 >= width
        assert len(rows) == 1 or len(rows) * width <= 512


def test_a_batch_of_similar_lengths_is_run_whole():
    assert length_groups([30, 31, 28, 33]) is None
    assert length_groups([]) is None


def test_grouped_prediction_computes_less_padding_for_the_same_entities(tiny_sample):
    """Texts of very different lengths in one batch: grouped, the transformer runs fewer positions, the
    same real wordpieces, and the pipeline finds the same entities as with each batch run whole."""
    from iob_ner.util.tiny import tiny_training_setup

    corpus, model = tiny_sample
    nlp, examples, optimizer, dropout, _ = tiny_training_setup(ROOT / "configs" / "config.cfg", corpus, model)
    optimizer.learn_rate = 0.001
    for _ in range(2):
        nlp.update(examples[:8], drop=dropout, sgd=optimizer)
    texts = [eg.reference.text for eg in examples[:40]] + ["LiFePO4 ."] * 5
    assert max(map(len, texts)) > 4 * min(map(len, texts))
    (shim,) = transformer_shims(nlp)
    runs = {}
    for grouped in (False, True):
        shim.padding["predict"] = Padding()
        TransformerShim.group_rows = grouped
        try:
            runs[grouped] = (
                [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)],
                shim.padding["predict"],
            )
        finally:
            TransformerShim.group_rows = True
    (whole_ents, whole), (grouped_ents, grouped) = runs[False], runs[True]
    assert grouped_ents == whole_ents
    assert grouped.real == whole.real and grouped.rows == whole.rows
    assert grouped.positions < 0.8 * whole.positions
    assert padding_share(nlp, "predict") == grouped.share


def test_wordpiece_count_counts_the_transformers_wordpieces_and_makes_batches_of_less_padding(tiny_sample):
    """iob_ner.wordpiece_count.v1 gives each text's wordpieces (the tokenizer's own count); spaCy's
    batch_by_padded sorting by it pads the sample's batches less than batch_by_words in corpus order."""
    from transformers import AutoTokenizer

    corpus, model = tiny_sample
    count = registry.misc.get("iob_ner.wordpiece_count.v1")(str(model))
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    docs = list(spacy.tokens.DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    sentences = [sent.as_doc() for doc in docs for sent in doc.sents] if docs[0].has_annotation("SENT_START") else docs
    assert [count(doc) for doc in sentences] == [len(tokenizer(doc.text)["input_ids"]) for doc in sentences]
    random.Random(0).shuffle(sentences)

    def share(batches) -> float:
        lengths = [[count(doc) for doc in batch] for batch in batches]
        return 1 - sum(map(sum, lengths)) / sum(len(b) * max(b) for b in lengths)

    padded = registry.batchers.get("spacy.batch_by_padded.v1")(
        size=800, buffer=256, discard_oversize=False, get_length=count
    )
    by_length = list(padded(sentences))
    assert sorted(id(doc) for batch in by_length for doc in batch) == sorted(id(doc) for doc in sentences)
    assert share(by_length) < share(minibatch_by_words(sentences, size=500)) - 0.05


def test_padding_counts_rows_positions_and_squares():
    padding = Padding()
    padding.add([3, 5], (2, 5))
    before = Padding(*padding.astuple())
    padding.add([4], (1, 4))
    assert padding.astuple() == (3, 14, 12, 2 * 25 + 16, 9 + 25 + 16)
    assert padding.since(before).astuple() == (1, 4, 4, 16, 16)
    assert numpy.isclose(padding.share, 2 / 14)
