"""audit: every finding's file:line is the export's own line (CRLF, BOM, -DOCSTART-, cut sentences), the
consistency check on a crafted file, entity-level findings from crafted probabilities through real
cleanlab, crossval's kept models reused only when they match, suggestions.tsv re-importing strictly, and
one end-to-end run with a tiny transformer."""

import json
import shutil
from pathlib import Path

import numpy
import pytest
import spacy
from support.paths import FIXTURES, ROOT

from iob_ner.audit import check_token_head
from iob_ner.audit.consistency import find_inconsistencies
from iob_ner.audit.findings import (
    OutOfFoldPrediction,
    biluo_to_iob2,
    disagreements,
    iob2_classes,
    kind_of,
    model_findings,
    require_cleanlab,
)
from iob_ner.audit.locate import Located, locate_corpus
from iob_ner.audit.write import applied, suggestion_documents, write_outputs
from iob_ner.corpus.convert import convert_iob, read_docs
from iob_ner.corpus.prepare import prepare_corpus
from iob_ner.experiments.crossval import MODELS_RECORD, kept_models, model_paths, models_record
from iob_ner.iob.reader import located_documents, read_iob
from iob_ner.util.errors import CorpusError, SetupError

LABELS = ["SKILL", "DEGREE", "TOOL"]


def raw_lines(path):
    """The file's lines as the reader numbers them: BOM dropped, CRLF and lone CR ending a line."""
    text = path.read_bytes().decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def token_field(line, tab):
    return (line.split("\t")[0] if tab else line.strip().rsplit(None, 1)[0] if " " in line.strip() else line).strip()


def export(path, n_docs, *, bom=True, newline="\r\n"):
    """A UBIAI-shaped export with a BOM, CRLF, -DOCSTART- lines and, every third document, two sentences."""
    lines = []
    for i in range(n_docs):
        label = LABELS[i % len(LABELS)]
        lines += ["-DOCSTART- -X- O O", f"doc{i}\tO", "needs\tO", f"Python{i}\tB-{label}", f"skills\tI-{label}"]
        if i % 3 == 0:
            lines += ["", "and\tO", f"Docker{i}\tB-TOOL", ".\tO"]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode("utf8"))
    return path


# -- file:line -------------------------------------------------------------------------------------------


READABLE = [
    "bom.tsv",
    "docstart_variants.tsv",
    "empty_token.tsv",
    "empty_tag.tsv",
    "long_sentence.tsv",
    "sentences.tsv",
    "whitespace_columns.txt",
    "four_tab_columns.tsv",
    "token_with_space.tsv",
    "trailing_whitespace.tsv",
    "iobes.tsv",
]


@pytest.mark.parametrize("name", READABLE)
@pytest.mark.parametrize("options", [{}, {"sents_per_doc": 3}, {"max_sentence_tokens": 3}])
def test_each_token_line_is_the_line_that_holds_the_token(name, options):
    path = FIXTURES / name
    lines = raw_lines(path)
    tab = "\t" in path.read_text(encoding="utf-8-sig")
    located = list(located_documents(path, **options))
    assert [d.words for d, _ in located] == [d.words for d in read_iob(path, **options)]
    for document, token_lines in located:
        assert len(token_lines) == len(document.words) and token_lines[0] == document.first_line
        assert token_lines == sorted(set(token_lines))
        for word, line in zip(document.words, token_lines):
            assert token_field(lines[line - 1], tab) == word, (name, line)


