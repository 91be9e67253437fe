"""Outputs of convert: DocBin and JSON hold the same documents; big corpora shard; errors leave nothing."""

import json
import os
import subprocess
import sys
from typing import Tuple

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Corpus
from spacy.training.converters import json_to_docs
from spacy.vocab import Vocab
from support.paths import ROOT

from iob_ner.corpus.convert import DOCBIN_ATTRS, CorpusError, add_to_docbin, convert_iob, read_docs, to_doc
from iob_ner.iob.reader import read_iob
from iob_ner.util.errors import IobError


def test_fast_docbin_path_writes_the_same_bytes_as_docbin_add(fixture_path):
    docs = list(read_iob(fixture_path("label_with_space.tsv"))) + list(
        read_iob(fixture_path("sentences.tsv"), sents_per_doc=2)
    )
    slow, fast, vocab = DocBin(attrs=DOCBIN_ATTRS), DocBin(attrs=DOCBIN_ATTRS), Vocab()
    for doc in docs:
        slow.add(to_doc(vocab, doc))
        add_to_docbin(fast, doc)
    assert fast.to_bytes() == slow.to_bytes()


def test_json_and_docbin_hold_the_same_documents(tmp_path, fixture_path):
    report = convert_iob(fixture_path("iobes.tsv"), tmp_path / "c")
    nlp = spacy.blank("en")
    from_docbin = list(read_docs(tmp_path / "c.spacy", nlp.vocab))
    from_json = list(json_to_docs(json.loads((tmp_path / "c.json").read_text(encoding="utf8"))))
    assert len(from_docbin) == len(from_json) == report.documents == 2
    for a, b in zip(from_docbin, from_json):
        assert [t.text for t in a] == [t.text for t in b]
        assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
        assert [s.start for s in a.sents] == [s.start for s in b.sents]
    saved = json.loads((tmp_path / "c.report.json").read_text(encoding="utf8"))
    assert saved["entities"] == {"DIS": 2, "SPECIES": 1} and saved["scheme"] == "IOBES"


def test_large_corpus_is_sharded_and_spacy_reads_the_folder(tmp_path, fixture_path):
    convert_iob(fixture_path("sentences.tsv"), tmp_path / "c", shard_tokens=2)
    shards = sorted(p.name for p in (tmp_path / "c.spacy").iterdir())
    assert shards == ["00000.spacy", "00001.spacy", "00002.spacy"]
    nlp = spacy.blank("en")
    examples = list(Corpus(tmp_path / "c.spacy")(nlp))
    assert [[t.text for t in eg.reference] for eg in examples] == [["a"], ["b"], ["c"], ["d"], ["e"]]


def test_an_error_leaves_no_output_behind(tmp_path, fixture_path):
    convert_iob(fixture_path("bom.tsv"), tmp_path / "c")
    before = (tmp_path / "c.spacy").read_bytes()
    with pytest.raises(IobError):
        convert_iob(fixture_path("invalid_tag.tsv"), tmp_path / "c")
    assert (tmp_path / "c.spacy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.report.json", "c.spacy"]


def test_a_training_file_without_entities_stops_and_leaves_the_old_outputs(tmp_path, fixture_path):
    convert_iob(fixture_path("bom.tsv"), tmp_path / "c")
    before = (tmp_path / "c.spacy").read_bytes()
    with pytest.raises(CorpusError) as err:
        convert_iob(fixture_path("no_entities.tsv"), tmp_path / "c", require_entities=True)
    assert str(err.value) == (
        f"{fixture_path('no_entities.tsv')} holds no entities: a training file needs "
        f"annotated entities (check that the tag column is the last one)"
    )
    assert (tmp_path / "c.spacy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.report.json", "c.spacy"]
    report = convert_iob(fixture_path("no_entities.tsv"), tmp_path / "d")  # a dev or test file may hold none
    assert report.tokens == 3 and not report.entities


def test_cut_sentences_reach_the_docbin_and_the_json(tmp_path, fixture_path):
    report = convert_iob(fixture_path("long_sentence.tsv"), tmp_path / "c", max_sentence_tokens=6, sents_per_doc=2)
    docs = list(read_docs(tmp_path / "c.spacy", spacy.blank("en").vocab))
    assert [[s.start for s in d.sents] for d in docs] == [[0, 4], [0, 6]]
    assert [[(e.text, e.label_) for e in d.ents] for d in docs] == [
        [("Aspirin", "CHEM")],
        [("heart attack risk", "DIS")],
    ]
    saved = json.loads((tmp_path / "c.report.json").read_text(encoding="utf8"))
    assert saved["repairs"]["long_sentence"]["lines"] == [1] and saved["sentences"] == report.sentences == 4


def run_convert(*args: object) -> Tuple[int, str]:
    """Exit code and output of scripts/convert_file.py, with wasabi's line wrapping undone."""
    result = subprocess.run(
        [sys.executable, "scripts/convert_file.py", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSI_COLORS_DISABLED": "1"},
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_convert_script_options_and_its_one_sentence_failure(tmp_path, fixture_path):
    code, output = run_convert(fixture_path("no_entities.tsv"), tmp_path / "c", "--require-entities")
    assert code == 1 and not (tmp_path / "c.spacy").exists()
    assert output == (
        f"✘ {fixture_path('no_entities.tsv')} holds no entities: a training file needs annotated "
        f"entities (check that the tag column is the last one)"
    )
    code, output = run_convert(fixture_path("long_sentence.tsv"), tmp_path / "c", "--max-sentence-tokens", 6)
    assert code == 0, output
    assert "repaired 1x: sentence over 6 tokens split into pieces of at most 6 (first lines: 1)" in output
    assert "4 documents, 16 tokens, 2 entities" in output
