"""report (and evaluate, which writes its inputs): every output written whole or not at all; a missing input
is one sentence naming the file and the command that makes it."""

import json
import os
import subprocess
import sys

import pytest
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.vocab import Vocab
from support.paths import ROOT
from support.pipelines import ruler_pipeline

from iob_ner.corpus.convert import DOCBIN_ATTRS
from iob_ner.evaluation.evaluate import evaluate_pipeline
from iob_ner.evaluation.metrics import entity_metrics
from iob_ner.evaluation.report import write as report_write  # its names are patched
from iob_ner.evaluation.report.inputs import load_test_docs
from iob_ner.evaluation.report.write import write_report
from iob_ner.util.errors import ReportError
from iob_ner.util.outputs import content_sha256
from iob_ner.util.runtime import SetupError

OUTPUTS = ("report.md", "learning-curve.png", "per-label-f.png", "errors.html")
PNG = b"\x89PNG"


def doc(vocab, words, tags):
    return Doc(vocab, words=words, ents=tags)


@pytest.fixture
def training(tmp_path):
    """A training folder as evaluate leaves it, over a two-document test corpus, and the gold corpus."""
    v = Vocab()
    gold = [doc(v, ["LiFePO4", "is", "good"], ["B-MAT", "O", "O"]), doc(v, ["sol", "gel"], ["B-PRO", "I-PRO"])]
    pred = [doc(v, ["LiFePO4", "is", "good"], ["B-MAT", "O", "O"]), doc(v, ["sol", "gel"], ["B-MAT", "O"])]
    corpus = tmp_path / "test.spacy"
    DocBin(attrs=DOCBIN_ATTRS, docs=gold).to_disk(corpus)
    folder = tmp_path / "training"
    folder.mkdir()
    DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], docs=pred).to_disk(folder / "predictions-test.spacy")
    metrics = entity_metrics(Example(p, g) for p, g in zip(pred, gold))
    metrics.update(
        {
            "model": "training/model-best",
            "corpus": str(corpus),
            "device": "CPU",
            "words": 5,
            "words_per_second": 100.0,
            "fingerprints": {"model": None, "corpus": content_sha256(corpus)},  # None: an installed package
        }
    )
    for split in ("dev", "test"):
        (folder / f"metrics-{split}.json").write_text(json.dumps(metrics), encoding="utf8")
    log = [
        {"step": 0, "losses": {"ner": 4.0}, "scores": {"ents_f": 10.0}},
        {"step": 25, "losses": {"ner": 25.0}, "scores": {"ents_f": 50.0}},
    ]
    # The cut last line is what an interrupted training leaves: the curve is drawn without it.
    (folder / "log.jsonl").write_text("\n".join(map(json.dumps, log)) + '\n{"step": 5', encoding="utf8")
    return folder, corpus


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_writes_every_output(training):
    folder, corpus = training
    assert write_report(training_dir=folder, test_corpus=corpus) == (1, 2)
    text = (folder / "report.md").read_text(encoding="utf8")
    assert "Best dev F 0.500 at step 25 of 25." in text and "| PRO |" in text and "](learning-curve.png)" in text
    assert (folder / "learning-curve.png").read_bytes()[:4] == PNG  # a PNG, though written under a .tmp name
    assert (folder / "per-label-f.png").read_bytes()[:4] == PNG
    assert "1 of 2 documents have errors" in (folder / "errors.html").read_text(encoding="utf8")
    assert leftovers(folder) == []


@pytest.mark.parametrize(
    "missing,sentence",
    [
        ("metrics-test.json", "metrics-test.json is missing: run `spacy project run evaluate` first"),
        ("metrics-dev.json", "metrics-dev.json is missing: run `spacy project run evaluate` first"),
        ("predictions-test.spacy", "predictions-test.spacy is missing: run `spacy project run evaluate` first"),
    ],
)
def test_missing_input_names_the_file_and_the_command(training, missing, sentence):
    folder, corpus = training
    write_report(training_dir=folder, test_corpus=corpus)
    before = {name: (folder / name).read_bytes() for name in OUTPUTS}
    (folder / missing).unlink()
    with pytest.raises(ReportError) as err:
        write_report(training_dir=folder, test_corpus=corpus)
    assert str(err.value) == f"{folder / missing}{sentence[len(missing) :]}"
    assert {name: (folder / name).read_bytes() for name in OUTPUTS} == before and leftovers(folder) == []


