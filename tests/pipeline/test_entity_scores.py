"""token_ner entity probabilities: forward-backward marginals checked against enumeration of every path,
their place in doc.spans, serialisation, and temperature fitting. Fast: numpy lattices and one tiny pipeline."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from support.pipelines import TRAIN, gold_docs, is_valid_biluo, trained_nlp

from iob_ner.pipeline.token_ner import NEG_INF, SPANS_KEY, _BiluoDecoder
from iob_ner.training.calibration import TEMPERATURE_GRID, fit_temperature, temperature_bce

LABELS = ("A", "B")
NAMES = ["O"] + [f"{p}-{label}" for label in LABELS for p in "BILU"]
DECODER = _BiluoDecoder(NAMES)


def logsumexp(x):
    top = x.max()
    return top + numpy.log(numpy.exp(x - top).sum())


def valid_paths(length):
    """Every tag sequence of `length` (9^6 = 531,441 at most) that the decoder's start, transitions and end allow."""
    paths = numpy.indices((len(NAMES),) * length).reshape(length, -1).T
    score = DECODER.start[paths[:, 0]].astype("float64") + DECODER.end[paths[:, -1]]
    for t in range(1, length):
        score += DECODER.transitions[paths[:, t - 1], paths[:, t]]
    return paths[score > NEG_INF / 2]


def span_tags(start, end, label):
    tags = [f"U-{label}"] if end - start == 1 else [f"B-{label}"] + [f"I-{label}"] * (end - start - 2) + [f"L-{label}"]
    return [NAMES.index(tag) for tag in tags]


def all_spans(length, labels=LABELS):
    return [(s, e, label) for s in range(length) for e in range(s + 1, length + 1) for label in labels]


def brute_force_marginals(paths, logits, temperature):
    """{(start, end, label): P} by summing exp(Σ logit / T) over the valid paths that spell that entity."""
    weights = logits[numpy.arange(len(logits)), paths].sum(axis=1) / temperature
    log_z = logsumexp(weights)
    return {
        (s, e, label): numpy.exp(logsumexp(weights[(paths[:, s:e] == span_tags(s, e, label)).all(axis=1)]) - log_z)
        for s, e, label in all_spans(logits.shape[0])
    }


