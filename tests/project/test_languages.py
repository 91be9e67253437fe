"""Other languages than English: the pipeline's language (--vars.lang) from convert to predict, on a Chinese
export in character tokens (tests/fixtures/chinese_chars.tsv: 60 sentences made from 8 templates, with PER,
ORG and LOC names whose characters the embedded model's vocabulary holds), and evaluate's score on raw text."""

import json

import pytest
import spacy
from spacy.tokens import Doc
from support.paths import FIXTURES

from iob_ner.corpus.prepare import prepare_corpus
from iob_ner.corpus.tokenizer_fit import detokenize, fit_lines
from iob_ner.evaluation.metrics import raw_text_metrics

CHINESE = FIXTURES / "chinese_chars.tsv"


def test_characters_of_unspaced_scripts_are_glued_and_other_words_spaced():
    words = [*"張明在北京大学工作", "，", "BRCA1", "基", "因", "。"]
    text, starts = detokenize(words)
    assert text == "張明在北京大学工作， BRCA1 基因。"
    assert [text[start : start + len(word)] for start, word in zip(starts, words)] == words


def test_a_chinese_export_fits_spacys_zh_tokenizer_and_not_the_english_one(tmp_path):
    zh, _ = prepare_corpus(train=CHINESE, dev="auto", test="auto", output=tmp_path / "zh", lang="zh")
    assert zh["tokenizer_fit"]["share"] == 1.0 and zh["tokenizer_fit"]["entities"] > 100
    assert fit_lines(zh["tokenizer_fit"])[1] == []
    en, _ = prepare_corpus(train=CHINESE, dev="auto", test="auto", output=tmp_path / "en", lang="en")
    fit = en["tokenizer_fit"]
    # English rules cut at spaces and punctuation: a whole clause is one token, no entity is whole tokens
    assert fit["lang"] == "en" and fit["share"] < 0.05
    line, warnings = fit_lines(fit)
    assert "of the entities cross a token boundary of spaCy's 'en' tokenizer" in warnings[0]
    assert "--vars.lang CODE" in warnings[0]
    assert f"{CHINESE}:1: PER '金英' is not whole tokens: 金英在北京大学工作" == warnings[1]


def gold_doc(vocab, words, ents):
    return Doc(vocab, words=words, ents=ents)


def test_raw_text_scores_by_character_offsets_and_counts_what_the_tokenizer_cannot_reach():
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "GENE", "pattern": "BRCA1"}, {"label": "UNIT", "pattern": "K"}, {"label": "GENE", "pattern": "p53"}]
    )
    gold = [
        # "The (BRCA1) gene." cut by spaCy: ( BRCA1 ) are three tokens: found at its offsets
        gold_doc(nlp.vocab, ["The", "(", "BRCA1", ")", "gene", "."], ["O", "O", "B-GENE", "O", "O", "O"]),
        # "at 550 K." cut by spaCy: "K." is one token, so UNIT 'K' cannot be predicted on raw text
        gold_doc(nlp.vocab, ["at", "550", "K", "."], ["O", "O", "B-UNIT", "O"]),
        # p53 is no gold entity here: a false positive
        gold_doc(nlp.vocab, ["p53", "binds"], ["O", "O"]),
    ]
    raw = raw_text_metrics(nlp, gold)
    assert (raw["gold_entities"], raw["predicted_entities"]) == (2, 2)
    assert (raw["p"], raw["r"], raw["reachable"]) == (0.5, 0.5, 0.5)
    assert raw["per_label"]["UNIT"] == {"p": 0.0, "r": 0.0, "f": 0.0, "support": 1}
    assert raw["per_label"]["GENE"]["support"] == 1 and raw["per_label"]["GENE"]["p"] == 0.5

    zh = spacy.blank("zh")  # character segmentation: every gold entity of a character export is reachable
    zh.add_pipe("entity_ruler").add_patterns([{"label": "LOC", "pattern": [{"TEXT": "北"}, {"TEXT": "京"}]}])
    raw = raw_text_metrics(zh, [gold_doc(zh.vocab, list("我去北京"), ["O", "O", "B-LOC", "I-LOC"])])
    assert (raw["f"], raw["reachable"]) == (1.0, 1.0)


@pytest.mark.slow
def test_chinese_converts_trains_evaluates_and_predicts_raw_text_at_character_offsets(tmp_path):
    """`--vars.lang zh` through the project's own commands, with a tiny random BERT of the embedded model's
    vocabulary (a few dozen steps are enough for these templated names)."""
    from support.project import copy_project, run_project

    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert

    project = copy_project(tmp_path / "project")
    bert = make_tiny_bert(resolve_transformer("embedded"), tmp_path / "bert")
    texts = [
        "張明和林美在上海见面。",
        "清華大学的总部位于北京。",
        "据新華社报道，香港今天下雨。\n 楊光毕业于東京大学，现在住在南京。",
    ]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf8")
    zh = ["--vars.lang", "zh", "--vars.gpu_id", "cpu", "--vars.transformer", str(bert), "--vars.train", str(CHINESE)]
    steps = ["--vars.max_steps", "60", "--vars.eval_frequency", "30", "--vars.predict_input", str(raw)]
    output = "".join(run_project(project, command, ".", *zh, *steps) for command in ("convert", "create-config"))
    assert "Tokenizer fit (zh): 100.0%" in output.replace("\n", " ")
    for command in ("train", "evaluate", "predict"):
        run_project(project, command, ".", *zh, *steps)

    nlp = spacy.load(project / "training" / "model-best")
    assert nlp.lang == "zh" and [t.text for t in nlp.make_doc("清華大学")] == list("清華大学")
    metrics = json.loads((project / "training" / "metrics-test.json").read_text(encoding="utf8"))
    assert metrics["raw_text"]["reachable"] == 1.0 and metrics["raw_text"]["gold_entities"] == metrics["gold_entities"]
    assert metrics["raw_text"]["f"] > 0.5  # the names recur: even a tiny model learns most of them
    records = [json.loads(line) for line in (project / "training" / "predictions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    names = {"張明", "林美", "上海", "清華大学", "北京", "新華社", "香港", "楊光", "東京大学", "南京"}
    found = [(r["text"], e) for r in records for e in r["entities"]]
    assert sum(e["text"] in names for _, e in found) >= 5
    for text, e in found:  # every entity at its character offsets in the text given, never a part of a character
        assert text[e["start"] : e["end"]] == e["text"] and e["text"] == e["text"].strip()


def test_serve_finds_entities_inside_unspaced_chinese_text_at_character_offsets(tmp_path):
    """A zh pipeline saved and loaded (its character tokenizer with it), served: an entity in the middle of a
    clause is found, where an English pipeline's one token for the whole clause could hold none."""
    for package in ("fastapi", "uvicorn", "fastapi_offline", "httpx"):
        pytest.importorskip(package, reason="serving is optional: pip install -r requirements-serve.txt")
    from support.serving import post, serving

    from iob_ner.serving.app import Limits

    nlp = spacy.blank("zh")
    nlp.add_pipe("entity_ruler").add_patterns(
        [
            {"label": label, "pattern": [{"TEXT": char} for char in name]}
            for name, label in [("北京", "LOC"), ("東京大学", "ORG")]
        ]
    )
    nlp.to_disk(tmp_path / "zh")
    text = "张明去了北京，后来在東京大学工作。"
    with serving(spacy.load(tmp_path / "zh"), Limits()) as url:
        entities = post(url, {"text": text}).json()["entities"]
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in entities] == [
        ("北京", "LOC", 4, 6),
        ("東京大学", "ORG", 10, 14),
    ]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
