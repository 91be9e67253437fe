"""Entity confidence: ECE, reliability bins, AUROC and the threshold table on hand-made cases; evaluate's
"confidence" block on a tiny trained token_ner pipeline, checked against the saved predictions; report's plots."""

import itertools
import json

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span, SpanGroup
from spacy.training import Example
from support.pipelines import gold_docs, trained_nlp

from iob_ner.corpus.convert import DOCBIN_ATTRS, read_docs
from iob_ner.evaluation.evaluate import evaluate_pipeline
from iob_ner.evaluation.metrics import (
    THRESHOLDS,
    auroc,
    entity_scores,
    expected_calibration_error,
    reliability,
    threshold_table,
)
from iob_ner.evaluation.report.write import write_report
from iob_ner.pipeline.token_ner import SPANS_KEY

# --- ECE and reliability bins -------------------------------------------------------------------------


def test_ece_is_zero_when_every_bin_is_calibrated():
    # bin [0.2, 0.3): 4 entities at 0.25, 1 right; bin [0.7, 0.8): 4 at 0.75, 3 right; bin [0.9, 1.0]: 2 at 1.0, both right
    scores = [0.25] * 4 + [0.75] * 4 + [1.0] * 2
    correct = [True, False, False, False] + [True, True, True, False] + [True, True]
    assert expected_calibration_error(scores, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_certain_scores_half_right_is_one_half():
    assert expected_calibration_error([1.0] * 6, [True, False] * 3) == pytest.approx(0.5)
    assert expected_calibration_error([0.0] * 4, [True] * 4) == pytest.approx(1.0)  # 0.0 falls in the first bin


def test_ece_weights_each_bin_by_its_entities():
    # bin [0.9, 1.0]: mean 0.95, accuracy 1 (gap 0.05, 2 entities); bin [0.1, 0.2): 0.15, accuracy 0 (gap 0.15, 1)
    ece = expected_calibration_error([0.95, 0.95, 0.15], [True, True, False])
    assert ece == pytest.approx((2 * 0.05 + 1 * 0.15) / 3)
    assert expected_calibration_error([], []) is None
    # fewer bins: one bin [0.5, 1.0] with mean 0.7 and accuracy 0.5, one [0, 0.5) with 0.1 and 0
    assert expected_calibration_error([0.6, 0.8, 0.1], [True, False, False], bins=2) == pytest.approx(
        (2 * abs(0.5 - 0.7) + abs(0.0 - 0.1)) / 3
    )


def test_reliability_bins():
    rows = reliability([0.05, 0.1, 0.15, 0.5, 0.99, 1.0], [False, True, False, True, True, False])
    assert len(rows) == 10 and [r["lo"] for r in rows] == pytest.approx([i / 10 for i in range(10)])
    assert [r["count"] for r in rows] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # [lo, hi); 1.0 in the last bin
    assert rows[1]["confidence"] == pytest.approx(0.125) and rows[1]["accuracy"] == 0.5
    assert rows[2]["confidence"] is None and rows[2]["accuracy"] is None  # empty: no number, never 0
    assert rows[9]["confidence"] == pytest.approx(0.995) and rows[9]["accuracy"] == 0.5
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        reliability([1.5], [True])
    with pytest.raises(ValueError, match="2 scores but 1"):
        reliability([0.5, 0.6], [True])


# --- AUROC --------------------------------------------------------------------------------------------


def pair_count_auroc(scores, correct):
    """Every (correct, wrong) pair: 1 when the correct one scores higher, 1/2 on a tie."""
    pos = [s for s, c in zip(scores, correct) if c]
    neg = [s for s, c in zip(scores, correct) if not c]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pair_count_with_ties(seed):
    rng = numpy.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    scores = numpy.round(rng.random(n), 1)  # few distinct values: many ties, within and across classes
    correct = rng.random(n) < scores  # higher scores are more often right
    correct[0], correct[1] = True, False  # both classes present
    assert auroc(scores, correct) == pytest.approx(pair_count_auroc(scores.tolist(), correct.tolist()), abs=1e-12)


def test_auroc_bounds_and_one_class():
    assert auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.9, 0.8, 0.3, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 4, [True, False, True, False]) == 0.5  # all tied: chance
    assert auroc([0.9, 0.2], [True, True]) is None and auroc([0.9], [False]) is None and auroc([], []) is None