def test_missing_test_corpus_and_stale_predictions(training, tmp_path):
    folder, corpus = training
    with pytest.raises(ReportError, match=r"nope\.spacy is missing: run `spacy project run convert` first"):
        write_report(training_dir=folder, test_corpus=tmp_path / "nope.spacy")
    predictions = folder / "predictions-test.spacy"
    DocBin(attrs=DOCBIN_ATTRS, docs=[doc(Vocab(), ["x"], ["O"])]).to_disk(corpus)
    with pytest.raises(
        ReportError, match=r"holds 2 documents but .*test\.spacy holds 1: rerun `spacy project run eval"
    ):
        load_test_docs(corpus, predictions)
    # as many documents, other texts: a new convert (issue 21, cause 5) once paired them in errors.html
    v = Vocab()
    DocBin(
        attrs=DOCBIN_ATTRS, docs=[doc(v, ["LiFePO4", "is", "good"], ["B-MAT", "O", "O"]), doc(v, ["x"], ["O"])]
    ).to_disk(corpus)
    with pytest.raises(ReportError, match=r"holds other texts than .*test\.spacy \(from document 1 on\): rerun"):
        load_test_docs(corpus, predictions)
    # and the metrics beside them are another corpus's: report refuses before reading anything else
    with pytest.raises(
        ReportError,
        match=r"metrics-dev.json was measured on .*test.spacy, which changed .`spacy project run convert` ran since.: rerun `spacy project run evaluate`",
    ):
        write_report(training_dir=folder, test_corpus=corpus)


def assert_interrupted_report_keeps(training, monkeypatch, step, names):
    """A report written, then a second one interrupted (Ctrl-C) in `step` of report.write: every one of
    `names` is byte for byte the first report's, and no temporary file stays."""
    folder, corpus = training
    write_report(training_dir=folder, test_corpus=corpus)
    before = {name: (folder / name).read_bytes() for name in names}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_write, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(training_dir=folder, test_corpus=corpus)
    assert {name: (folder / name).read_bytes() for name in names} == before and leftovers(folder) == []


def test_error_midway_leaves_the_previous_outputs(training, monkeypatch):
    assert_interrupted_report_keeps(training, monkeypatch, "write_errors_html", OUTPUTS)


def test_without_a_log_no_stale_learning_curve_stays(training):
    folder, corpus = training
    write_report(training_dir=folder, test_corpus=corpus)
    (folder / "log.jsonl").unlink()
    write_report(training_dir=folder, test_corpus=corpus)
    assert not (folder / "learning-curve.png").exists()
    assert "No training log was found." in (folder / "report.md").read_text(encoding="utf8")


def test_cli_missing_metrics_is_one_sentence(training):
    folder, corpus = training
    (folder / "metrics-dev.json").unlink()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(folder), str(corpus)],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in output
    assert f"✘ {folder / 'metrics-dev.json'} is missing: run `spacy project run evaluate` first" in output


# --- evaluate writes the inputs of report: metrics and predictions, both or neither ------------------


