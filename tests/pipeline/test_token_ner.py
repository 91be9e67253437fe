"""token_ner: constrained decoding, learning, scoring and serialisation, on spaCy's CPU tok2vec (fast)."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from support.pipelines import is_valid_biluo, make_examples, trained_nlp

from iob_ner.pipeline.token_ner import _BiluoDecoder, _same_token_tags


def test_decoder_returns_only_valid_sequences():
    names = ["O"] + [f"{p}-{l}" for l in ("A", "B") for p in "BILU"]
    decoder = _BiluoDecoder(names)
    rng = numpy.random.default_rng(0)
    lengths = [1, 2, 5, 9, 17]
    scores = rng.random((sum(lengths), len(names))).astype("float32")
    for probabilities in (True, False):
        paths = decoder.decode(scores, lengths, probabilities=probabilities)
        assert [len(p) for p in paths] == lengths
        for path in paths:
            assert is_valid_biluo([names[i] for i in path])


def test_decoder_keeps_a_confident_valid_sequence():
    names = ["O", "B-X", "I-X", "L-X", "U-X"]
    want = [1, 2, 3, 0, 4]
    scores = numpy.full((5, 5), 0.01, dtype="float32")
    scores[numpy.arange(5), want] = 0.96
    assert _BiluoDecoder(names).decode(scores, [5])[0].tolist() == want


def test_token_ner_learns_scores_and_writes_ents():
    nlp, examples = trained_nlp()
    scores = nlp.evaluate(examples)
    assert scores["ents_f"] > 0.9
    doc = nlp("ZnO films grown by pulsed laser deposition")
    assert [(e.text, e.label_) for e in doc.ents] == [("ZnO", "MAT"), ("pulsed laser deposition", "SMT")]


def test_token_ner_saves_and_loads_through_spacy_load(tmp_path):
    nlp, _ = trained_nlp(30)
    text = "we measured TiO2 by X-ray diffraction"
    before = [(e.text, e.label_) for e in nlp(text).ents]
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert loaded.get_pipe("ner").labels == ("CMT", "MAT", "SMT")
    assert [(e.text, e.label_) for e in loaded(text).ents] == before
    batch = list(loaded.pipe([text, "", "NiO was studied by Raman spectroscopy"], batch_size=2))
    assert [(e.text, e.label_) for e in batch[0].ents] == before and len(batch[1].ents) == 0


def test_token_ner_needs_entities_to_learn():
    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner")
    empty = [Example(Doc(nlp.vocab, words=["a"]), Doc(nlp.vocab, words=["a"]))]
    with pytest.raises(ValueError, match="no entities"):
        nlp.initialize(lambda: empty)


@pytest.mark.parametrize("normalize", [False, True])
def test_whitespace_tokens_never_begin_or_end_an_entity(normalize):
    nlp, _ = trained_nlp(30)
    ner = nlp.get_pipe("ner")
    ner.model.get_ref("output_layer").attrs["softmax_normalize"] = normalize
    doc = nlp.make_doc("ZnO \n films  grown")  # ZnO, "\n", films, " ", grown
    assert [t.is_space for t in doc] == [False, True, False, True, False]
    # scores that want a one-token entity on each whitespace token and "films  grown" as one entity
    names = ner.tag_names
    flat = numpy.full((len(doc), len(names)), 1e-3 if normalize else -5.0, dtype="float32")
    for i, tag in enumerate(["U-MAT", "U-SMT", "B-SMT", "U-SMT", "L-SMT"]):
        flat[i, names.index(tag)] = 1.0 if normalize else 5.0
    flat[1, names.index("O")] = flat[3, names.index("I-SMT")] = 0.5 if normalize else 2.0
    paths = ner.decoder.decode(ner._no_space_boundaries(flat, [doc]), [len(doc)], probabilities=normalize)
    assert ner.decoder.entities(paths[0]) == [(0, 1, "MAT"), (2, 5, "SMT")]  # the space inside an entity stays
    for text in ("ZnO films grown by pulsed laser deposition\n", "NiO  was studied\n\n", " \n "):
        for ent in nlp(text).ents:
            assert not ent[0].is_space and not ent[-1].is_space


def test_viterbi_on_a_long_doc_resolves_what_float32_sums_would_round_away():
    # 200,000 tokens of O scored 10: unshifted, the path's float32 sum reaches 2,000,000, where float32 steps
    # by 0.125 and the last token's 0.01 lead of U-A over O would be rounded away
    names = ["O", "B-A", "I-A", "L-A", "U-A"]
    scores = numpy.full((200_000, len(names)), -5.0, dtype="float32")
    scores[:, 0] = 10.0
    scores[-1, 4] = 10.01
    (path,) = _BiluoDecoder(names).decode(scores, [len(scores)], probabilities=False)
    assert path[-1] == 4 and not path[:-1].any()


def _thinc_gold(example, names):
    """What the loss trained on before: spaCy's aligned tags, as indices in `names` (-1: missing)."""
    return [-1 if tag in (None, "-", "") else names.index(tag) for tag in example.get_aligned_ner()]