# --- threshold table ----------------------------------------------------------------------------------


def test_threshold_table_by_hand():
    scores = [0.9, 0.8, 0.6, 0.3, 0.05]
    correct = [True, True, False, True, False]
    rows = threshold_table(scores, correct, n_gold=5, thresholds=[0.0, 0.5, 0.6, 0.85, 0.95])
    assert [(r["min_score"], r["kept"], r["correct"]) for r in rows] == [
        (0.0, 5, 3),
        (0.5, 3, 2),
        (0.6, 3, 2),
        (0.85, 1, 1),
        (0.95, 0, 0),
    ]  # a score equal to min_score is kept
    want = [(3 / 5, 3 / 5, 3 / 5), (2 / 3, 2 / 5, 0.5), (2 / 3, 2 / 5, 0.5), (1.0, 1 / 5, 1 / 3), (0.0, 0.0, 0.0)]
    for row, (p, r, f) in zip(rows, want):
        assert (row["p"], row["r"], row["f"]) == pytest.approx((p, r, f))
    # recall counts the gold entities never predicted too
    assert threshold_table([0.9], [True], n_gold=4, thresholds=[0.0])[0]["r"] == pytest.approx(0.25)
    assert [r["min_score"] for r in threshold_table([], [], 0)] == list(THRESHOLDS)
    assert THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# --- extraction from predicted docs -------------------------------------------------------------------


def test_entity_scores_from_span_groups():
    vocab = spacy.blank("en").vocab
    words = ["ZnO", "films", "by", "sol", "gel"]
    gold = Doc(vocab, words=words, ents=["B-MAT", "O", "O", "B-SMT", "I-SMT"])
    pred = Doc(vocab, words=words)
    spans = [Span(pred, 0, 1, "MAT"), Span(pred, 3, 4, "SMT")]  # right; wrong boundary
    pred.set_ents(spans)
    pred.spans[SPANS_KEY] = SpanGroup(
        pred,
        name=SPANS_KEY,
        spans=spans,
        attrs={"scores": numpy.array([0.9, 0.4]), "scores_t1": numpy.array([0.95, 0.6])},
    )
    empty = Doc(vocab, words=["no", "entity"])
    empty.spans[SPANS_KEY] = SpanGroup(
        empty, name=SPANS_KEY, spans=[], attrs={"scores": numpy.zeros(0), "scores_t1": numpy.zeros(0)}
    )
    examples = [Example(pred, gold), Example(empty, Doc(vocab, words=["no", "entity"], ents=["O", "O"]))]
    found = entity_scores(examples)
    assert found.scores.tolist() == [0.9, 0.4] and found.scores_t1.tolist() == [0.95, 0.6]
    assert found.correct.tolist() == [True, False]
    # through a DocBin, as evaluate saves them
    again = list(DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], docs=[pred]).get_docs(vocab))
    assert entity_scores([Example(again[0], gold)]).scores.tolist() == [0.9, 0.4]
    # no span group (the transition ner): None, not zeros
    plain = Doc(vocab, words=words, ents=["B-MAT", "O", "O", "O", "O"])
    assert entity_scores([Example(plain, gold)]) is None
    assert entity_scores(examples, key="other") is None and entity_scores([]) is None


# --- evaluate on a tiny trained token_ner, then report ------------------------------------------------


@pytest.fixture(scope="module")
def scored_model(tmp_path_factory):
    """A tiny trained token_ner pipeline at temperature 2 (so that before and after differ), saved, and a gold
    corpus on which half of its entities are wrong (every second gold entity has the other label)."""
    folder = tmp_path_factory.mktemp("scored")
    nlp = trained_nlp(40)[0]
    nlp.get_pipe("ner").temperature = 2.0
    nlp.to_disk(folder / "model")
    docs = gold_docs(nlp.vocab, wrong_every=2) + [Doc(nlp.vocab, words=["nothing", "here"], ents=["O", "O"])]
    DocBin(attrs=DOCBIN_ATTRS, docs=docs).to_disk(folder / "test.spacy")
    return folder / "model", folder / "test.spacy"


