"""Long texts in bounded passes (iob_ner.inference.stream): the cuts join back exactly, no doc the pipeline
gets is longer than the bound, each piece is seen through the transformer windows of the text whole, and
the entities, offsets, scores and IOB words are those of the text processed in one pass."""

import numpy
import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy_transformers.span_getters import get_strided_spans
from support.data import records, write_jsonl
from support.paths import ROOT
from support.pipelines import SCORED_TEXTS, make_pipeline

from iob_ner.inference import predict
from iob_ner.inference.inputs import InputProblems, Text
from iob_ner.inference.pipeline import PassPlan, Reading, entity_reading, merge, part_results, predictions
from iob_ner.inference.stream import (
    MARGIN,
    Part,
    Window,
    passes,
    piece_chars,
    pipeline_window,
    split_text,
    text_parts,
)
from iob_ner.iob.reader import read_iob

# Sentences of different lengths, paragraphs now and then, entities of the ruler (ZnO, NiO, sputtering).
SENTENCES = [
    "ZnO films by sputtering on NiO .",
    "We measured the band gap of thin films grown at 400 C .",
    "NiO layers were annealed .",
    "Nothing here at all !",
    "Is sputtering better than sol - gel for ZnO ?",
]
LONG = "".join(SENTENCES[i % 5] + ("\n\n" if i % 17 == 16 else " ") for i in range(400)).strip()


# -- cutting -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [40, 97, 300, 1000])
def test_pieces_join_back_exactly_and_each_is_under_the_bound(bound):
    pieces = split_text(LONG, bound)
    assert "".join(piece for _, piece in pieces) == LONG
    assert all(len(piece) <= bound and LONG[at : at + len(piece)] == piece for at, piece in pieces)
    # every cut is after whitespace and before text: both sides tokenize as the text whole does
    assert all(LONG[at - 1].isspace() and not LONG[at].isspace() for at, _ in pieces[1:])


def test_cuts_are_at_sentence_ends_when_the_bound_holds_one():
    pieces = split_text(LONG, 300)
    assert len(pieces) > 10
    assert all(piece.rstrip()[-1] in ".?!" for _, piece in pieces[:-1])


def test_a_cut_never_falls_inside_a_run_of_whitespace():
    # the window ends inside the run: cutting there would start the next piece with a space token
    assert split_text("aaa bbb    ccc", 9) == [(0, "aaa "), (4, "bbb    "), (11, "ccc")]
    assert split_text("aaa.   bbb", 8) == [(0, "aaa.   "), (7, "bbb")]
    assert split_text("aaaa      bbb", 8) == [(0, "aaaa    "), (8, "  bbb")]  # no other way: a hard cut


def test_the_pieces_tokenize_as_the_text_whole():
    nlp = spacy.blank("en")
    text = LONG.replace(" . ", " .  \n ")  # runs of whitespace and newlines, where pieces are cut
    whole = [(t.idx, t.text) for t in nlp(text)]
    parts = [(at + t.idx, t.text) for at, piece in split_text(text, 200) for t in nlp(piece)]
    assert parts == whole


# -- the context of a piece ------------------------------------------------------------------------------


def windows_over(doc_length: int, size: int, stride: int, offset: int = 0) -> dict:
    """token -> the windows (absolute start, end) spacy-transformers' strided_spans puts over it."""
    doc = Doc(spacy.blank("en").vocab, words=["w"] * doc_length)
    (spans,) = get_strided_spans([doc], window=size, stride=stride)
    over: dict = {}
    for span in spans:
        for i in range(span.start, span.end):
            over.setdefault(i + offset, set()).add((span.start + offset, span.end + offset))
    return over