def test_crlf_bom_docstart_export_maps_every_split_back_to_its_lines(tmp_path):
    path = export(tmp_path / "export.tsv", 30)
    prepare_corpus(train=path, dev="auto", test="auto", output=tmp_path / "corpus")
    located = locate_corpus(tmp_path / "corpus", {})
    lines = raw_lines(path)
    assert lines[0] == "-DOCSTART- -X- O O" and path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert sorted(len(docs) for docs in located.values()) == [3, 3, 24]
    seen = set()
    for split, docs in located.items():
        corpus = list(read_docs(tmp_path / "corpus" / f"{split}.spacy", spacy.blank("en").vocab))
        assert [[t.text for t in doc] for doc in corpus] == [d.words for d in docs]
        for doc in docs:
            for i, (word, line) in enumerate(zip(doc.words, doc.lines)):
                token, tag = lines[line - 1].split("\t")
                assert token == word
                inside = [label for s, e, label in doc.spans if s <= i < e]
                assert tag == "O" if not inside else tag[2:] == inside[0]
            seen.add(doc.words[0])
    assert seen == {f"doc{i}" for i in range(30)}


def test_an_export_changed_since_convert_is_refused_in_one_sentence(tmp_path):
    sentences = tmp_path / "sentences.tsv"  # no -DOCSTART-: sents_per_doc decides the documents
    sentences.write_text("\n\n".join(f"s{i}\tO\nPython\tB-SKILL" for i in range(12)), encoding="utf8")
    prepare_corpus(train=sentences, dev="auto", test="auto", output=tmp_path / "corpus", sents_per_doc=1)
    assert len(locate_corpus(tmp_path / "corpus", {"sents_per_doc": 1})["train"]) == 10
    with pytest.raises(CorpusError, match="read with max_sentence_tokens 5000, sents_per_doc 2 .*convert` again"):
        locate_corpus(tmp_path / "corpus", {"sents_per_doc": 2, "max_sentence_tokens": 5000})
    path = export(tmp_path / "export.tsv", 12)
    prepare_corpus(train=path, dev="auto", test="auto", output=tmp_path / "corpus")
    locate_corpus(tmp_path / "corpus", {})
    path.write_bytes(path.read_bytes().replace(b"doc5\tO", b"doc5\tB-SKILL"))
    with pytest.raises(
        CorpusError, match=r"corpus/(train|dev|test).spacy was not converted from .*export.tsv as it is"
    ):
        locate_corpus(tmp_path / "corpus", {})


# -- the consistency check -------------------------------------------------------------------------------


def test_the_same_words_annotated_three_ways_are_one_finding_with_every_place(tmp_path):
    rows = [
        ["-DOCSTART- -X- O O", "we\tO", "use\tO", "machine\tB-SKILL", "learning\tI-SKILL"],
        ["-DOCSTART- -X- O O", "machine\tO", "learning\tO", "helps\tO"],
        ["-DOCSTART- -X- O O", "machine\tB-TOOL", "learning\tI-TOOL"],
        ["-DOCSTART- -X- O O", "machine\tB-SKILL", "learning\tI-SKILL", "models\tI-SKILL"],  # longer: not counted
        ["-DOCSTART- -X- O O", "Python\tB-SKILL", "and\tO", "machine\tB-SKILL", "learning\tI-SKILL"],
    ]
    path = tmp_path / "export.tsv"
    path.write_text("\r\n".join(line for row in rows for line in row), encoding="utf8")
    documents = [
        Located("train", str(path), lines, d.words, d.spans, d.sent_starts) for d, lines in located_documents(path)
    ]
    found = find_inconsistencies(documents)
    assert [r["tokens"] for r in found] == ["machine learning"]
    record = found[0]
    assert record["counts"] == {"SKILL": 2, "TOOL": 1, "none": 1} and record["majority"] == "SKILL"
    assert record["against_majority"] == 2
    assert [(p["line"], p["annotation"]) for p in record["places"]] == [
        (4, "SKILL"),
        (7, "none"),
        (11, "TOOL"),
        (20, "SKILL"),
    ]
    for place in record["places"]:
        assert raw_lines(path)[place["line"] - 1].startswith("machine\t")
    assert find_inconsistencies(documents[3:]) == []  # "Python" and "machine learning models" agree with themselves


