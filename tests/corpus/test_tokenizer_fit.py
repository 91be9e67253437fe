"""The tokenizer fit check of convert: entities of the export whose start and end fall on the boundaries of
spaCy's tokens in the raw text rebuilt from the export's tokens (src/iob_ner/corpus/tokenizer_fit.py)."""

import json

import pytest
from support.paths import ROOT

from iob_ner.corpus.prepare import prepare_corpus
from iob_ner.corpus.tokenizer_fit import check_export, detokenize, fit_lines, language_tokenizer
from iob_ner.util.errors import SetupError


def test_detokenize_glues_closing_and_opening_punctuation_and_places_every_word():
    words = ["The", "(", "BRCA1", ")", "gene", ",", "mutated", "."]
    text, starts = detokenize(words)
    assert text == "The (BRCA1) gene, mutated."
    assert [text[start : start + len(word)] for start, word in zip(starts, words)] == words


def write_export(path, sentences):
    path.write_text(
        "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sentence) for sentence in sentences) + "\n", encoding="utf8"
    )
    return path


FITTING = [("LiFePO4", "B-MAT"), ("cathodes", "O"), ("were", "O"), ("coated", "O"), (".", "O")]
# "K." of "550 K." is one spaCy token: a unit entity "K" ends inside it
UNIT = [("annealed", "O"), ("at", "O"), ("550", "B-NUM"), ("K", "B-UNIT"), (".", "O")]


def test_an_entity_inside_a_spacy_token_is_counted_and_named_with_its_line(tmp_path):
    export = write_export(tmp_path / "export.tsv", [FITTING, UNIT] * 10)
    fit = check_export(export, "en").to_dict()
    assert fit["entities"] == 30 and fit["documents"] == 20
    assert fit["per_label"] == {"MAT": 1.0, "NUM": 1.0, "UNIT": 0.0}
    assert fit["share"] == pytest.approx(20 / 30, abs=1e-4)
    first = fit["examples"][0]
    assert first["where"] == f"{export}:10" and first["entity"] == "K" and first["label"] == "UNIT"
    assert first["tokens"] == "K."
    line, warnings = fit_lines(fit)
    assert "66.7% of 30 entities" in line
    assert "cross a token boundary of spaCy's 'en' tokenizer (UNIT 0.0%)" in warnings[0]
    assert warnings[1] == f"{export}:10: UNIT 'K' is not whole tokens: K."


def test_convert_records_the_fit_beside_the_split_and_warns_only_under_the_threshold(tmp_path):
    record, _ = prepare_corpus(train=ROOT / "assets" / "train.tsv", dev="auto", test="auto", output=tmp_path / "corpus")
    assert record["tokenizer_fit"]["share"] == 1.0 and record["tokenizer_fit"]["entities"] > 100
    assert json.loads((tmp_path / "corpus" / "split.json").read_text())["tokenizer_fit"] == record["tokenizer_fit"]
    assert fit_lines(record["tokenizer_fit"])[1] == []


def test_a_language_spacy_lacks_or_cannot_load_is_one_sentence():
    with pytest.raises(SetupError, match="'qq' is not a language code spaCy knows"):
        language_tokenizer("qq")
    with pytest.raises(SetupError, match="'ja' tokenizer needs a package that is not installed: .*SudachiPy"):
        language_tokenizer("ja")
    assert [t.text for t in language_tokenizer("zh")("锂电池正极")]  # Chinese: character segmentation, no package


def test_debug_data_repeats_converts_fit_as_a_finding(tmp_path):
    from iob_ner.corpus.debug_data import tokenizer_fit_findings

    assert tokenizer_fit_findings(tmp_path) == []  # converted before the check: nothing said
    distinct = [[(f"Sample{i}", "O"), *sentence] for i in range(10) for sentence in (FITTING, UNIT)]
    export = write_export(tmp_path / "export.tsv", distinct)
    prepare_corpus(train=export, dev="auto", test="auto", output=tmp_path / "corpus")
    findings = tokenizer_fit_findings(tmp_path / "corpus")
    assert [level for level, _ in findings] == ["warn"] * 6  # the sentence and the 5 first examples
    assert f"{export}:12: UNIT 'K' is not whole tokens: K." in findings[1][1]
    good = prepare_corpus(train=ROOT / "assets" / "train.tsv", dev="auto", test="auto", output=tmp_path / "sample")[0]
    assert tokenizer_fit_findings(tmp_path / "sample") == [("good", fit_lines(good["tokenizer_fit"])[0])]


@pytest.mark.parametrize("lang", ["en", "de", "fr", "zh"])
def test_the_tokenizer_made_without_a_pipeline_is_spacy_blanks(lang):
    """convert builds the rule-based tokenizer from spaCy's registered factory and the language's Defaults,
    without a Language object (whose creation imports torch): the same tokens as spacy.blank's tokenizer.
    If this fails after a spaCy upgrade, compare spacy.language.create_tokenizer with _rule_tokenizer."""
    import spacy

    text = "The (BRCA1) gene, e.g. 550 K. don't U.S.A. http://x.org 3-4 mg/kg, 锂电池 «Zitat» l'homme"
    ours = [token.text for token in language_tokenizer(lang)(text)]
    assert ours == [token.text for token in spacy.blank(lang)(text)], f"the {lang} tokenizers differ"


def test_debug_data_warns_when_convert_checked_another_language_than_the_configs(tmp_path):
    from iob_ner.corpus.debug_data import tokenizer_fit_findings

    prepare_corpus(train=ROOT / "assets" / "train.tsv", dev="auto", test="auto", output=tmp_path / "corpus")
    assert tokenizer_fit_findings(tmp_path / "corpus", "en")[0][0] == "good"
    level, text = tokenizer_fit_findings(tmp_path / "corpus", "de")[0]
    assert level == "warn" and "spaCy's 'en' tokenizer, but the config's pipeline is 'de'" in text
