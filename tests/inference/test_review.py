"""review.py: the N documents the model is least sure of, ranked by the stated rule, written as JSONL and
UBIAI-shaped IOB that read back to the same entities; a bounded heap; pipelines without scores refused.

The expected document scores are computed here independently: nlp.pipe over the texts, then the
component's token_confidence, the lowest per document. The pipeline is tests/support/pipelines.py's tiny
token_ner (shared with tests/inference/test_predict.py, trained once per session).
"""

import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import spacy
from support.data import records, write_jsonl
from support.paths import ROOT
from support.pipelines import SCORED_TEXTS, scored_entities

from iob_ner.inference.pipeline import Prediction
from iob_ner.inference.review import RULE, least_sure, review
from iob_ner.inference.review import review_summary as summary
from iob_ner.inference.stream import split_text
from iob_ner.iob.reader import read_iob
from iob_ner.util.runtime import SetupError

MATERIALS = ["ZnO", "NiO", "TiO2", "CuO", "LiFePO4", "Fe2O3", "MgO", "SnO2", "WO3", "Co3O4"]
METHODS = [
    "by X-ray diffraction",
    "by Raman spectroscopy",
    "by pulsed laser deposition",
    "by sol-gel synthesis",
    "grown on glass",
]
MANY = [f"{m} films {how}" for how in METHODS for m in MATERIALS]  # 50 documents


def doc_scores(model: Path, texts, max_length=None) -> list:
    """The rule, computed independently: per text, the lowest token confidence over its chunks."""
    nlp = spacy.load(model)
    if max_length:
        nlp.max_length = max_length
    chunks = [split_text(t, max_length or len(t) + 1) for t in texts]
    flat = [c for cs in chunks for _, c in cs]
    lows = [float(c.min()) for c in nlp.get_pipe("ner").token_confidence(list(nlp.pipe(flat)))]
    scores, at = [], 0
    for cs in chunks:
        scores.append(min(lows[at : at + len(cs)]))
        at += len(cs)
    return scores


def expected_order(scores, n):
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n]


def check_iob_matches_jsonl(nlp, written, iob_path):
    iob_docs = list(read_iob(iob_path, strict=True))
    assert len(iob_docs) == len(written)
    for record, iob_doc in zip(written, iob_docs):
        doc = nlp.make_doc(record["text"])
        words = [t for t in doc if not t.is_space]
        assert iob_doc.words == [t.text for t in words]
        position = {t.i: k for k, t in enumerate(words)}
        want = []
        for ent in record["entities"]:
            span = doc.char_span(ent["start"], ent["end"])
            want.append((position[span.start], position[span.end - 1] + 1, ent["label"]))
        assert list(iob_doc.spans) == want


def test_review_writes_the_n_least_sure_documents_by_the_rule(scored_model, tmp_path):
    texts = SCORED_TEXTS + ["MgO films grown on glass", "we measured SnO2 by Raman spectroscopy"]
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    out, iob = tmp_path / "review.jsonl", tmp_path / "review.tsv"
    result = review(model=scored_model, source=source, output_jsonl=out, output_iob=iob, n=4, batch_size=3)
    scores = doc_scores(scored_model, texts)
    want = expected_order(scores, 4)
    written = records(out)
    assert len(written) == result["written"] == 4 and result["read"] == len(texts) and result["skipped"] == 0
    assert [r["id"] for r in written] == [f"d{i}" for i in want]
    assert [r["rank"] for r in written] == [1, 2, 3, 4]
    assert [r["doc_score"] for r in written] == pytest.approx([scores[i] for i in want], abs=1e-4)
    assert all(r["doc_score_rule"] == RULE for r in written)
    assert result["score_min"] == pytest.approx(scores[want[0]]) and result["score_max"] == pytest.approx(
        scores[want[-1]]
    )
    assert max(scores[i] for i in want) <= min(s for i, s in enumerate(scores) if i not in want)
    nlp = spacy.load(scored_model)
    for record in written:  # predict's record shape: entities with offsets and their calibrated scores
        assert [(e["start"], e["end"], e["label"], e["score"]) for e in record["entities"]] == [
            (s, e, label, round(score, 4)) for s, e, label, score in scored_entities(nlp, record["text"])
        ]
    check_iob_matches_jsonl(nlp, written, iob)
    text = summary(result, [out, iob])
    assert f"4 of {len(texts)} document(s) written, least sure first" in text and "doc scores" in text