# -- findings from probabilities -------------------------------------------------------------------------


def test_disagreements_are_grouped_and_named():
    assert disagreements([(0, 2, "A")], [(0, 2, "A")]) == []
    assert disagreements([], [(3, 5, "A")]) == [(3, 5, [], [(3, 5, "A")])]
    groups = disagreements([(0, 2, "A"), (4, 5, "B"), (7, 9, "A")], [(0, 3, "A"), (4, 5, "A"), (10, 11, "B")])
    assert groups == [
        (0, 3, [(0, 2, "A")], [(0, 3, "A")]),
        (4, 5, [(4, 5, "B")], [(4, 5, "A")]),
        (7, 9, [(7, 9, "A")], []),
        (10, 11, [], [(10, 11, "B")]),
    ]
    assert [kind_of(g, s) for _, _, g, s in groups] == ["boundary", "label", "spurious", "missing"]
    assert kind_of([(0, 2, "A"), (3, 4, "A")], [(0, 4, "A")]) == "boundary"


def test_biluo_probabilities_fold_into_iob2_classes():
    classes = iob2_classes({"B", "A"})
    assert classes == ["O", "B-A", "I-A", "B-B", "I-B"]
    names = ["O"] + [f"{p}-{label}" for label in ("A", "B") for p in "BILU"]
    probabilities = numpy.random.default_rng(0).dirichlet(numpy.ones(len(names)), size=4)
    folded = probabilities @ biluo_to_iob2(names, classes)
    numpy.testing.assert_allclose(folded.sum(axis=1), 1.0)
    numpy.testing.assert_allclose(folded[:, 1], probabilities[:, 1] + probabilities[:, 4])  # B-A = B + U
    numpy.testing.assert_allclose(folded[:, 2], probabilities[:, 2] + probabilities[:, 3])  # I-A = I + L


def crafted(n=40):
    """n documents "x Python skills y", Python skills a SKILL; the model agrees, except where it is told not to."""
    classes = iob2_classes({"SKILL"})
    documents, predictions = [], []
    for i in range(n):
        words = [f"x{i}", "Python", "skills", "y"]
        documents.append(
            Located("train", "export.tsv", [10 * i + k for k in range(1, 5)], words, [(1, 3, "SKILL")], [0])
        )
        probabilities = numpy.full((4, 3), 0.02)
        for t, c in enumerate([0, 1, 2, 0]):
            probabilities[t, c] = 0.96
        predictions.append(OutOfFoldPrediction(probabilities, [(1, 3, "SKILL")]))
    return classes, documents, predictions


def test_a_missing_entity_is_found_ranked_first_and_located():
    pytest.importorskip("cleanlab", reason="the audit is optional: pip install -r requirements-audit.txt")
    classes, documents, predictions = crafted()
    documents[7].spans = []  # the annotator missed it; the model did not
    documents[12].spans = [(1, 2, "SKILL")]  # a boundary moved by one token
    predictions[20].probabilities[3] = [0.02, 0.97, 0.01]  # "y" a B-SKILL, though the path says O
    findings, counts = model_findings(documents, predictions, classes)
    assert [(f["kind"], f["document"]) for f in findings] == [("missing", 7), ("boundary", 12)]
    first = findings[0]
    assert first["rank"] == 1 and first["flagged"] and first["score"] == pytest.approx(0.98)  # 1 - p(O)
    assert (first["file"], first["line"], first["text"]) == ("export.tsv", 72, "Python skills")
    assert [t["given"] for t in first["disputed"]] == ["O", "O"]
    assert [t["suggested"] for t in first["disputed"]] == ["B-SKILL", "I-SKILL"]
    assert first["suggested"] == [{"start": 1, "end": 3, "label": "SKILL", "text": "Python skills"}]
    assert findings[1]["disputed"][0]["word"] == "skills" and findings[1]["line"] == 122
    assert counts["tokens"] == 160 and counts["flagged_tokens"] >= 3
    assert counts["flagged_tokens_outside_findings"] == 1  # "y" of document 20: flagged, but the path agrees