def test_evaluate_writes_a_confidence_block_that_the_saved_predictions_reproduce(scored_model, tmp_path):
    model, corpus = scored_model
    metrics = evaluate_pipeline(
        model=model,
        corpus=corpus,
        output=tmp_path / "metrics-test.json",
        predictions=tmp_path / "predictions-test.spacy",
    )
    written = json.loads((tmp_path / "metrics-test.json").read_text(encoding="utf8"))
    block = written["confidence"]
    assert block == json.loads(json.dumps(metrics["confidence"])) and "confidence_note" not in written
    assert block["temperature"] == 2.0 and block["component"] == "ner" and block["spans_key"] == SPANS_KEY
    assert block["entities"] == written["predicted_entities"] and block["gold_entities"] == written["gold_entities"]

    vocab = spacy.blank("en").vocab
    pairs = [
        Example(p, g) for p, g in zip(read_docs(tmp_path / "predictions-test.spacy", vocab), read_docs(corpus, vocab))
    ]
    saved = entity_scores(pairs)
    assert saved.correct.size == block["entities"] and int(saved.correct.sum()) == block["correct"]
    assert 0 < block["correct"] < block["entities"]  # both classes: AUROC is defined
    assert block["ece_after"] == pytest.approx(expected_calibration_error(saved.scores, saved.correct), abs=1e-12)
    assert block["ece_before"] == pytest.approx(expected_calibration_error(saved.scores_t1, saved.correct), abs=1e-12)
    assert block["ece_after"] != block["ece_before"]  # T = 2 moved the scores
    assert block["auroc"] == pytest.approx(pair_count_auroc(saved.scores.tolist(), saved.correct.tolist()))
    assert [r["count"] for r in block["reliability_after"]] == [
        r["count"] for r in reliability(saved.scores, saved.correct)
    ]
    assert sum(r["count"] for r in block["reliability_before"]) == block["entities"]
    assert [r["min_score"] for r in block["thresholds"]] == list(THRESHOLDS)
    everything = block["thresholds"][0]  # min_score 0 keeps every entity: spaCy's typed scores
    assert (everything["p"], everything["r"], everything["f"]) == pytest.approx(
        (written["typed"]["p"], written["typed"]["r"], written["typed"]["f"])
    )


def test_report_draws_the_confidence_plots_from_evaluate(scored_model, tmp_path):
    from matplotlib.image import imread

    model, corpus = scored_model
    folder = tmp_path / "training"
    evaluate_pipeline(model=model, corpus=corpus, output=folder / "metrics-dev.json")
    evaluate_pipeline(
        model=model, corpus=corpus, output=folder / "metrics-test.json", predictions=folder / "predictions-test.spacy"
    )
    write_report(training_dir=folder, test_corpus=corpus)
    for name in ("reliability.png", "precision-recall-threshold.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
        assert imread(folder / name).std() > 0
    text = (folder / "report.md").read_text(encoding="utf8")
    assert "## Confidence (test)" in text and "T = 2" in text and "](reliability.png)" in text
    assert "| min score | kept | correct | P | R | F |" in text and "| 0.95 |" in text

    # the same pipeline with its scores switched off: null and a note, and no plot of the earlier run stays
    plain = spacy.load(model, config={"components.ner.spans_key": None})
    plain.to_disk(tmp_path / "plain")
    for split in ("dev", "test"):
        metrics = evaluate_pipeline(
            model=tmp_path / "plain",
            corpus=corpus,
            output=folder / f"metrics-{split}.json",
            predictions=folder / f"predictions-{split}.spacy",
        )
    assert metrics["confidence"] is None and "spans_key = null" in metrics["confidence_note"]
    write_report(training_dir=folder, test_corpus=corpus)
    assert not (folder / "reliability.png").exists() and not (folder / "precision-recall-threshold.png").exists()
    assert "The entity scores are switched off" in (folder / "report.md").read_text(encoding="utf8")


def test_evaluate_summary_prints_ece_and_auroc(scored_model, tmp_path, capsys):
    from support.paths import load_script

    model, corpus = scored_model
    load_script("evaluate").main(model=model, corpus=corpus, output=tmp_path / "m.json", predictions=None, gpu_id="cpu")
    block = json.loads((tmp_path / "m.json").read_text(encoding="utf8"))["confidence"]
    printed = " ".join(capsys.readouterr().out.split())
    assert (
        f"temperature 2): ECE {block['ece_before']:.3f} at T = 1 -> {block['ece_after']:.3f} (10 bins), "
        f"AUROC {block['auroc']:.3f}" in printed
    )
