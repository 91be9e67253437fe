"""The batched pooling is spacy-transformers' `trfs2arrays`: the same token vectors and the same gradients
back to every document's wordpieces, bit for bit (a long document split into overlapping spans, tokens of
several wordpieces, a whitespace token); a batch with an empty document takes spacy-transformers' own
forward; training losses are the same with it installed."""

import numpy
from spacy.tokens import Doc
from spacy.util import registry
from support.paths import ROOT

from iob_ner.pipeline.layers import pooling
from iob_ner.util.tiny import tiny_training_setup

CONFIG = ROOT / "configs" / "config.cfg"


def _layer_and_data(nlp, docs):
    """token_ner's trfs2arrays layer and the transformer's per-document output for `docs`."""
    trf_datas = nlp.get_pipe("transformer").model.predict(docs).doc_data
    (layer,) = [node for node in nlp.get_pipe("ner").model.walk() if node.name == "trfs2arrays"]
    return layer, trf_datas


def _both(layer, trf_datas, seed=0):
    """(outputs, gradients) of spacy-transformers' forward and of the batched one, for the same upstream
    gradient."""
    from spacy_transformers.layers.trfs2arrays import forward

    results = []
    for func in (forward, pooling.batched_forward):
        outputs, backprop = func(layer, trf_datas, True)
        rng = numpy.random.default_rng(seed)
        d_outputs = [rng.standard_normal(out.shape).astype("float32") for out in outputs]
        grads = [d.model_output.last_hidden_state for d in backprop(d_outputs)]
        results.append((outputs, grads))
    return results


def test_batched_pooling_is_spacy_transformers(tiny_sample):
    corpus, model = tiny_sample
    nlp, examples, *_ = tiny_training_setup(CONFIG, corpus, model)
    docs = [eg.predicted for eg in examples[:12]]
    words = [t.text for doc in docs for t in doc][:300]  # longer than one span of the recipe's window
    docs.append(Doc(nlp.vocab, words=words))
    docs.append(Doc(nlp.vocab, words=["ZnO", "\n", "nanostructures"], spaces=[True, False, False]))
    # the recipe gives a document one span; strided spans overlap, so tokens take wordpieces of two spans
    strided = registry.span_getters.get("spacy-transformers.strided_spans.v1")(window=16, stride=12)
    nlp.get_pipe("transformer").model.attrs["get_spans"] = strided
    layer, trf_datas = _layer_and_data(nlp, docs)
    assert len(trf_datas[-2].model_output.last_hidden_state) > 1
    (theirs, their_grads), (ours, our_grads) = _both(layer, trf_datas)
    assert (
        [o.shape for o in ours] == [o.shape for o in theirs] == [(len(doc), o.shape[1]) for doc, o in zip(docs, ours)]
    )
    for a, b in zip(ours, theirs):
        numpy.testing.assert_array_equal(a, b)
    for a, b in zip(our_grads, their_grads):
        assert a.shape == b.shape
        numpy.testing.assert_array_equal(a, b)
    assert any(numpy.abs(g).sum() > 0 for g in our_grads)


def test_a_batch_with_an_empty_document_takes_spacy_transformers_forward(tiny_sample):
    corpus, model = tiny_sample
    nlp, examples, *_ = tiny_training_setup(CONFIG, corpus, model)
    docs = [examples[0].predicted, Doc(nlp.vocab, words=[]), examples[1].predicted]
    layer, trf_datas = _layer_and_data(nlp, docs)
    assert not pooling._batchable(trf_datas)
    (theirs, their_grads), (ours, our_grads) = _both(layer, trf_datas)
    assert [o.shape for o in ours] == [o.shape for o in theirs] and ours[1].shape[0] == 0
    for a, b in zip(ours + our_grads, theirs + their_grads):
        numpy.testing.assert_array_equal(a, b)


def test_training_with_batched_pooling_is_training_with_spacy_transformers(tiny_sample, tmp_path):
    """The losses of the recipe with iob_ner.TransformerListener.v1, and with spacy-transformers' listener
    named in its place in the config: the same, bit for bit."""
    import torch
    from thinc.api import fix_random_seed

    from iob_ner.training.loop import finish_updates

    theirs_config = tmp_path / "spacy-transformers-listener.cfg"
    text = CONFIG.read_text(encoding="utf8")
    assert '"iob_ner.TransformerListener.v1"' in text
    theirs_config.write_text(
        text.replace('"iob_ner.TransformerListener.v1"', '"spacy-transformers.TransformerListener.v1"'), encoding="utf8"
    )

    def losses(config, batched):
        fix_random_seed(0)
        nlp, examples, optimizer, dropout, _ = tiny_training_setup(config, *tiny_sample)
        layers = [node for node in nlp.get_pipe("ner").model.walk() if node.name == "trfs2arrays"]
        assert len(layers) == 1
        assert any(isinstance(node, pooling.Listener) for node in nlp.get_pipe("ner").model.walk()) == batched
        optimizer.learn_rate = 0.001
        got = []
        for _ in range(4):
            torch.manual_seed(1)
            got.append(nlp.update(examples[:8], drop=dropout, sgd=False)["ner"])
            finish_updates(nlp, optimizer, [])
        return got

    ours, theirs = losses(CONFIG, True), losses(theirs_config, False)
    assert ours == theirs  # bit for bit: the same arithmetic in the same order
    assert theirs[-1] < theirs[0]