def test_suggestions_tsv_holds_the_fixed_documents_and_reimports_strictly(tmp_path):
    classes, documents, predictions = crafted(6)
    documents[2].spans, documents[4].spans = [], [(0, 1, "SKILL"), (1, 3, "SKILL")]
    predictions[4].entities = [(1, 3, "SKILL")]
    pytest.importorskip("cleanlab", reason="the audit is optional: pip install -r requirements-audit.txt")
    findings, _ = model_findings(documents, predictions, classes)
    suggested = suggestion_documents(documents, findings)
    assert sorted(i for i, _ in suggested) == [2, 4]
    write_outputs(tmp_path, ["# report"], findings, [], documents, suggested)
    report = convert_iob(tmp_path / "suggestions.tsv", tmp_path / "reimported", strict=True)
    assert report.scheme == "IOB2" and report.line_endings == "CRLF" and report.documents == 2
    again = [(d.words, d.spans) for d in read_iob(tmp_path / "suggestions.tsv", strict=True)]
    assert again == [(documents[i].words, spans) for i, spans in suggested]
    assert all(spans == [(1, 3, "SKILL")] for _, spans in again)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in records] == list(range(1, len(findings) + 1))
    assert applied(documents[4], []) == documents[4].spans


def test_without_cleanlab_audit_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(SetupError, match=r"pip install -r requirements-audit.txt"):
        require_cleanlab()


def test_the_transition_head_gives_no_token_probabilities(tmp_path):
    config = tmp_path / "config.cfg"
    text = (ROOT / "configs" / "config.cfg").read_text(encoding="utf8")
    config.write_text(text.replace('factory = "token_ner"', 'factory = "ner"'), encoding="utf8")
    with pytest.raises(SetupError, match="audit needs token probabilities"):
        check_token_head(config)
    check_token_head(ROOT / "configs" / "config.cfg")


# -- crossval's models -----------------------------------------------------------------------------------


def test_kept_fold_models_are_reused_only_for_the_same_corpus_folds_and_settings(tmp_path):
    corpus = tmp_path / "corpus"
    prepare_corpus(train=export(tmp_path / "export.tsv", 12), dev="auto", test="auto", output=corpus)
    config = ROOT / "configs" / "config.cfg"
    settings = {"max_steps": 10, "eval_frequency": 5, "warmup_ratio": 0.1, "transformer": "embedded", "gpu_id": -1}
    paths = {"config": config, "train": corpus / "train.spacy", "dev": corpus / "dev.spacy"}
    record = models_record(**paths, assigned=[0, 1, 0, 1], seed=0, **settings)
    output = tmp_path / "crossval"
    assert kept_models(output, record) is None
    for model in model_paths(output, 2):
        model.mkdir(parents=True)
        (model / "meta.json").write_text("{}")
    (output / "runs" / MODELS_RECORD).write_text(json.dumps(record))
    assert kept_models(output, record) == model_paths(output, 2)
    assert kept_models(output, models_record(**paths, assigned=[0, 1, 0, 1], seed=0, **{**settings, "gpu_id": 0}))
    for changed in ({"max_steps": 20}, {"transformer": "bert-base-cased"}):
        assert (
            kept_models(output, models_record(**paths, assigned=[0, 1, 0, 1], seed=0, **{**settings, **changed}))
            is None
        )
    assert kept_models(output, models_record(**paths, assigned=[1, 0, 0, 1], seed=0, **settings)) is None
    shutil.copy(corpus / "test.spacy", corpus / "dev.spacy")  # the corpus changed
    assert kept_models(output, models_record(**paths, assigned=[0, 1, 0, 1], seed=0, **settings)) is None
    shutil.rmtree(model_paths(output, 2)[1])
    assert kept_models(output, record) is None