@pytest.mark.parametrize("size,stride", [(256, 224), (8, 3), (5, 5), (7, 1)])
@pytest.mark.parametrize("length", [1, 9, 40, 257, 700])
def test_each_token_of_a_piece_is_seen_through_the_windows_of_the_whole_doc(size, stride, length):
    window = Window(size, stride)
    whole = windows_over(length, size, stride)
    cuts = sorted({0, length, *range(0, length, max(1, length // 7)), *range(0, length, 61)})
    for start, end in zip(cuts, cuts[1:]):
        c, d = window.context(start, end, length)
        assert 0 <= c <= start < end <= d <= length and c % stride == 0
        piece = windows_over(d - c, size, stride, offset=c)
        assert all(piece[i] == whole[i] for i in range(start, end)), (start, end, c, d)


def test_without_strided_windows_a_piece_gets_a_margin_on_each_side():
    assert Window(10).context(50, 60, 100) == (40, 70)
    assert Window(10).context(5, 95, 100) == (0, 100)


def test_the_window_is_read_from_the_pipeline_config():
    config = spacy.util.load_config(ROOT / "configs" / "config.cfg")
    transformer = config["components"]["transformer"]["model"]["get_spans"]
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": config["components"]["transformer"]["model"]})
    expected = Window(transformer["window"], transformer["stride"])
    assert pipeline_window(nlp) == expected == Window(256, 224)
    assert pipeline_window(make_pipeline(False)) == Window(MARGIN)


def test_dropout_samples_make_the_pieces_shorter(scored_model):
    # each doc with entities runs `samples` more times, its copies in one batch: the pieces shrink to match
    nlp = spacy.load(scored_model)
    assert piece_chars(nlp, 1000) == 1000
    nlp.get_pipe("ner").samples = 4
    assert piece_chars(nlp, 1000) == 250 and PassPlan.of(nlp, 8, 10**6, 1000).piece_chars == 250


# -- passes ------------------------------------------------------------------------------------------------


def test_passes_hold_at_most_batch_size_docs_and_batch_chars_characters():
    parts = [Part(i, 0, 0, "x" * n, n) for i, n in enumerate([30, 30, 50, 10, 10, 10, 200, 5])]
    groups = list(passes(parts, batch_size=3, batch_chars=100))
    assert [[p.index for p in g] for g in groups] == [[0, 1], [2, 3, 4], [5], [6], [7]]
    assert all(len(g) == 1 or sum(p.chars for p in g) <= 100 for g in groups)


def test_a_text_in_pieces_has_every_token_once_and_each_doc_is_its_own_text():
    nlp = make_pipeline(False)
    parts = list(text_parts(nlp, LONG, 0, max_length=len(LONG), longest=500, window=Window(16)))
    assert len(parts) > 10 and all(isinstance(p.content, Doc) for p in parts)
    kept = []
    for part in parts:
        assert part.content.text == LONG[part.offset : part.offset + part.chars]
        a, b = part.keep
        kept += [(part.offset + t.idx, t.text) for t in part.content[a:b]]
        assert len(part.content[a:b].text) <= 500
        assert a <= 16 and len(part.content) - b <= 16
    assert kept == [(t.idx, t.text) for t in nlp.make_doc(LONG)]


# -- the same entities as the text whole -------------------------------------------------------------------


class Recorder:
    """A pipeline component that records the length of every doc and of every pass it is given."""

    def __init__(self):
        self.docs, self.passes = [], []

    def __call__(self, doc):
        self.docs.append(len(doc.text))
        self.passes.append([len(doc.text)])
        return doc

    def pipe(self, docs, batch_size=128):
        docs = list(docs)  # predict calls nlp.pipe once a pass: this is the whole pass
        self.docs += [len(doc.text) for doc in docs]
        self.passes.append([len(doc.text) for doc in docs])
        yield from docs


RECORDER = Recorder()


@Language.factory("length_recorder")
def make_recorder(nlp, name):
    return RECORDER


def ruler_with_recorder() -> Language:
    nlp = make_pipeline(False)
    nlp.add_pipe("length_recorder", first=True)
    RECORDER.docs, RECORDER.passes = [], []
    return nlp


def whole(nlp, text: str, reading=None) -> dict:
    """The prediction for `text` run as one doc in one pass (no cut at all)."""
    plan = PassPlan.of(nlp, 1, len(text) + 1, len(text) + 1)
    nlp.max_length = len(text) + 1
    (pieces,) = part_results(nlp, [text], plan, reading or Reading())
    return merge(Text("x", "x", text), pieces)


@pytest.mark.parametrize("batch_chars", [300, 1234])
def test_a_long_text_in_bounded_pieces_has_the_entities_of_the_whole(models, tmp_path, batch_chars):
    plain, _ = models
    nlp = ruler_with_recorder()
    expected = whole(nlp, LONG)
    RECORDER.docs, RECORDER.passes = [], []
    nlp.max_length = len(LONG)
    (found,) = predictions(
        nlp, [Text("x", "x", LONG)], InputProblems(), batch_size=8, max_length=len(LONG), batch_chars=batch_chars
    )
    assert found.record == expected.record and len(found.record["entities"]) == 400 // 5 * 6
    assert found.words == expected.words and found.spans == expected.spans and not found.split
    # no doc over the bound and its context (MARGIN tokens on each side, under 10 characters each here)
    assert len(RECORDER.docs) > len(LONG) // batch_chars and max(RECORDER.docs) <= batch_chars + 2 * MARGIN * 10
    assert all(len(docs) == 1 or sum(docs) <= batch_chars for docs in RECORDER.passes)
    # the same through predict, JSONL and IOB
    source = tmp_path / "long.txt"
    source.write_text(LONG, encoding="utf8")
    out, iob = tmp_path / "out.jsonl", tmp_path / "out.tsv"
    result = predict(model=plain, source=source, output=out, iob_output=iob, batch_chars=batch_chars)
    assert result["split"] == 0
    (record,) = records(out)
    assert record["entities"] == expected.record["entities"]
    (doc,) = read_iob(iob, strict=True)
    assert doc.words == expected.words and [tuple(s) for s in doc.spans] == expected.spans


def test_an_entity_across_a_cut_is_found_once(models, tmp_path):
    # no sentence end and single spaces: pieces are cut at any space, inside "sol gel" too
    nlp = make_pipeline(False)
    nlp.get_pipe("entity_ruler").add_patterns([{"label": "SMT", "pattern": [{"TEXT": "sol"}, {"TEXT": "gel"}]}])
    text = " ".join(["ZnO by sol gel"] * 300)
    cut = [at for at, _ in split_text(text, 200)]
    assert any(text[at - 4 : at] == "sol " for at in cut)  # the bound does cut an entity
    expected = whole(nlp, text).record
    (found,) = predictions(
        nlp, [Text("x", "x", text)], InputProblems(), batch_size=4, max_length=10**6, batch_chars=200
    )
    assert found.record == expected and len(expected["entities"]) == 600


def test_scores_of_a_streamed_text_are_those_of_the_whole(scored_model, tmp_path):
    nlp = spacy.load(scored_model)
    text = " .\n".join(SCORED_TEXTS * 12)
    reading = entity_reading(nlp)
    expected = whole(nlp, text, reading).record
    assert sum("score" in e for e in expected["entities"]) > 20
    source = write_jsonl(tmp_path / "in.jsonl", [text])
    result = predict(model=scored_model, source=source, output=tmp_path / "out.jsonl", batch_chars=400)
    (record,) = records(tmp_path / "out.jsonl")
    assert result["split"] == 0 and record["entities"] == expected["entities"]


def test_a_streamed_text_is_ranked_by_its_least_sure_token_only_once(scored_model):
    nlp = spacy.load(scored_model)
    text = " .\n".join(SCORED_TEXTS * 6)
    reading = Reading(spans_key="token_ner", confidence=nlp.get_pipe("ner").token_confidence)
    expected = whole(nlp, text, reading)
    plan = PassPlan.of(nlp, 4, len(text), 300)
    (pieces,) = part_results(nlp, [text], plan, reading)
    assert len(pieces) > 3
    assert merge(Text("x", "x", text), pieces).confidence == pytest.approx(expected.confidence, abs=1e-6)


def test_the_transformer_sees_each_piece_as_in_the_whole_text(trf_nlp):
    nlp, _ = trf_nlp
    text = " ".join(SENTENCES * 60)  # about 1,800 tokens: 8 windows
    head = nlp.get_pipe("ner")
    nlp.max_length = len(text) + 1
    whole_doc = nlp(text)
    expected = head.model.predict([whole_doc])[0]
    starts = numpy.array([t.idx for t in whole_doc])
    parts = list(text_parts(nlp, text, 0, len(text) + 1, 1500, pipeline_window(nlp)))
    assert len(parts) > 4
    for part in parts:
        doc = nlp(part.content)
        first = int(numpy.searchsorted(starts, part.offset))
        a, b = part.keep
        # the same windows: the same scores but for float rounding (batches of other shapes)
        numpy.testing.assert_allclose(
            head.model.predict([doc])[0][a:b], expected[first + a : first + b], rtol=0, atol=1e-4
        )


def test_the_server_runs_long_texts_in_bounded_passes(monkeypatch):
    from iob_ner.serving import server

    nlp = ruler_with_recorder()
    expected = [whole(nlp, t).record["entities"] for t in (LONG, "ZnO only")]
    RECORDER.docs, RECORDER.passes = [], []
    nlp.max_length = 1_000_000  # whole() set it to its text's length
    monkeypatch.setattr(server, "BATCH_CHARS", 500)
    assert server.pipeline_runner(nlp)([LONG, "ZnO only"]) == expected
    assert len(RECORDER.passes) > 3 and all(len(docs) == 1 or sum(docs) <= 500 for docs in RECORDER.passes)


def test_batch_chars_under_one_stops_with_one_sentence(models, tmp_path):
    from iob_ner.util.errors import SetupError

    plain, _ = models
    source = write_jsonl(tmp_path / "in.jsonl", ["ZnO"])
    with pytest.raises(SetupError, match="batch_chars must be at least 1"):
        predict(model=plain, source=source, output=tmp_path / "out.jsonl", batch_chars=0)