def test_a_bounded_heap_keeps_the_2_lowest_of_50(scored_model, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", MANY)
    out, iob = tmp_path / "review.jsonl", tmp_path / "review.tsv"
    result = review(model=scored_model, source=source, output_jsonl=out, output_iob=iob, n=2, batch_size=7)
    scores = doc_scores(scored_model, MANY)
    written = records(out)
    assert result["read"] == 50 and len(written) == 2
    assert [r["id"] for r in written] == [f"d{i}" for i in expected_order(scores, 2)]
    check_iob_matches_jsonl(spacy.load(scored_model), written, iob)


def fake(confidence):
    return Prediction("x", {"id": "x", "text": "x", "entities": []}, ["x"], [], False, confidence=confidence)


def test_least_sure_holds_at_most_n_predictions_and_breaks_ties_by_input_order():
    confidences = [0.5, 0.2, 0.9, 0.2, 0.7, 0.1, 0.2, 0.95, 0.1] * 30
    alive, most = [0], [0]

    def freed():
        alive[0] -= 1

    def stream():
        for c in confidences:
            prediction = fake(c)
            weakref.finalize(prediction, freed)
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            yield prediction
            del prediction

    ranked, seen = least_sure(stream(), 4)
    assert seen == len(confidences)
    assert [(score, index) for score, index, _ in ranked] == [(0.1, 5), (0.1, 8), (0.1, 14), (0.1, 17)]
    # the kept ones, the one just looked at (still named by the loop) and the next: never the whole input
    assert most[0] <= 4 + 2
    ranked, _ = least_sure(iter([fake(0.3), fake(0.2), fake(0.3), fake(None), fake(0.2)]), 10)
    assert [(score, index) for score, index, _ in ranked] == [(0.2, 1), (0.2, 4), (0.3, 0), (0.3, 2), (1.0, 3)]


def test_a_long_text_is_split_and_scored_by_its_least_sure_chunk(scored_model, tmp_path):
    long_text = " . ".join(MANY[:12])
    texts = [MANY[20], long_text, MANY[30]]
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    out, iob = tmp_path / "review.jsonl", tmp_path / "review.tsv"
    review(model=scored_model, source=source, output_jsonl=out, output_iob=iob, n=3, max_length=80)
    assert len(split_text(long_text, 80)) > 3
    scores = doc_scores(scored_model, texts, max_length=80)
    written = records(out)
    assert [r["id"] for r in written] == [f"d{i}" for i in expected_order(scores, 3)]
    (record,) = [r for r in written if r["id"] == "d1"]
    assert record["doc_score"] == pytest.approx(scores[1], abs=1e-4)
    nlp = spacy.load(scored_model)
    nlp.max_length = 80
    assert [(e["start"], e["end"], e["label"], e["score"]) for e in record["entities"]] == [
        (s + offset, e + offset, label, round(score, 4))
        for offset, chunk in split_text(long_text, 80)
        for s, e, label, score in scored_entities(nlp, chunk)
    ]
    assert all(long_text[e["start"] : e["end"]] == e["text"] for e in record["entities"])
    check_iob_matches_jsonl(spacy.load(scored_model), written, iob)


def test_bad_inputs_are_named_skipped_and_counted(scored_model, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": "a", "text": "ZnO films by Raman spectroscopy"}\n{"text": broken\n'
        b'{"id": "b", "text": "caf\xe9 ZnO"}\n{"id": "c", "text": "  "}\n{"title": "x"}\n'
        b'{"id": "d", "text": "NiO grown on glass"}\n'
    )
    result = review(
        model=scored_model, source=source, output_jsonl=tmp_path / "r.jsonl", output_iob=tmp_path / "r.tsv", n=5
    )
    assert sorted(r["id"] for r in records(tmp_path / "r.jsonl")) == ["a", "d"]
    assert result["read"] == 2 and result["written"] == 2 and result["skipped"] == 4
    assert result["skipped_reasons"] == {"not JSON": 1, "not UTF-8": 1, "empty": 1, 'no "text"': 1}
    assert f"{source}:2: skipped, not JSON" in " ".join(capsys.readouterr().out.split())
    assert '4 input(s) skipped (1 empty, 1 no "text", 1 not JSON, 1 not UTF-8)' in summary(
        result, [tmp_path / "r.jsonl"]
    )


def test_a_pipeline_without_scores_is_refused_with_one_sentence(models, transition_model, tmp_path):
    plain, _ = models
    source = write_jsonl(tmp_path / "in.jsonl", ["ZnO by sputtering ."])
    out, iob = tmp_path / "r.jsonl", tmp_path / "r.tsv"
    for model, who in ((transition_model, "ner (transition)"), (plain, "entity_ruler")):
        with pytest.raises(
            SetupError,
            match=rf"^review ranks documents by the token probabilities of the NER, "
            rf"and the pipeline's {who.replace('(', '[(]').replace(')', '[)]')} "
            rf"gives none",
        ):
            review(model=model, source=source, output_jsonl=out, output_iob=iob, n=5)
    assert not out.exists() and not iob.exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/review.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_states_the_rule_and_the_counts_and_stops_cleanly_without_scores(scored_model, transition_model, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", SCORED_TEXTS)
    out, iob = tmp_path / "r.jsonl", tmp_path / "r.tsv"
    done = run_cli(str(scored_model), str(source), str(out), str(iob), "--n", "3")
    log = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0 and "Traceback" not in log, log
    assert f"rule: {RULE}" in log
    assert f"3 of {len(SCORED_TEXTS)} document(s) written, least sure first (n = 3), doc scores " in log
    assert "0 input(s) skipped" in log and len(records(out)) == 3
    failed = run_cli(str(transition_model), str(source), str(tmp_path / "r2.jsonl"), str(tmp_path / "r2.tsv"))
    log = " ".join((failed.stdout + failed.stderr).split())
    assert failed.returncode == 1 and "Traceback" not in log, log
    assert (
        "review ranks documents by the token probabilities of the NER, and the pipeline's ner (transition) "
        "gives none" in log
    )
    assert not (tmp_path / "r2.jsonl").exists()