def _gold_cases(vocab):
    """Examples of every shape the gold tags take: whole, partly missing, unannotated, a whitespace token, and
    a predicted doc tokenized otherwise than the reference."""
    words = "LiFePO4 is a cathode made by sol - gel synthesis".split()
    cases = []
    whole = Doc(vocab, words=words, ents=["B-MAT", "O", "O", "O", "O", "O", "B-SMT", "I-SMT", "I-SMT", "I-SMT"])
    cases.append(Example(Doc(vocab, words=words), whole))
    partial = Doc(vocab, words=words, ents=["B-MAT", "I-MAT", "", "", "O", "O", "B-SMT", "", "O", "B-CMT"])
    cases.append(Example(Doc(vocab, words=words), partial))
    cases.append(Example(Doc(vocab, words=words), Doc(vocab, words=words)))
    spaced = ["ZnO", "\n", "films", "by", "pulsed", "laser", "deposition"]
    gold = Doc(vocab, words=spaced, ents=["B-MAT", "", "O", "O", "B-SMT", "I-SMT", "I-SMT"])
    cases.append(Example(Doc(vocab, words=spaced), gold))
    joined = "LiFePO4 is a cathode made by sol-gel synthesis".split()
    cases.append(Example(Doc(vocab, words=joined), whole))
    cases.append(Example(Doc(vocab, words=[]), Doc(vocab, words=[])))
    return cases


def test_gold_tags_read_from_arrays_are_spacys_aligned_tags():
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("token_ner", name="ner")
    for label in ("CMT", "MAT", "SMT"):
        ner.add_label(label)
    examples = _gold_cases(nlp.vocab) + make_examples(nlp)
    for example in examples:  # alone, and all in one batch
        assert ner.gold_tag_ids([example]).tolist() == _thinc_gold(example, ner.tag_names), example.reference.text
    assert ner.gold_tag_ids(examples).tolist() == [i for eg in examples for i in _thinc_gold(eg, ner.tag_names)]
    labels = {nlp.vocab.strings[label]: i for i, label in enumerate(ner.labels)}
    read = [tags is not None for tags in _same_token_tags(examples, labels)]
    # the whitespace token and the other tokenization take spaCy's own path
    assert read == [True, True, True, False, False, True] + [True] * len(make_examples(nlp))
    only_two = {nlp.vocab.strings["MAT"]: 1, nlp.vocab.strings["SMT"]: 2}  # CMT unknown: its docs, spaCy's path
    assert [tags is not None for tags in _same_token_tags(examples, only_two)][6:] == [True, True, False, False]
    assert _same_token_tags(examples[5:6], only_two)[0].tolist() == []  # an empty doc alone


def test_the_loss_is_thincs_sequence_crossentropy():
    from thinc.api import SequenceCategoricalCrossentropy

    nlp = spacy.blank("en")
    ner = nlp.add_pipe("token_ner", name="ner")
    for label in ("CMT", "MAT", "SMT"):
        ner.add_label(label)
    examples = _gold_cases(nlp.vocab)
    rng = numpy.random.default_rng(0)
    scores = [rng.dirichlet(numpy.ones(len(ner.tag_names)), size=len(eg.predicted)).astype("f") for eg in examples]
    loss, d_scores = ner.get_loss(examples, scores)
    truths = [[tag if tag not in ("-", "") else None for tag in eg.get_aligned_ner()] for eg in examples]
    d_thinc, loss_thinc = SequenceCategoricalCrossentropy(names=ner.tag_names, normalize=False)(scores, truths)
    assert loss == pytest.approx(float(loss_thinc), rel=1e-6)
    assert [d.shape for d in d_scores] == [d.shape for d in d_thinc]
    for ours, theirs in zip(d_scores, d_thinc):
        numpy.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