def test_decoder_constraints_are_biluo_validity():
    # The enumeration below trusts the decoder's matrices: they must mean "valid BILUO".
    for length in range(1, 5):
        valid = {tuple(p) for p in valid_paths(length).tolist()}
        every = numpy.indices((len(NAMES),) * length).reshape(length, -1).T.tolist()
        assert valid == {tuple(p) for p in every if is_valid_biluo([NAMES[i] for i in p])}


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_forward_backward_marginals_equal_enumeration(temperature):
    rng = numpy.random.default_rng(11)
    lengths = [1, 2, 3, 4, 5, 6, 2, 1, 4, 5]  # one batch, mixed lengths: the padding must not leak
    logits = [rng.normal(0.0, 2.0, size=(n, len(NAMES))) for n in lengths[:-1]]
    logits.append(rng.normal(0.0, 40.0, size=(lengths[-1], len(NAMES))))  # sharp: marginals down to ~1e-250
    lattices = DECODER.forward_backward(logits, temperature)
    paths = {n: valid_paths(n) for n in set(lengths)}
    for x, lattice in zip(logits, lattices):
        want = brute_force_marginals(paths[len(x)], x, temperature)
        got = {span: DECODER.span_probability(lattice, *span) for span in want}
        numpy.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=1e-9, atol=1e-290)
        weights = x[numpy.arange(len(x)), paths[len(x)]].sum(axis=1) / temperature
        shift = (x.max(axis=1) / temperature).sum()  # forward_backward works on per-token shifted logits
        assert lattice.log_z + shift == pytest.approx(logsumexp(weights), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_span_probabilities_are_exclusive_events(temperature):
    names = ["O"] + [f"{p}-{label}" for label in "XYZ" for p in "BILU"]
    decoder = _BiluoDecoder(names)
    rng = numpy.random.default_rng(3)
    logits = [rng.normal(0.0, 3.0, size=(n, len(names))) for n in (12, 7, 1)]
    for x, lattice in zip(logits, decoder.forward_backward(logits, temperature)):
        n = len(x)
        spans = all_spans(n, "XYZ")
        probs = {span: decoder.span_probability(lattice, *span) for span in spans}
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        outside = numpy.exp(lattice.alpha[:, 0] + lattice.beta[:, 0] - lattice.log_z)
        for t in range(n):
            covering = sum(p for (s, e, _), p in probs.items() if s <= t < e)
            assert covering <= 1.0 + 1e-9
            # A token is O or inside exactly one entity: the events partition every path.
            assert covering + outside[t] == pytest.approx(1.0, abs=1e-9)


def test_viterbi_entities_get_their_marginals():
    rng = numpy.random.default_rng(5)
    lengths = [6, 3, 5, 1]
    logits = [rng.normal(0.0, 2.0, size=(n, len(NAMES))).astype("float32").astype("float64") for n in lengths]
    flat = numpy.concatenate(logits).astype("float32")
    decoded = DECODER.decode(flat, lengths, probabilities=False)
    entities = [DECODER.entities(path) for path in decoded]
    found = DECODER.entity_probabilities(logits, entities)
    one_by_one = DECODER.entity_probabilities(logits, entities, max_cells=1)  # chunks of one doc: same numbers
    assert all(numpy.array_equal(a, b) for a, b in zip(found, one_by_one))
    for x, path, ents, probs in zip(logits, decoded, entities, found):
        paths = valid_paths(len(x))
        weights = x[numpy.arange(len(x)), paths].sum(axis=1)
        assert path.tolist() == paths[weights.argmax()].tolist()  # Viterbi: still the best valid path
        want = brute_force_marginals(paths, x, 1.0)
        numpy.testing.assert_allclose(probs, [want[e] for e in ents], rtol=1e-9)
        path_probability = numpy.exp(weights.max() - logsumexp(weights))
        assert all(p >= path_probability * (1 - 1e-9) for p in probs)  # each entity's event holds that path


def test_softmax_outputs_give_the_same_probabilities_as_logits():
    rng = numpy.random.default_rng(8)
    x = rng.normal(0.0, 2.0, size=(7, len(NAMES)))
    softmax = numpy.exp(x) / numpy.exp(x).sum(axis=1, keepdims=True)
    entities = [DECODER.entities(DECODER.decode(x.astype("float32"), [7], probabilities=False)[0])]
    from_logits = DECODER.entity_probabilities(DECODER.log_potentials(x, [7], probabilities=False), entities)
    from_probs = DECODER.entity_probabilities(DECODER.log_potentials(softmax, [7], probabilities=True), entities)
    numpy.testing.assert_allclose(from_probs[0], from_logits[0], rtol=1e-6)


@pytest.fixture(scope="module")
def nlp():
    return trained_nlp(60)[0]


def scored(doc, key=SPANS_KEY):
    group = doc.spans[key]
    return [(s.start, s.end, s.label_) for s in group], group.attrs["scores"], group.attrs["scores_t1"]


def test_pipeline_writes_entities_with_scores(nlp):
    component = nlp.get_pipe("ner")
    component.temperature = 1.0
    doc = nlp("ZnO films grown by pulsed laser deposition")
    spans, scores, raw = scored(doc)
    assert spans == [(e.start, e.end, e.label_) for e in doc.ents] and len(spans) == 2
    assert isinstance(scores, numpy.ndarray) and scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    numpy.testing.assert_array_equal(scores, raw)
    # predict keeps the plain Viterbi ids of the model's scores
    flat = component.model_scores([doc])
    assert (
        component.predict([doc])[0].tag_ids.tolist()
        == component.decoder.decode(flat, [len(doc)], probabilities=component.outputs_probabilities())[0].tolist()
    )
    docs = list(nlp.pipe(["", "NiO was studied by Raman spectroscopy"], batch_size=2))
    assert scored(docs[0])[0] == [] and scored(docs[0])[1].shape == (0,)
    assert len(scored(docs[1])[0]) == len(docs[1].ents) > 0


def test_scores_and_temperature_survive_saving(nlp, tmp_path):
    component = nlp.get_pipe("ner")
    component.temperature = 2.0
    text = "we measured TiO2 by X-ray diffraction"
    before = scored(nlp(text))
    assert (before[1] < before[2]).all()  # hotter: less confident than at T = 1
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert loaded.get_pipe("ner").temperature == 2.0
    doc = loaded(text)
    after = scored(doc)
    assert after[0] == before[0]
    numpy.testing.assert_array_equal(after[1], before[1])
    numpy.testing.assert_array_equal(after[2], before[2])
    copy = Doc(loaded.vocab).from_bytes(doc.to_bytes())
    bin_copy = next(DocBin(docs=[doc]).from_bytes(DocBin(docs=[doc]).to_bytes()).get_docs(loaded.vocab))
    for other in (copy, bin_copy):
        assert scored(other)[0] == after[0]
        numpy.testing.assert_array_equal(scored(other)[1], after[1])
        numpy.testing.assert_array_equal(scored(other)[2], after[2])
    # spans_key is a config setting: an override at load time wins, and None writes doc.ents only
    plain = spacy.load(tmp_path / "model", config={"components.ner.spans_key": None})(text)
    assert SPANS_KEY not in plain.spans and [(e.start, e.end, e.label_) for e in plain.ents] == after[0]
    component.temperature = 1.0


def test_temperature_bce_prefers_hot_for_overconfident_mistakes():
    # Every predicted entity at ~0.99+, but only half right: a higher T lowers the loss.
    x = numpy.full((4, len(NAMES)), -4.0)
    x[0, NAMES.index("U-A")] = x[1, NAMES.index("O")] = x[2, NAMES.index("B-B")] = x[3, NAMES.index("L-B")] = 4.0
    entities = [DECODER.entities(DECODER.decode(x.astype("float32"), [4], probabilities=False)[0])] * 6
    assert entities[0] == [(0, 1, "A"), (2, 4, "B")]
    correct = [[True, False], [False, True], [True, True], [False, False], [True, False], [False, True]]
    bce = temperature_bce(DECODER, [x] * 6, entities, correct, TEMPERATURE_GRID)
    assert TEMPERATURE_GRID[bce.argmin()] > 1.0 and bce.min() < bce[TEMPERATURE_GRID == 1.0][0]
    numpy.testing.assert_allclose(
        temperature_bce(DECODER, [x] * 6, entities, correct, TEMPERATURE_GRID, max_cells=1), bce, rtol=1e-12
    )
    assert numpy.isnan(temperature_bce(DECODER, [x], [[]], [[]], [1.0, 2.0])).all()


def test_fit_temperature_on_overconfident_predictions(nlp):
    component = nlp.get_pipe("ner")
    component.temperature = 1.0
    fit = fit_temperature(component, nlp, gold_docs(nlp.vocab, wrong_every=2))
    assert fit["entities"] == 8 and fit["correct"] == 4
    assert fit["temperature"] > 1.0 and fit["bce_after"] < fit["bce_before"]
    assert component.temperature == fit["temperature"] == component.cfg["temperature"]
    component.temperature = 1.0


def test_fit_temperature_never_raises_the_loss(nlp):
    component = nlp.get_pipe("ner")
    component.temperature = 3.0
    docs = gold_docs(nlp.vocab)
    examples = [Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in docs]
    for gold in (docs, examples):
        fit = fit_temperature(component, nlp, gold, apply=False)
        assert fit["correct"] == fit["entities"] == 8
        assert fit["bce_after"] <= fit["bce_before"] and fit["temperature"] <= 1.0  # all right: sharpen
        assert component.temperature == 3.0  # apply=False leaves it
    empty = fit_temperature(component, nlp, [Doc(nlp.vocab, words=[])])
    assert empty["entities"] == 0 and component.temperature == 3.0
    component.temperature = 1.0


def test_token_confidence_is_the_marginal_of_each_predicted_tag():
    """Brute force on one random lattice: P(tag_t = predicted tag_t) summed over valid paths."""
    import itertools

    rng = numpy.random.default_rng(7)
    decoder = _BiluoDecoder(["O"] + [f"{p}-{l}" for l in ("A", "B") for p in "BILU"])
    logits = rng.normal(size=(5, len(decoder.names)))
    path = decoder.decode(logits.astype("float32"), [5], probabilities=False)[0]
    lattice = decoder.forward_backward([logits])[0]
    got = numpy.exp(lattice.alpha[numpy.arange(5), path] + lattice.beta[numpy.arange(5), path] - lattice.log_z)
    total, hits = 0.0, numpy.zeros(5)
    for tags in itertools.product(range(len(decoder.names)), repeat=5):
        if (
            decoder.start[tags[0]] < 0
            or decoder.end[tags[-1]] < 0
            or any(decoder.transitions[a, b] < 0 for a, b in zip(tags, tags[1:]))
        ):
            continue
        weight = numpy.exp(sum(logits[t, y] for t, y in enumerate(tags)))
        total += weight
        hits += weight * (numpy.array(tags) == path)
    assert numpy.allclose(got, hits / total, rtol=1e-9)


# --- dropout samples (a tiny random transformer: its dropout is what gets sampled) -----------------------


def test_dropout_samples_score_a_doc_alike_alone_or_batched(trf_nlp):
    import torch

    nlp, _ = trf_nlp
    ner = nlp.get_pipe("ner")
    texts = [" ".join(words) for words, _ in TRAIN]
    ner.samples = 0
    one_pass = list(nlp.pipe(texts))
    ner.samples = 4
    try:
        rng = torch.get_rng_state()
        batched = list(nlp.pipe(texts, batch_size=4))
        alone = [nlp(text) for text in reversed(texts)][::-1]
        assert torch.equal(torch.get_rng_state(), rng)  # the sampling leaves the caller's RNG as it was
    finally:
        ner.samples = 0
    assert sum(len(doc.ents) for doc in one_pass) > 0
    for plain, doc, single in zip(one_pass, batched, alone):
        assert scored(doc)[0] == scored(single)[0] == scored(plain)[0]  # the same entities: Viterbi without dropout
        numpy.testing.assert_allclose(scored(doc)[1], scored(single)[1], rtol=1e-5, atol=1e-7)
        assert ((scored(doc)[1] >= 0) & (scored(doc)[1] <= 1)).all()
    moved = numpy.concatenate([scored(d)[2] - scored(p)[2] for d, p in zip(batched, one_pass)])
    assert numpy.abs(moved).max() > 1e-4  # the samples did change the scores


def test_token_confidence_with_dropout_samples(trf_nlp):
    nlp, _ = trf_nlp
    ner = nlp.get_pipe("ner")
    docs = list(nlp.pipe([" ".join(TRAIN[0][0]), "", " ".join(TRAIN[1][0])]))
    one_pass = ner.token_confidence(docs)
    ner.samples = 3
    try:
        sampled = ner.token_confidence(docs)
        assert [len(c) for c in sampled] == [len(doc) for doc in docs]
        assert all(((c > 0) & (c <= 1)).all() for c in sampled)
        numpy.testing.assert_allclose(ner.token_confidence(docs[2:]), sampled[2:])  # neighbours do not matter
        assert max(numpy.abs(a - b).max() for a, b in zip(sampled, one_pass) if len(a)) > 1e-4
    finally:
        ner.samples = 0


def test_fit_temperature_with_samples_keeps_both_temperatures_through_saving(trf_nlp, tmp_path):
    nlp, gold = trf_nlp
    ner = nlp.get_pipe("ner")
    result = fit_temperature(ner, nlp, gold, samples=3)
    try:
        assert result["samples"] == 3 and ner.samples == 3 and result["entities"] > 0
        assert ner.cfg["samples_temperature"] == result["samples_temperature"] == ner.score_temperature
        assert ner.temperature == result["temperature"]
        assert result["samples_bce_after"] <= result["samples_bce_before"]
        text = " ".join(TRAIN[0][0])
        before = scored(nlp(text))
        nlp.to_disk(tmp_path / "model")
        loaded = spacy.load(tmp_path / "model")
        after = scored(loaded(text))
        assert after[0] == before[0]
        numpy.testing.assert_allclose(after[1], before[1], rtol=1e-5)
        loaded.get_pipe("ner").samples = 0  # one pass again, at the one-pass temperature
        ner.samples = 0
        numpy.testing.assert_allclose(scored(loaded(text))[1], scored(nlp(text))[1], rtol=1e-5)
    finally:
        ner.samples = 0


def test_dropout_samples_need_a_transformer(nlp):
    ner = nlp.get_pipe("ner")  # token_ner on spaCy's CPU tok2vec: no transformer to sample
    with pytest.raises(ValueError, match="dropout samples need a transformer"):
        fit_temperature(ner, nlp, gold_docs(nlp.vocab), samples=2)
    assert ner.samples == 0
    with pytest.raises(ValueError, match="whole number"):
        ner.samples = -1
