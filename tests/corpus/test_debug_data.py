"""debug-data: fails on the errors `spacy debug data` reports, not on its size advice; runs NER checks
for the token_ner head (which spaCy skips): counts per label and split, labels unseen in train, crossings."""

import os
import subprocess
import sys

import pytest
from spacy.tokens import Doc, DocBin
from spacy.util import load_config_from_str
from spacy.vocab import Vocab
from support.paths import ROOT

from iob_ner.corpus.convert import DOCBIN_ATTRS
from iob_ner.corpus.debug_data import (
    classify,
    counts_table,
    data_check_config,
    gather_split_stats,
    ner_findings,
    split_stats,
)
from iob_ner.util.errors import DataError

REPORT = """\x1b[1m
============================ Data file validation ============================\x1b[0m
\x1b[38;5;2m✔ Corpus is loadable\x1b[0m
\x1b[38;5;1m✘ Low number of examples to train a new pipeline (42)\x1b[0m
{errors}\x1b[38;5;2m✔ 3 checks passed\x1b[0m
\x1b[38;5;1m✘ {n} error{s}\x1b[0m
"""


def test_size_advice_alone_is_not_an_error():
    errors, advice = classify(REPORT.format(errors="", n=1, s=""))
    assert errors == [] and advice == ["Low number of examples to train a new pipeline (42)"]


def test_data_errors_are_errors():
    bad = "\x1b[38;5;1m✘ 3 entity span(s) with leading or trailing whitespace\x1b[0m\n"
    errors, _ = classify(REPORT.format(errors=bad, n=2, s="s"))
    assert errors == ["3 entity span(s) with leading or trailing whitespace"]


# --- The project's NER checks, which spaCy skips for the token_ner factory ---------------------------

SCRIPT = ROOT / "scripts" / "debug_data.py"


def make_doc(vocab, words, tags, sent_starts=None):
    return Doc(vocab, words=words, ents=tags, sent_starts=sent_starts or [True] + [False] * (len(words) - 1))


def write_corpus(path, docs):
    DocBin(attrs=DOCBIN_ATTRS, docs=docs).to_disk(path)
    return path


@pytest.fixture
def corpora(tmp_path):
    """train: A x3, B x1; dev: A x1, C x2; test: B x1, C x1, D x1, and a B entity across a sentence start."""
    v = Vocab()
    train = [make_doc(v, ["a", "b", "c"], ["B-A", "O", "B-B"]), make_doc(v, ["a", "a"], ["B-A", "B-A"])]
    dev = [make_doc(v, ["c", "x", "c"], ["B-C", "B-A", "B-C"])]
    test = [
        make_doc(v, ["b", "c", "d"], ["B-B", "B-C", "B-D"]),
        make_doc(v, ["one", "two", "three"], ["B-B", "I-B", "O"], sent_starts=[True, True, False]),
    ]
    return {
        name: write_corpus(tmp_path / f"{name}.spacy", docs)
        for name, docs in (("train", train), ("dev", dev), ("test", test))
    }


def test_counts_per_label_and_split(corpora):
    splits = {name: gather_split_stats(name, path) for name, path in corpora.items()}
    assert splits["train"].labels == {"A": 3, "B": 1}
    assert splits["dev"].labels == {"A": 1, "C": 2}
    assert splits["test"].labels == {"B": 2, "C": 1, "D": 1}
    header, rows = counts_table(splits)
    assert header == ["label", "train", "dev", "test"]
    assert rows[:4] == [["A", 3, 1, 0], ["B", 1, 0, 2], ["C", 0, 2, 1], ["D", 0, 0, 1]]
    assert ["(all entities)", 4, 3, 4] in rows and ["(documents)", 2, 1, 2] in rows


def test_labels_never_seen_in_train_are_flagged_with_their_counts(corpora):
    splits = {name: gather_split_stats(name, path) for name, path in corpora.items()}
    warnings = [text for level, text in ner_findings(splits) if level == "warn"]
    dev = [w for w in warnings if w.startswith("dev:") and "never seen in train" in w]
    test = [w for w in warnings if w.startswith("test:") and "never seen in train" in w]
    assert len(dev) == 1 and "2 entities" in dev[0] and "C (2)" in dev[0] and "never predict" in dev[0]
    assert len(test) == 1 and "2 entities" in test[0] and "C (1)" in test[0] and "D (1)" in test[0]
    assert "A (" not in test[0] and "B (" not in test[0]  # labels train knows are not listed
    rare = [w for w in warnings if w.startswith("train: few examples")]
    assert rare and "A (3)" in rare[0] and "B (1)" in rare[0]  # spaCy's threshold: 50


