"""convert's input shapes: train alone, train + test, train + dev + test; disjoint whole-document splits,
seeded; the sample's dev and test go with the sample's train file only; dev is never test by accident."""

import json
import shutil

import pytest
from support.data import EXPORT_LABELS, first_line, splits, write_export
from support.paths import ROOT

from iob_ner.corpus import prepare as prepare_corpus
from iob_ner.corpus.prepare import prepare_corpus as prepare
from iob_ner.corpus.splits import SplitError
from iob_ner.util.outputs import content_sha256
from iob_ner.util.runtime import SetupError


@pytest.mark.parametrize("shape", ["train", "train+test", "train+dev+test"])
def test_each_input_shape_gives_disjoint_splits_holding_every_document(tmp_path, shape):
    train = write_export(tmp_path / "train.tsv", 60)
    dev = write_export(tmp_path / "dev.tsv", 10, start=100) if shape == "train+dev+test" else None
    test = write_export(tmp_path / "test.tsv", 10, start=200) if "test" in shape else None
    record, _ = prepare(train=train, dev=str(dev or "auto"), test=str(test or "auto"), output=tmp_path / "corpus")
    parts = splits(tmp_path / "corpus")
    every = parts["train"] + parts["dev"] + parts["test"]
    assert len(every) == len(set(every))  # disjoint, and no document cut in two
    expected = {f"doc{i}" for i in range(60)}
    expected |= {f"doc{i}" for i in range(100, 110)} if dev else set()
    expected |= {f"doc{i}" for i in range(200, 210)} if test else set()
    assert set(every) == expected
    assert record["carved"] == [s for s in ("dev", "test") if s not in shape.split("+")]
    if test:
        assert parts["test"] == [f"doc{i}" for i in range(200, 210)]  # a given test file stays whole, in order
    for split in ("train", "dev", "test"):  # stratified: every label in every split
        assert set(record["entities"][split]) == set(EXPORT_LABELS)
    carved = record["carved_documents"]
    assert len(carved) == (60 if record["carved"] else 0)
    assert {d["split"] for d in carved} == ({"train", *record["carved"]} if carved else set())
    by_line = {d["first_line"]: d["split"] for d in carved}
    for split in record["carved"]:  # split.json names each carved document by its first line
        assert sorted(first_line(int(name[3:])) for name in parts[split]) == sorted(
            line for line, s in by_line.items() if s == split
        )


def test_same_seed_same_split_another_seed_another(tmp_path):
    train = write_export(tmp_path / "train.tsv", 60)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare(train=train, dev="auto", test="auto", output=tmp_path / name, seed=seed)
        runs[name] = splits(tmp_path / name)
        runs[name]["bytes"] = (tmp_path / name / "train.spacy").read_bytes()
    assert runs["a"] == runs["b"]  # byte-identical too: later workflow steps skip after a rerun
    assert runs["a"]["dev"] != runs["c"]["dev"]


def test_a_users_train_file_never_meets_the_samples_dev_or_test(tmp_path, monkeypatch):
    read = []
    real_convert, real_read = prepare_corpus.convert_iob, prepare_corpus.read_iob
    monkeypatch.setattr(
        prepare_corpus, "convert_iob", lambda path, *a, **k: read.append(path) or real_convert(path, *a, **k)
    )
    monkeypatch.setattr(prepare_corpus, "read_iob", lambda path, *a, **k: read.append(path) or real_read(path, *a, **k))
    sample = ROOT / "assets"
    # the user's export put in place of the sample's train file, beside the sample's dev and test
    assets = tmp_path / "assets"
    shutil.copytree(sample, assets)
    write_export(assets / "train.tsv", 30)
    record, _ = prepare(
        train=assets / "train.tsv", dev="auto", test="auto", output=tmp_path / "corpus", manifest=assets / "sample.json"
    )
    assert record["carved"] == ["dev", "test"] and set(read) == {assets / "train.tsv"}
    read.clear()
    record, _ = prepare(train=sample / "train.tsv", dev="auto", test="auto", output=tmp_path / "sample")
    assert record["carved"] == [] and record["note"].endswith("its own dev and test files are used")
    assert set(read) == {sample / "train.tsv", sample / "dev.tsv", sample / "test.tsv"}


def test_dev_equal_to_test_is_refused_unless_asked(tmp_path):
    train = write_export(tmp_path / "train.tsv", 20)
    held = write_export(tmp_path / "held.tsv", 5, start=100)
    copy = tmp_path / "copy.tsv"
    shutil.copy(held, copy)
    for dev in (held, copy):  # the same file, or the same bytes under another name
        with pytest.raises(SetupError, match="the best checkpoint would be chosen on the test set"):
            prepare(train=train, dev=str(dev), test=str(held), output=tmp_path / "corpus")
    record, _ = prepare(train=train, dev=str(held), test=str(held), output=tmp_path / "corpus", dev_is_test=True)
    assert record["dev_is_test"] is True
    assert json.loads((tmp_path / "corpus" / "split.json").read_text())["dev_is_test"] is True


def test_input_errors_say_what_to_change(tmp_path):
    tiny = write_export(tmp_path / "tiny.tsv", 2)
    with pytest.raises(
        SplitError,
        match=r"tiny.tsv holds 2 document\(s\): too few to carve dev and test from; annotate "
        r"more documents, or pass dev and test files",
    ):
        prepare(train=tiny, dev="auto", test="auto", output=tmp_path / "corpus")
    with pytest.raises(SetupError, match="the dev file nowhere.tsv does not exist"):
        prepare(train=tiny, dev="nowhere.tsv", test="auto", output=tmp_path / "corpus")
    with pytest.raises(SplitError, match="leave nothing to train on"):
        prepare(
            train=write_export(tmp_path / "t.tsv", 20),
            dev="auto",
            test="auto",
            output=tmp_path / "c",
            dev_share=0.5,
            test_share=0.5,
        )
    with pytest.raises(SplitError, match="dev_share must be above 0 to carve dev from the train file, not 0"):
        prepare(train=tiny, dev="auto", test="auto", output=tmp_path / "c", dev_share=0.0)
    assert not (tmp_path / "corpus").exists()


def test_the_samples_manifest_matches_the_shipped_files():
    manifest = json.loads((ROOT / "assets" / "sample.json").read_text())
    for split in ("train", "dev", "test"):
        assert content_sha256(ROOT / "assets" / manifest[split]["file"]) == manifest[split]["sha256"]