# -- the model part ----------------------------------------------------------------------------------------


def test_tag_probabilities_are_the_marginals_that_token_confidence_reads():
    from spacy.training.iob_utils import doc_to_biluo_tags
    from support.pipelines import trained_nlp

    nlp, _ = trained_nlp(30)
    ner = nlp.get_pipe("ner")
    docs = list(nlp.pipe(["ZnO films grown by pulsed laser deposition", "NiO was studied", ""]))
    probabilities, confidence = ner.tag_probabilities(docs), ner.token_confidence(docs)
    for doc, p, c in zip(docs, probabilities, confidence):
        assert p.shape == (len(doc), len(ner.tag_names))
        numpy.testing.assert_allclose(p.sum(axis=1), 1.0)
        path = [ner.tag_names.index(tag) for tag in doc_to_biluo_tags(doc)]
        numpy.testing.assert_allclose(p[numpy.arange(len(doc)), path], c, rtol=1e-6)
    assert probabilities[0][0].argmax() == ner.tag_names.index("U-MAT")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert

    return make_tiny_bert(resolve_transformer("embedded"), tmp_path_factory.mktemp("bert") / "bert")


def test_audit_end_to_end_on_a_crlf_bom_export_then_reuses_the_fold_models(tmp_path, tiny_bert, monkeypatch):
    pytest.importorskip("cleanlab", reason="the audit is optional: pip install -r requirements-audit.txt")
    from iob_ner.audit import audit

    monkeypatch.chdir(tmp_path)
    path = export(tmp_path / "export.tsv", 24)
    path.write_bytes(path.read_bytes().replace(b"doc7\tO", b"doc7\tB-SKILL"))  # one spurious entity
    prepare_corpus(train=Path("export.tsv"), dev="auto", test="auto", output=Path("corpus"))
    options = {
        "config": ROOT / "configs" / "config.cfg",
        "corpus": Path("corpus"),
        "output": Path("training/audit"),
        "crossval_dir": Path("training/crossval"),
        "read_options": {},
        "folds": 2,
        "top": 5,
        "transformer": str(tiny_bert),
        "gpu_id": -1,
        "max_steps": 4,
        "eval_frequency": 2,
    }
    first = audit(**options)
    assert first["models"] == "trained" and sum(first["documents"].values()) == 24
    assert json.loads(Path("training/crossval/crossval.json").read_text())["folds"] == 2
    lines = raw_lines(path)
    assert first["findings"], "a 4-step model disagrees with the annotation somewhere"
    for finding in first["findings"]:
        assert finding["file"] == "export.tsv"
        assert lines[finding["line"] - 1].split("\t")[0] == finding["text"].split()[0]
        for token in finding["disputed"]:
            assert lines[token["line"] - 1] == f"{token['word']}\t{token['given']}"
    report = Path("training/audit/report.md").read_text()
    assert f"`export.tsv:{first['findings'][0]['line']}`" in report and "reused" not in report.split("\n")[2]
    reimported = list(read_iob(Path("training/audit/suggestions.tsv"), strict=True))
    assert len(reimported) == first["suggested_documents"] >= 1
    models = model_paths(Path("training/crossval"), 2)
    stamps = [(m / "meta.json").stat().st_mtime_ns for m in models]
    second = audit(**{**options, "gpu_id": None})  # another device: the same models
    assert second["models"] == "reused" and [(m / "meta.json").stat().st_mtime_ns for m in models] == stamps
    assert [(f["kind"], f["line"], f["score"]) for f in second["findings"]] == [
        (f["kind"], f["line"], f["score"]) for f in first["findings"]
    ]


# -- the benchmark's noise and scoring -------------------------------------------------------------------