def test_entity_across_a_sentence_start_is_reported():
    v = Vocab()
    docs = [
        make_doc(v, ["one", "two", "three"], ["B-B", "I-B", "O"], sent_starts=[True, True, False]),
        make_doc(v, ["one", "two", "three"], ["B-B", "I-B", "O"], sent_starts=[True, False, True]),
    ]
    stats = split_stats("test", docs)
    assert stats.crossing == 1 and stats.crossing_examples == ["'one two' (B, doc 0)"]
    findings = ner_findings({"train": split_stats("train", docs[1:]), "test": stats})
    assert any(
        level == "warn" and "test: 1 entities cross a sentence boundary" in text and "'one two'" in text
        for level, text in findings
    )


def test_clean_data_gets_a_good_finding():
    v = Vocab()
    docs = [make_doc(v, ["a"], ["B-A"])] * 60
    dev = [make_doc(v, ["b", "a"], ["O", "B-A"])]
    findings = ner_findings({"train": split_stats("train", docs), "dev": split_stats("dev", dev)})
    assert [level for level, _ in findings] == ["good"]


def test_unreadable_or_missing_corpus_is_one_sentence(tmp_path):
    (tmp_path / "train.spacy").write_text("not a docbin", encoding="utf8")
    with pytest.raises(DataError, match=r"the train corpus .*train\.spacy is not a spaCy DocBin"):
        gather_split_stats("train", tmp_path / "train.spacy")
    with pytest.raises(DataError, match=r"the test corpus .*nope\.spacy does not exist"):
        gather_split_stats("test", tmp_path / "nope.spacy")
    write_corpus(tmp_path / "empty.spacy", [])
    with pytest.raises(DataError, match="holds no documents"):
        gather_split_stats("dev", tmp_path / "empty.spacy")


def test_token_ner_is_swapped_for_the_transition_ner_with_its_listener():
    text, swapped = data_check_config(ROOT / "configs" / "config.cfg")
    config = load_config_from_str(text, interpolate=False)
    assert swapped == ["ner"]
    assert config["components"]["ner"]["factory"] == "ner"
    assert config["components"]["ner"]["model"]["@architectures"] == "spacy.TransitionBasedParser.v2"
    listener = config["components"]["ner"]["model"]["tok2vec"]
    assert listener["@architectures"] == "iob_ner.TransformerListener.v1"
    assert config["components"]["transformer"]["factory"] == "transformer"


@pytest.mark.parametrize("problem", ["missing", "broken", "not_a_docbin"])
def test_cli_user_errors_end_in_one_sentence(tmp_path, corpora, problem):
    config = tmp_path / "config.cfg"
    if problem == "broken":
        config.write_text("[nlp\nlang = en\n", encoding="utf8")
    elif problem == "not_a_docbin":
        config.write_text((ROOT / "configs" / "config.cfg").read_text(encoding="utf8"), encoding="utf8")
        corpora["dev"].write_bytes(b"\x00\x01 not a docbin")
    out = tmp_path / "debug-data.txt"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(config), str(corpora["train"]), str(corpora["dev"]), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    expected = {
        "missing": f"the config {config} does not exist",
        "broken": f"{config} is not a valid config",
        "not_a_docbin": f"the dev corpus {corpora['dev']} is not a spaCy DocBin",
    }[problem]
    assert expected in " ".join(output.split()), output
    assert not out.exists()


@pytest.mark.slow
def test_spacy_debug_data_runs_its_ner_checks_for_token_ner(tmp_path, corpora):
    """The whole command on the real config (loads the transformer): spaCy's NER section is in the report."""
    out = tmp_path / "report" / "debug-data.txt"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(ROOT / "configs" / "config.cfg"),
            str(corpora["train"]),
            str(corpora["dev"]),
            str(out),
            "--test",
            str(corpora["test"]),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]  # only size advice on this tiny corpus
    report = out.read_text(encoding="utf8")
    assert "Named Entity Recognition" in report  # spaCy's NER checks ran, on the swapped copy
    assert "Low number of examples for label 'A' (3)" in report
    assert "dev: 2 entities with label(s) never seen in train: C (2)" in " ".join(report.split())
    assert "test: 2 entities" in report and "\x1b[" not in report
    assert not list(out.parent.glob(".*.tmp"))
