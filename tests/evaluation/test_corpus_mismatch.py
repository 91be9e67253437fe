"""A model evaluated on a corpus that is not its own (another conversion, labels it never learnt): training
records its corpora in meta.json, evaluate names the mismatch in one warning and in the metrics, report puts
it at the top and does not pass the training run's dev F off as this corpus's. A real tiny pipeline: the
1-layer random BERT trained two steps by the resumable loop, on the CPU."""

import json

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from support.paths import ROOT

from iob_ner.corpus.convert import DOCBIN_ATTRS, convert_iob
from iob_ner.evaluation.evaluate import evaluate_pipeline
from iob_ner.evaluation.report.write import write_report
from iob_ner.evaluation.trained_on import META_KEY
from iob_ner.util.outputs import content_sha256
from iob_ner.util.runtime import resolve_transformer
from iob_ner.util.tiny import make_tiny_bert

CONFIG = ROOT / "configs" / "config.cfg"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the corpus folder, the training folder with model-best and log.jsonl)."""
    from iob_ner.training import loop as train_loop
    from iob_ner.training.train import training_input_digests

    root = tmp_path_factory.mktemp("mismatch")
    corpus = root / "corpus"
    for split in ("train", "dev", "test"):
        convert_iob(ROOT / "assets" / f"{split}.tsv", corpus / split)
    write_split(corpus, "assets/train.tsv")
    bert = make_tiny_bert(resolve_transformer("embedded"), root / "bert")
    overrides = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.transformer": str(bert),
        "training.max_steps": 2,
        "training.eval_frequency": 1,
        "system.seed": 0,
    }
    fingerprints = training_input_digests(CONFIG, overrides, corpus / "train.spacy", corpus / "dev.spacy", str(bert))
    training = root / "training"
    train_loop.train(CONFIG, training, use_gpu=-1, overrides=overrides, fingerprints=fingerprints)
    return corpus, training


def write_split(folder, train):
    """corpus/split.json as convert writes it, in the parts that matter here."""
    record = {"note": f"dev and test carved from {train}", "sources": {"train": train}, "documents_per_split": {}}
    (folder / "split.json").write_text(json.dumps(record), encoding="utf8")


def disease_corpus(folder, extra_mat=False):
    """An NCBI-disease-like corpus (label Disease) converted into `folder` from another file."""
    vocab = spacy.blank("en").vocab
    docs = [
        Doc(vocab, words=["Familial", "cancer", "is", "rare"], ents=["O", "B-Disease", "O", "O"]),
        Doc(vocab, words=["Ataxia", "telangiectasia", "patients"], ents=["B-Disease", "I-Disease", "O"]),
    ]
    if extra_mat:
        docs.append(Doc(vocab, words=["LiFePO4", "cathodes"], ents=["B-MAT", "O"]))
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        DocBin(attrs=DOCBIN_ATTRS, docs=docs).to_disk(folder / f"{split}.spacy")
    write_split(folder, "assets/ncbi.tsv")
    return folder


def evaluate(training, corpus, split):
    return evaluate_pipeline(
        model=training / "model-best",
        corpus=corpus / f"{split}.spacy",
        output=training / f"metrics-{split}.json",
        predictions=training / f"predictions-{split}.spacy",
    )


def test_training_records_its_corpora_in_the_pipeline_meta(trained):
    corpus, training = trained
    for name in ("model-best", "model-last"):
        record = json.loads((training / name / "meta.json").read_text(encoding="utf8"))[META_KEY]
        assert record["train"] == {
            "path": str(corpus / "train.spacy"),
            "sha256": content_sha256(corpus / "train.spacy"),
        }
        assert record["dev"] == {"path": str(corpus / "dev.spacy"), "sha256": content_sha256(corpus / "dev.spacy")}
        assert record["converted_from"] == {"train": "assets/train.tsv"}


def test_its_own_corpus_gives_no_warning(trained):
    corpus, training = trained
    for split in ("dev", "test"):
        check = evaluate(training, corpus, split)["corpus_check"]
        assert check["split"] == split and check["warning"] is None and check["other_corpus"] is None
        assert check["labels_missing"] == {} and not check["no_label_known"] and check["gold_labels"]


def test_another_corpus_with_labels_the_model_lacks_is_named_in_evaluate_and_at_the_top_of_report(
    trained, tmp_path, capsys
):
    _, training = trained
    other = disease_corpus(tmp_path / "corpus")
    metrics = {split: evaluate(training, other, split) for split in ("dev", "test")}
    for split, m in metrics.items():
        check = m["corpus_check"]
        assert check["labels_missing"] == {"Disease": 2} and check["no_label_known"]
        assert "MAT" in check["model_labels"]
        warning = check["warning"]
        assert "knows none of" in warning and "Disease (2)" in warning and "mean nothing" in warning, warning
        assert check["other_corpus"] and "assets/train.tsv" in warning, warning
    assert "not the dev corpus the model was trained with" in metrics["dev"]["corpus_check"]["warning"]
    assert "converted again, from assets/ncbi.tsv" in metrics["test"]["corpus_check"]["warning"]
    saved = json.loads((training / "metrics-test.json").read_text(encoding="utf8"))
    assert saved["corpus_check"]["warning"] == metrics["test"]["corpus_check"]["warning"]

    capsys.readouterr()
    write_report(training_dir=training, test_corpus=other / "test.spacy")
    assert "knows none of" in " ".join(capsys.readouterr().out.split())  # wasabi wraps lines at the terminal width
    text = (training / "report.md").read_text(encoding="utf8")
    assert text.startswith("**Warning (dev): ") and "**Warning (test): " in text.split("# NER report")[0]
    assert "Best dev F" not in text
    assert "was measured on the dev corpus the model was trained with, not on the corpus of this report" in text


def test_some_labels_missing_is_a_warning_naming_them_with_counts(trained, tmp_path):
    corpus, training = trained
    mixed = disease_corpus(tmp_path / "mixed", extra_mat=True)
    check = evaluate(training, mixed, "test")["corpus_check"]
    assert check["labels_missing"] == {"Disease": 2} and not check["no_label_known"]
    assert "lacks gold labels" in check["warning"] and "Disease (2) entities" in check["warning"]
    # the model's own corpus again: the report says the training's best dev F plainly
    for split in ("dev", "test"):
        evaluate(training, corpus, split)
    write_report(training_dir=training, test_corpus=corpus / "test.spacy")
    text = (training / "report.md").read_text(encoding="utf8")
    assert text.startswith("# NER report") and "Best dev F " in text and "Warning" not in text
