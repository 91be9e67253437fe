"""predict.py at the edges: long texts split with exact offsets, bad documents named and skipped while
the others are written once and in order, other file extensions warned about, outputs whole or untouched.

A tiny real pipeline (blank English + entity_ruler, plus a component that fails on a marker) stands in
for a trained model (tests/support/pipelines.py). Entity scores and min_score use its tiny token_ner
pipeline (spaCy's CPU tok2vec, trained once per session in seconds; tests/inference/test_review.py shares it).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from support.data import records, write_jsonl
from support.paths import ROOT
from support.pipelines import SCORED_TEXTS, TEMPERATURE, make_pipeline, scored_entities

from iob_ner.inference import predict
from iob_ner.inference import prediction_summary as summary
from iob_ner.inference.inputs import NothingRead
from iob_ner.inference.stream import split_text
from iob_ner.iob.reader import read_iob
from iob_ner.util.runtime import SetupError


def expected_entities(text: str) -> list:
    """What the pipeline finds in the whole text at once (no length limit)."""
    nlp = make_pipeline(False)
    nlp.max_length = len(text) + 1
    return [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char} for e in nlp(text).ents]


def check_offsets(record: dict) -> None:
    for ent in record["entities"]:
        assert record["text"][ent["start"] : ent["end"]] == ent["text"]


LONG_TEXT = "\n\n".join(
    " ".join(f"Paragraph {p} sentence {s} : ZnO films by sputtering on NiO ." for s in range(6)) for p in range(8)
)


def test_split_text_cuts_at_paragraphs_then_sentences_then_spaces_then_hard():
    assert split_text("aaa bbb\n\nccc ddd", 12) == [(0, "aaa bbb\n\n"), (9, "ccc ddd")]
    assert split_text("Aa bb. Cc dd. Ee", 12) == [(0, "Aa bb. "), (7, "Cc dd. Ee")]
    assert split_text("aaa bbb ccc ddd", 10) == [(0, "aaa bbb "), (8, "ccc ddd")]
    assert split_text("abcdefghij", 4) == [(0, "abcd"), (4, "efgh"), (8, "ij")]
    assert split_text("short", 10) == [(0, "short")]
    text = LONG_TEXT
    pieces = split_text(text, 150)
    assert "".join(chunk for _, chunk in pieces) == text
    assert all(len(chunk) <= 150 and text[offset : offset + len(chunk)] == chunk for offset, chunk in pieces)


def test_long_text_is_split_and_offsets_are_exact_in_the_full_text(models, tmp_path):
    plain, _ = models
    source = tmp_path / "long.txt"
    source.write_text(LONG_TEXT, encoding="utf8")
    result = predict(
        model=plain, source=source, output=tmp_path / "out.jsonl", iob_output=tmp_path / "out.tsv", max_length=200
    )
    assert result["documents"] == 1 and result["split"] == 1 and result["skipped"] == 0
    (record,) = records(tmp_path / "out.jsonl")
    assert record["text"] == LONG_TEXT
    assert record["entities"] == expected_entities(LONG_TEXT) and len(record["entities"]) == 8 * 6 * 3
    check_offsets(record)
    (doc,) = read_iob(tmp_path / "out.tsv", strict=True)
    assert doc.words == [t.text for t in make_pipeline(False)(LONG_TEXT) if not t.is_space]
    assert [(" ".join(doc.words[s:e]), label) for s, e, label in doc.spans] == [
        (e["text"], e["label"]) for e in record["entities"]
    ]


def test_non_utf8_txt_file_is_skipped_by_name_and_the_others_are_written(models, tmp_path, capsys):
    plain, _ = models
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("ZnO films .", encoding="utf8")
    (folder / "b.txt").write_bytes(b"first line\ncaf\xe9 ZnO\n")
    (folder / "c.txt").write_text("NiO by sputtering .", encoding="utf8")
    result = predict(model=plain, source=folder, output=tmp_path / "out.jsonl")
    assert [r["id"] for r in records(tmp_path / "out.jsonl")] == ["a.txt", "c.txt"]
    assert result["skipped"] == 1 and result["skipped_reasons"] == {"not UTF-8": 1}
    out = " ".join(capsys.readouterr().out.split())
    assert f"{folder / 'b.txt'}: skipped, not UTF-8" in out and "line 2, column 4" in out


def test_latin1_byte_in_jsonl_is_reported_with_file_and_line_not_replaced(models, tmp_path, capsys):
    plain, _ = models
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": "a", "text": "ZnO ."}\n{"text": broken\n{"id": "b", "text": "caf\xe9 ZnO"}\n'
        b'{"id": "c", "text": "  "}\n{"id": "d", "text": "x \\ud800 ZnO"}\n'
        b'{"id": "e", "text": "NiO ."}\n'
    )
    result = predict(model=plain, source=source, output=tmp_path / "out.jsonl")
    written = records(tmp_path / "out.jsonl")
    assert [r["id"] for r in written] == ["a", "e"]
    assert "\ufffd" not in (tmp_path / "out.jsonl").read_text(encoding="utf8")
    assert result["skipped"] == 4
    assert result["skipped_reasons"] == {"not JSON": 1, "not UTF-8": 2, "empty": 1}
    out = " ".join(capsys.readouterr().out.split())
    assert f"{source}:2: skipped, not JSON" in out
    assert f"{source}:3: skipped, not UTF-8 (invalid continuation byte: 0xe9 at byte 25)" in out
    assert f"{source}:4: skipped, the text is empty" in out
    assert f"{source}:5: skipped, not UTF-8 (unpaired surrogate \\ud800)" in out


def test_lines_mode_names_the_bad_line_and_keeps_the_others(models, tmp_path, capsys):
    plain, _ = models
    source = tmp_path / "in.txt"
    source.write_bytes(b"\xef\xbb\xbfZnO one .\r\n\r\ncaf\xe9 two\r\nNiO three .\r\n")
    result = predict(model=plain, source=source, output=tmp_path / "out.jsonl", lines=True)
    assert [(r["id"], r["text"]) for r in records(tmp_path / "out.jsonl")] == [
        ("in.txt:1", "ZnO one ."),
        ("in.txt:4", "NiO three ."),
    ]
    assert result["skipped"] == 1
    assert f"{source}:3: skipped, not UTF-8" in " ".join(capsys.readouterr().out.split())


def test_other_extensions_are_warned_once_and_upper_case_txt_is_read(models, tmp_path, capsys):
    plain, _ = models
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "A.TXT").write_text("ZnO .", encoding="utf8")
    (folder / "sub" / "b.Jsonl").write_text('{"id": "b", "text": "NiO ."}\n', encoding="utf8")
    (folder / "a.json").write_text('{"text": "x"}', encoding="utf8")
    (folder / "b.csv").write_text("x,y", encoding="utf8")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    result = predict(model=plain, source=folder, output=folder / "out.jsonl")
    assert [r["id"] for r in records(folder / "out.jsonl")] == ["A.TXT", "a.json", "b"]  # .json: read as JSON
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("with other extensions") == 1
    assert "skipped 1 file(s) with other extensions: b.csv" in out
    # The output now sits in the input folder: a second run must not read it back as input.
    again = predict(model=plain, source=folder, output=folder / "out.jsonl")
    assert again["documents"] == result["documents"] == 3


def test_a_json_file_is_read_as_json_records_not_as_its_source_text(models, tmp_path, capsys):
    plain, _ = models
    source = tmp_path / "in.json"
    source.write_text('[{"text": "LiFePO4 cathodes"}, {"id": "z", "text": "ZnO films ."}]', encoding="utf8")
    predict(model=plain, source=source, output=tmp_path / "out.jsonl")
    written = records(tmp_path / "out.jsonl")
    assert [(r["id"], r["text"]) for r in written] == [("in.json[0]", "LiFePO4 cathodes"), ("z", "ZnO films .")]
    assert [e["text"] for e in written[1]["entities"]] == ["ZnO"]
    one = tmp_path / "one.json"  # one object, as a .jsonl line holds it
    one.write_text('{"id": "o", "text": "NiO ."}', encoding="utf8")
    predict(model=plain, source=one, output=tmp_path / "one.jsonl")
    assert [(r["id"], r["text"]) for r in records(tmp_path / "one.jsonl")] == [("o", "NiO .")]


def test_a_json_file_of_the_wrong_shape_is_named_with_its_item(models, tmp_path, capsys):
    plain, _ = models
    source = tmp_path / "in.json"
    source.write_text('[{"text": "ZnO ."}, "NiO .", {"title": "x"}]', encoding="utf8")
    result = predict(model=plain, source=source, output=tmp_path / "out.jsonl")
    assert [r["text"] for r in records(tmp_path / "out.jsonl")] == ["ZnO ."]
    assert result["skipped_reasons"] == {'no "text"': 2}
    out = " ".join(capsys.readouterr().out.split())
    for index in (1, 2):
        assert f'{source}[{index}]: skipped, no "text" string (a record is an object {{"text": ..., "id": ...}})' in out
    strings = tmp_path / "strings.json"
    strings.write_text('"ZnO ."', encoding="utf8")
    with pytest.raises(NothingRead, match=r"no document of .*strings.json could be read \(1 not records"):
        predict(model=plain, source=strings, output=tmp_path / "strings.jsonl")
    out = " ".join(capsys.readouterr().out.split())
    assert f'{strings}: skipped, a JSON string, not an array of {{"text": ..., "id": ...}} objects nor one' in out
    assert not (tmp_path / "strings.jsonl").exists()


def test_a_document_the_pipeline_fails_on_is_skipped_and_its_batch_is_rerun(models, tmp_path, capsys):
    _, faulty = models
    source = tmp_path / "in.jsonl"
    texts = ["ZnO one .", "BOOM NiO .", "NiO three .", "sputtering four ."]
    source.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    result = predict(model=faulty, source=source, output=tmp_path / "out.jsonl", iob_output=tmp_path / "out.tsv")
    assert [r["id"] for r in records(tmp_path / "out.jsonl")] == ["0", "2", "3"]
    assert result["skipped_reasons"] == {"pipeline error": 1} and result["entities"] == 3
    assert len(list(read_iob(tmp_path / "out.tsv", strict=True))) == 3
    out = " ".join(capsys.readouterr().out.split())
    assert f"{source}:2: skipped, the pipeline failed (ValueError: the marker BOOM)" in out


def test_an_interrupt_leaves_the_previous_outputs_untouched(models, tmp_path):
    _, faulty = models
    source = tmp_path / "in.jsonl"
    output, iob = tmp_path / "out" / "predictions.jsonl", tmp_path / "out" / "predictions.tsv"
    source.write_text('{"text": "ZnO ."}\n{"text": "NiO ."}\n')
    predict(model=faulty, source=source, output=output, iob_output=iob)
    before = output.read_bytes(), iob.read_bytes()
    source.write_text('{"text": "ZnO ."}\n' * 100 + '{"text": "STOP"}\n')
    with pytest.raises(KeyboardInterrupt):
        predict(model=faulty, source=source, output=output, iob_output=iob, batch_size=8)
    assert (output.read_bytes(), iob.read_bytes()) == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["predictions.jsonl", "predictions.tsv"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/predict.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_names_a_bad_file_and_goes_on_and_stops_cleanly_on_a_bad_model(models, tmp_path):
    plain, _ = models
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("ZnO .", encoding="utf8")
    (folder / "bad.txt").write_bytes(b"\xff\xfe binary")
    result = run_cli(str(plain), str(folder), str(tmp_path / "out.jsonl"))
    log = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, log
    assert f"{folder / 'bad.txt'}: skipped, not UTF-8" in log and "Traceback" not in log
    assert "1 document(s) written, 1 entities, 1 input(s) skipped (1 not UTF-8), 0 long text(s) split" in log
    failed = run_cli(str(tmp_path / "no-model"), str(folder), str(tmp_path / "out2.jsonl"))
    log = " ".join((failed.stdout + failed.stderr).split())
    assert failed.returncode == 1 and "Traceback" not in log
    assert f"the model {tmp_path / 'no-model'} is neither a pipeline folder" in log
    assert not (tmp_path / "out2.jsonl").exists()


# -- property: any mix of good and bad documents ---------------------------------------------------------

MAX_LENGTH = 60
WORDS = st.sampled_from(["ZnO", "NiO", "sputtering", "films", "grown", "on", "glass", ".", "\n", "\n\n"])
GOOD_TEXT = st.lists(WORDS, min_size=1, max_size=8).map(" ".join).filter(lambda t: t.strip())
LONG = st.lists(WORDS, min_size=30, max_size=60).map(" ".join).filter(lambda t: len(t) > MAX_LENGTH)
BAD_LINES = {
    "not JSON": b'{"text": broken',
    "not UTF-8": b'{"text": "caf\xe9 ZnO"}',
    'no "text"': b'{"title": "no text"}',
    "pipeline error": b'{"text": "ZnO BOOM"}',
    "empty": b'{"text": " \\n "}',
}
ITEM = st.one_of(
    GOOD_TEXT.map(lambda t: ("good", t)),
    LONG.map(lambda t: ("good", t)),
    st.sampled_from(sorted(BAD_LINES)).map(lambda kind: ("bad", kind)),
)


@settings(max_examples=30, deadline=None)
@given(items=st.lists(ITEM, min_size=1, max_size=12), batch_size=st.integers(1, 5))
def test_every_good_document_is_written_once_in_order_and_every_bad_one_counted(models, items, batch_size):
    _, faulty = models
    lines, good, bad = [], [], []
    for i, (kind, value) in enumerate(items):
        if kind == "good":
            lines.append(json.dumps({"id": f"d{i}", "text": value}).encode("utf8"))
            good.append((f"d{i}", value))
        else:
            lines.append(BAD_LINES[value])
            bad.append(value)
    with tempfile.TemporaryDirectory() as tmp:
        source, output, iob = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl", Path(tmp) / "out.tsv"
        source.write_bytes(b"\n".join(lines) + b"\n")
        if not good:  # every document bad: an error, and nothing written (issue 21, cause 9)
            with pytest.raises(NothingRead, match=f"{len(bad)} input|could be read"):
                predict(model=faulty, source=source, output=output, iob_output=iob, batch_size=batch_size)
            assert not output.exists() and not iob.exists()
            return
        result = predict(
            model=faulty, source=source, output=output, iob_output=iob, batch_size=batch_size, max_length=MAX_LENGTH
        )
        written = records(output)
        iob_docs = list(read_iob(iob, strict=True)) if iob.read_bytes() else []
    assert [(r["id"], r["text"]) for r in written] == good
    assert result["skipped"] == len(bad) and result["skipped_reasons"] == {k: bad.count(k) for k in set(bad)}
    assert result["split"] == sum(len(text) > MAX_LENGTH for _, text in good)
    for record in written:
        check_offsets(record)
        assert record["entities"] == expected_entities(record["text"])
    assert len(iob_docs) == len(written)


# -- entity scores and min_score (a tiny trained token_ner) ------------------------------------------------


def test_entity_scores_in_jsonl_are_the_components_calibrated_scores(scored_model, tmp_path, capsys):
    nlp = spacy.load(scored_model)
    assert nlp.get_pipe("ner").temperature == TEMPERATURE
    source = write_jsonl(tmp_path / "in.jsonl", SCORED_TEXTS)
    result = predict(model=scored_model, source=source, output=tmp_path / "out.jsonl", batch_size=3)
    written = records(tmp_path / "out.jsonl")
    assert [r["text"] for r in written] == SCORED_TEXTS and result["scored"] and result["below_min_score"] == 0
    some = 0
    for record in written:
        want = scored_entities(nlp, record["text"])
        assert [(e["start"], e["end"], e["label"], e["score"]) for e in record["entities"]] == [
            (s, e, label, round(score, 4)) for s, e, label, score in want
        ]
        raw = nlp(record["text"]).spans["token_ner"].attrs["scores_t1"]
        some += sum(round(float(r), 4) != e["score"] for r, e in zip(raw, record["entities"]))
        check_offsets(record)
    assert some  # at T = 1.5 the uncalibrated scores differ: the JSONL holds the calibrated ones
    assert "gives no entity scores" not in capsys.readouterr().out


def test_scores_come_along_with_the_shifted_offsets_of_a_split_text(scored_model, tmp_path):
    nlp = spacy.load(scored_model)
    text = " ".join(SCORED_TEXTS[:4]) + " .\n\n" + " . ".join(SCORED_TEXTS[4:])
    source = write_jsonl(tmp_path / "in.jsonl", [text])
    result = predict(model=scored_model, source=source, output=tmp_path / "out.jsonl", max_length=60)
    assert result["split"] == 1
    (record,) = records(tmp_path / "out.jsonl")
    nlp.max_length = 60
    want = [
        (s + offset, e + offset, label, round(score, 4))
        for offset, chunk in split_text(text, 60)
        for s, e, label, score in scored_entities(nlp, chunk)
    ]
    assert len(want) > 5
    assert [(e["start"], e["end"], e["label"], e["score"]) for e in record["entities"]] == want
    check_offsets(record)


def test_min_score_leaves_out_exactly_the_entities_under_it_from_jsonl_and_iob(scored_model, tmp_path):
    nlp = spacy.load(scored_model)
    every = {text: scored_entities(nlp, text) for text in SCORED_TEXTS}
    scores = sorted(score for found in every.values() for *_, score in found)
    threshold = (scores[2] + scores[3]) / 2  # three entities under it
    assert scores[2] < threshold < scores[3]
    source = write_jsonl(tmp_path / "in.jsonl", SCORED_TEXTS)
    result = predict(
        model=scored_model,
        source=source,
        output=tmp_path / "out.jsonl",
        iob_output=tmp_path / "out.tsv",
        min_score=threshold,
        batch_size=3,
    )
    written = records(tmp_path / "out.jsonl")
    assert result["below_min_score"] == 3 and result["entities"] == len(scores) - 3
    iob_docs = list(read_iob(tmp_path / "out.tsv", strict=True))
    assert len(iob_docs) == len(written) == len(SCORED_TEXTS)
    for record, iob_doc in zip(written, iob_docs):
        kept = [(s, e, label) for s, e, label, score in every[record["text"]] if score >= threshold]
        assert [(e["start"], e["end"], e["label"]) for e in record["entities"]] == kept
        assert all(e["score"] >= round(threshold, 4) for e in record["entities"])
        # the entity's tokens as they stand in the document: "X-" of "X-ray" is two tokens there, one alone
        doc = nlp.make_doc(record["text"])
        assert [(" ".join(iob_doc.words[s:e]), label) for s, e, label in iob_doc.spans] == [
            (" ".join(t.text for t in doc.char_span(e["start"], e["end"])), e["label"]) for e in record["entities"]
        ]
    assert "3 entities under min_score" in summary(result, [tmp_path / "out.jsonl"])


def test_a_pipeline_without_scores_says_so_once_and_writes_no_score_key(models, transition_model, tmp_path, capsys):
    plain, _ = models
    source = write_jsonl(tmp_path / "in.jsonl", ["ZnO by sputtering .", "NiO .", "ZnO ."])
    result = predict(model=plain, source=source, output=tmp_path / "out.jsonl", batch_size=1)
    written = records(tmp_path / "out.jsonl")
    assert result["entities"] == 4 and not result["scored"]
    assert all("score" not in e for r in written for e in r["entities"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("the pipeline's entity_ruler gives no entity scores: records have no score") == 1
    predict(model=transition_model, source=source, output=tmp_path / "out2.jsonl")
    assert all("score" not in e for r in records(tmp_path / "out2.jsonl") for e in r["entities"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("the pipeline's ner (transition) gives no entity scores: records have no score") == 1
    for model in (plain, transition_model):
        with pytest.raises(SetupError, match=r"^min_score 0\.5 needs entity scores, and the pipeline's .* gives none"):
            predict(model=model, source=source, output=tmp_path / "out3.jsonl", min_score=0.5)
    assert not (tmp_path / "out3.jsonl").exists()
    with pytest.raises(SetupError, match="between 0 and 1"):
        predict(model=plain, source=source, output=tmp_path / "out3.jsonl", min_score=1.5)


def test_scores_are_found_under_a_renamed_key_and_not_invented_without_one(scored_model, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", SCORED_TEXTS[:2])
    renamed, unkeyed = tmp_path / "renamed", tmp_path / "unkeyed"
    spacy.load(scored_model, config={"components.ner.spans_key": "scored_ents"}).to_disk(renamed)
    spacy.load(scored_model, config={"components.ner.spans_key": None}).to_disk(unkeyed)
    predict(model=scored_model, source=source, output=tmp_path / "default.jsonl")
    predict(model=renamed, source=source, output=tmp_path / "renamed.jsonl")
    assert records(tmp_path / "renamed.jsonl") == records(tmp_path / "default.jsonl")
    assert all("score" in e for r in records(tmp_path / "renamed.jsonl") for e in r["entities"])
    capsys.readouterr()
    predict(model=unkeyed, source=source, output=tmp_path / "unkeyed.jsonl")
    assert all("score" not in e for r in records(tmp_path / "unkeyed.jsonl") for e in r["entities"])
    assert "ner (token_ner, spans_key null) gives no entity scores" in " ".join(capsys.readouterr().out.split())


def test_cli_min_score_on_a_pipeline_without_scores_stops_with_one_sentence(models, tmp_path):
    plain, _ = models
    source = write_jsonl(tmp_path / "in.jsonl", ["ZnO ."])
    result = run_cli(str(plain), str(source), str(tmp_path / "out.jsonl"), "--min-score", "0.5")
    log = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in log, log
    assert "min_score 0.5 needs entity scores, and the pipeline's entity_ruler gives none" in log
    assert not (tmp_path / "out.jsonl").exists()
