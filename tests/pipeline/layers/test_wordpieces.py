"""The cached wordpieces build the batch spacy-transformers builds: the same ids, mask, type ids, strings,
lengths and token alignment, for short documents, a long one split into overlapping spans, whitespace
tokens, a repeated text, and a text that spells a special token."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin
from support.paths import ROOT
from support.pipelines import same_transformer_batch

from iob_ner.pipeline.layers import wordpieces
from iob_ner.pipeline.layers.pooling import Listener
from iob_ner.pipeline.layers.speedups import install, release
from iob_ner.util.runtime import resolve_transformer
from iob_ner.util.tiny import make_tiny_bert


@pytest.fixture(scope="module")
def nlp(tmp_path_factory):
    model = make_tiny_bert(resolve_transformer("embedded"), tmp_path_factory.mktemp("bert") / "bert")
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "iob_ner.TransformerModel.v1",
                "name": str(model),
                "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12},
            }
        },
    )
    nlp.initialize()
    return nlp


def _docs(nlp):
    docs = _converted(nlp, ROOT / "assets" / "train.tsv") + _converted(nlp, ROOT / "assets" / "dev.tsv")
    long_words = [token.text for doc in docs[:6] for token in doc]  # > 16 tokens: overlapping spans
    docs.append(Doc(nlp.vocab, words=long_words))
    docs.append(Doc(nlp.vocab, words=["ZnO", "\n", "films", " ", "grew"], spaces=[True, False, True, False, False]))
    docs.append(Doc(nlp.vocab, words=["the", "[PAD]", "and", "[SEP]", "tokens"]))
    docs.append(docs[0].copy())  # the same text twice in a batch
    return docs


def _converted(nlp, path):
    import tempfile
    from pathlib import Path

    from iob_ner.corpus.convert import convert_iob

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.spacy"
        convert_iob(path, out)
        return list(DocBin().from_disk(out).get_docs(nlp.vocab))


def test_the_cached_batch_is_spacy_transformers_batch(nlp):
    from spacy_transformers.layers.transformer_model import forward

    model = nlp.get_pipe("transformer").model
    docs = _docs(nlp)
    cache = wordpieces.Cache(model.tokenizer)
    for start in range(0, len(docs), 7):
        batch = docs[start : start + 7] + docs[-4:]
        theirs, _ = forward(model, batch, False)
        for _ in range(2):  # tokenized, then read from the cache
            ours, _ = wordpieces.cached_forward(model, batch, False, cache=cache)
            same_transformer_batch(ours, theirs)
            numpy.testing.assert_allclose(
                ours.model_output.last_hidden_state, theirs.model_output.last_hidden_state, atol=1e-6
            )
            assert len(ours.split_by_doc()) == len(theirs.split_by_doc()) == len(batch)
            for mine, doc_data in zip(ours.split_by_doc(), theirs.split_by_doc()):
                assert numpy.array_equal(mine.align.dataXd, doc_data.align.dataXd)
                assert numpy.array_equal(mine.align.lengths, doc_data.align.lengths)
                assert mine.wordpieces.strings == doc_data.wordpieces.strings
                assert [t.shape for t in mine.tensors] == [t.shape for t in doc_data.tensors]


def test_batch_id_is_spacy_transformers(nlp):
    from spacy_transformers.layers.listener import TransformerListener

    docs = _docs(nlp)
    for start in range(0, len(docs), 5):
        batch = docs[start : start + 5]
        assert Listener.get_batch_id(batch) == TransformerListener.get_batch_id(batch)
        assert Listener.get_batch_id(list(batch)) == TransformerListener.get_batch_id(batch)
    assert Listener.get_batch_id(docs[1:3]) == TransformerListener.get_batch_id(docs[1:3])
    assert Listener.get_batch_id([]) == TransformerListener.get_batch_id([]) == 0
    # spacy-transformers' own class is left as it is: the transformer component computes the id with it
    assert TransformerListener.get_batch_id.__func__.__module__ == "spacy_transformers.layers.listener"


def test_the_training_callback_attaches_warms_and_releases_the_cache(nlp):
    docs = _docs(nlp)
    trf = nlp.get_pipe("transformer").model
    assert trf.wordpiece_cache is None  # a pipeline outside training: spacy-transformers' forward
    try:
        got = install(nlp, "fp32")  # no training corpus to read here: the spans are cached as they come
        assert "wordpieces cached as they come" in got
        cache = trf.wordpiece_cache
        assert cache is not None and not cache.entries
        spans = wordpieces.warm(trf, docs, batch_size=5)
        assert spans == len(cache.entries) > len(docs) - 2  # the long doc has several, the copy none of its own
        before = dict(cache.entries)
        theirs = nlp.get_pipe("transformer").model.predict(docs[:3])
        assert cache.entries == before  # every span came from the cache
    finally:
        release(nlp)
    assert trf.wordpiece_cache is None
    plain = trf.predict(docs[:3])
    same_transformer_batch(theirs, plain)