def test_evaluate_then_report(training, tmp_path):
    folder, corpus = training
    model = ruler_pipeline(tmp_path / "model")
    metrics = evaluate_pipeline(
        model=model, corpus=corpus, output=folder / "metrics-test.json", predictions=folder / "predictions-test.spacy"
    )
    assert metrics["gold_entities"] == 2 and metrics["per_label"]["MAT"]["f"] == 1.0
    assert json.loads((folder / "metrics-test.json").read_text())["predicted_entities"] == 1
    assert leftovers(folder) == []
    assert write_report(training_dir=folder, test_corpus=corpus) == (1, 2)
    # beside the score on the gold tokens, the score on raw text (n/a for the dev metrics of an older evaluate)
    raw = metrics["raw_text"]
    assert raw["gold_entities"] == 2 and raw["reachable"] == 1.0
    overall = (folder / "report.md").read_text(encoding="utf8").split("## Overall")[1]
    assert "| typed F | typed F, raw text |" in overall
    test_row = next(line for line in overall.splitlines() if line.startswith("| test |"))
    assert f"| {metrics['typed']['f']:.3f} | {raw['f']:.3f} |" in test_row
    assert "| n/a |" in next(line for line in overall.splitlines() if line.startswith("| dev |"))


def test_evaluate_error_while_writing_keeps_both_previous_outputs(training, tmp_path, monkeypatch):
    folder, corpus = training
    before = {name: (folder / name).read_bytes() for name in ("metrics-test.json", "predictions-test.spacy")}

    def interrupted(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(DocBin, "to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_pipeline(
            model=ruler_pipeline(tmp_path / "model"),
            corpus=corpus,
            output=folder / "metrics-test.json",
            predictions=folder / "predictions-test.spacy",
        )
    assert {name: (folder / name).read_bytes() for name in before} == before and leftovers(folder) == []


def test_evaluate_bad_corpus_is_one_sentence(tmp_path):
    model = ruler_pipeline(tmp_path / "model")
    (tmp_path / "bad.spacy").write_text("not a docbin")
    with pytest.raises(SetupError, match=r"bad\.spacy is not a spaCy DocBin"):
        evaluate_pipeline(model=model, corpus=tmp_path / "bad.spacy", output=tmp_path / "m.json")
    DocBin(attrs=DOCBIN_ATTRS).to_disk(tmp_path / "empty.spacy")
    with pytest.raises(SetupError, match=r"empty\.spacy holds no documents"):
        evaluate_pipeline(model=model, corpus=tmp_path / "empty.spacy", output=tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("dev_is_test", [False, True])
def test_the_first_line_says_when_dev_is_the_test_set(training, dev_is_test):
    folder, corpus = training
    split = {
        "note": "train, dev and test from their own files",
        "dev_is_test": dev_is_test,
        "documents_per_split": {"train": 40, "dev": 2, "test": 2},
    }
    (corpus.parent / "split.json").write_text(json.dumps(split), encoding="utf8")
    write_report(training_dir=folder, test_corpus=corpus)
    lines = (folder / "report.md").read_text(encoding="utf8").splitlines()
    assert lines[0].startswith("**Warning: dev is the test set**") is dev_is_test
    assert "Data: train, dev and test from their own files (40 train, 2 dev, 2 test documents)." in lines


# --- entity confidence: the section and its two plots, or one sentence and no plot ---------------------

CONFIDENCE_PNGS = ("reliability.png", "precision-recall-threshold.png")


def confidence_block():
    """A "confidence" block as evaluate writes it, from made-up scores: overconfident at T = 1."""
    from iob_ner.evaluation.metrics import auroc, expected_calibration_error, reliability, threshold_table

    scores = [0.95, 0.9, 0.85, 0.7, 0.6, 0.4, 0.3, 0.15]
    raw = [0.99, 0.98, 0.97, 0.9, 0.85, 0.7, 0.6, 0.4]
    correct = [True, True, True, False, True, False, True, False]
    return {
        "component": "ner",
        "spans_key": "token_ner",
        "temperature": 1.75,
        "entities": 8,
        "correct": 5,
        "gold_entities": 6,
        "bins": 10,
        "ece_before": expected_calibration_error(raw, correct),
        "ece_after": expected_calibration_error(scores, correct),
        "auroc": auroc(scores, correct),
        "reliability_before": reliability(raw, correct),
        "reliability_after": reliability(scores, correct),
        "thresholds": threshold_table(scores, correct, 6),
        "note": "made up",
    }


def set_test_confidence(folder, block, note=None):
    path = folder / "metrics-test.json"
    metrics = json.loads(path.read_text(encoding="utf8"))
    metrics["confidence"] = block
    if note is not None:
        metrics["confidence_note"] = note
    path.write_text(json.dumps(metrics), encoding="utf8")


def test_confidence_section_and_plots_then_none_left_without_scores(training):
    from matplotlib.image import imread

    folder, corpus = training
    block = confidence_block()
    set_test_confidence(folder, block)
    split = {
        "note": "from their own files",
        "dev_is_test": True,
        "documents_per_split": {"train": 4, "dev": 2, "test": 2},
    }
    (corpus.parent / "split.json").write_text(json.dumps(split), encoding="utf8")
    write_report(training_dir=folder, test_corpus=corpus)
    for name in CONFIDENCE_PNGS:
        assert (folder / name).read_bytes()[:4] == PNG and imread(folder / name).std() > 0  # drawn, not blank
    text = (folder / "report.md").read_text(encoding="utf8")
    assert text.startswith("**Warning: dev is the test set**")  # still the first line
    section = text[text.index("## Confidence (test)") : text.index("## Plots and error view")]
    assert (
        f"ECE (10 equal-width bins): {block['ece_before']:.3f} before the temperature (T = 1), "
        f"{block['ece_after']:.3f} after (T = 1.75)" in section
    )
    assert f"AUROC, correct against wrong predicted entities: {block['auroc']:.3f}" in section
    assert "T = 1.75" in section and "average gap between the scores" in section and "--vars.min_score" in section
    # min_score 0.5: 0.95, 0.9, 0.85, 0.7, 0.6 kept, 4 of them correct, of 6 gold entities
    assert (
        "| 0.5 | 5 | 4 | 0.800 | 0.667 | 0.727 |" in section and "| 0.95 | 1 | 1 | 1.000 | 0.167 | 0.286 |" in section
    )
    assert "](reliability.png)" in section and "](precision-recall-threshold.png)" in section
    assert leftovers(folder) == []

    set_test_confidence(
        folder, None, note="the NER head gives no entity scores (spaCy's transition-based `ner` has none)"
    )
    write_report(training_dir=folder, test_corpus=corpus)
    assert not any((folder / name).exists() for name in CONFIDENCE_PNGS)  # no plot of the earlier run stays
    text = (folder / "report.md").read_text(encoding="utf8")
    section = text[text.index("## Confidence (test)") : text.index("## Plots and error view")]
    assert "The NER head gives no entity scores (spaCy's transition-based `ner` has none)." in section
    assert "png" not in section and text.startswith("**Warning: dev is the test set**")


def test_metrics_of_an_older_evaluate_say_to_rerun_it(training):
    folder, corpus = training  # the fixture's metrics have no "confidence" key
    write_report(training_dir=folder, test_corpus=corpus)
    assert "has no entity confidence (an older evaluate.py wrote it): rerun `spacy project run evaluate`" in (
        folder / "report.md"
    ).read_text(encoding="utf8")
    assert not any((folder / name).exists() for name in CONFIDENCE_PNGS)


def test_error_while_drawing_the_confidence_plots_keeps_every_previous_output(training, monkeypatch):
    set_test_confidence(training[0], confidence_block())
    assert_interrupted_report_keeps(training, monkeypatch, "plot_thresholds", OUTPUTS + CONFIDENCE_PNGS)


def test_evaluate_without_entity_scores_writes_null_and_says_so(training, tmp_path):
    folder, corpus = training
    model = ruler_pipeline(tmp_path / "model")
    metrics = evaluate_pipeline(
        model=model, corpus=corpus, output=folder / "metrics-test.json", predictions=folder / "predictions-test.spacy"
    )
    written = json.loads((folder / "metrics-test.json").read_text(encoding="utf8"))
    assert written["confidence"] is None and metrics["confidence"] is None  # null, never zeros
    assert written["confidence_note"].startswith("the NER head gives no entity scores")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(model), str(corpus), str(tmp_path / "m.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output
    assert (
        "No entity confidence: the NER head gives no entity scores (spaCy's transition-based `ner` has none)" in output
    )