def test_injected_errors_are_seeded_in_equal_shares_apart_and_where_the_file_says(tmp_path):
    from support.paths import load_benchmark

    bench = load_benchmark("audit/benchmark_audit.py")
    words = "the BRCA1 gene and breast cancer and ovarian cancer in many families with early onset".split()
    clean = [([f"s{i}"] + words, [(5, 7, "Disease"), (8, 10, "Disease")]) for i in range(60)]
    docs = [read_iob_document(w, s) for w, s in clean]
    errors = bench.inject(docs, 0.1, seed=3)
    assert [e["kind"] for e in errors].count("removed") == 4 and len(errors) == 12
    assert {e["kind"] for e in errors} == {"removed", "boundary", "spurious"}
    again = bench.inject([read_iob_document(w, s) for w, s in clean], 0.1, seed=3)
    assert [(e["document"], e["noisy"]) for e in again] == [(e["document"], e["noisy"]) for e in errors]
    for error in errors:
        doc = docs[error["document"]]
        assert error["noisy"] in doc.spans if error["noisy"] else error["original"] not in doc.spans
        if error["kind"] == "boundary":
            (s0, e0, _), (s1, e1, _) = error["original"], error["noisy"]
            assert abs(s0 - s1) + abs(e0 - e1) == 1
    regions = [(e["document"], t) for e in errors for t in e["tokens"]]
    assert len(regions) == len(set(regions))  # no two errors share a token
    path = tmp_path / "noisy.tsv"
    bench.write_noisy(docs, errors, path)
    lines = raw_lines(path)
    for error in errors:
        assert [lines[n - 1].split("\t")[0] for n in error["lines"]] == [
            docs[error["document"]].words[t] for t in error["tokens"]
        ]


def read_iob_document(words, spans):
    from iob_ner.iob.documents import IobDocument

    return IobDocument(list(words), list(spans), [0], 1)


def test_precision_recall_and_auprc_of_a_ranking():
    from support.paths import load_benchmark

    bench = load_benchmark("audit/benchmark_audit.py")
    errors = [
        {"kind": "removed", "lines": [10, 11]},
        {"kind": "spurious", "lines": [30]},
        {"kind": "boundary", "lines": [50]},
    ]
    file = Path("noisy.tsv").resolve()
    ranking = [
        {"file": "noisy.tsv", "line": 11, "end_line": 12},  # hit
        {"file": "noisy.tsv", "line": 20, "end_line": 21},  # miss
        {"file": "noisy.tsv", "line": 10, "end_line": 10},  # the same error again: a miss
        {"file": "other.tsv", "line": 30, "end_line": 30},  # another file: a miss
        {"file": "noisy.tsv", "line": 29, "end_line": 31},  # hit
    ]
    scores = bench.score(ranking, errors, file)
    assert scores["precision_at_n"] == scores["recall_at_n"] == round(1 / 3, 4)
    assert scores["auprc"] == round((1 / 1 + 2 / 5) / 3, 4)
    assert scores["found_by_kind"] == {"removed": 1, "boundary": 0, "spurious": 1}
    assert scores["found_at_n_by_kind"] == {"removed": 1, "boundary": 0, "spurious": 0}  # rank 5 > N = 3


@pytest.mark.parametrize(
    "change,says",
    [({"token_score": "entropy"}, "token_score must be one of self_confidence"), ({"top": 0}, "top .* at least 1")],
)
def test_bad_settings_stop_the_audit_before_any_training(tmp_path, change, says):
    pytest.importorskip("cleanlab", reason="the audit is optional: pip install -r requirements-audit.txt")
    from iob_ner.audit import audit

    options = {"config": ROOT / "configs" / "config.cfg", "corpus": tmp_path / "none", "output": tmp_path / "out"}
    options.update(crossval_dir=tmp_path / "cv", read_options={}, max_steps=10, eval_frequency=5)
    with pytest.raises(SetupError, match=says):
        audit(**{**options, **change})
    assert not (tmp_path / "cv").exists() and not (tmp_path / "out").exists()
