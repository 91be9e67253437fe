"""The IOB reader on one fixture per defect of `spacy convert`: exact tokens, entities, repairs, errors."""
import pytest

from iob_ner.iob import IobError, ReadReport, read_iob


def read(path, **kwargs):
    report = ReadReport(path=str(path))
    docs = list(read_iob(path, report=report, **kwargs))
    return docs, report


def ents(doc):
    return [(" ".join(doc.words[s:e]), label) for s, e, label in doc.spans]


def test_label_with_space_is_kept(fixture_path):
    docs, report = read(fixture_path("label_with_space.tsv"))
    assert [d.words for d in docs] == [["Python", "and", "team", "work"]]
    assert ents(docs[0]) == [("Python", "HARD SKILLS"), ("team work", "SOFT SKILLS")]
    assert report.line_endings == "CRLF" and report.repairs == {}


def test_token_with_space_is_kept(fixture_path):
    docs, _ = read(fixture_path("token_with_space.tsv"))
    assert docs[0].words == ["New York", "is", "big"]
    assert ents(docs[0]) == [("New York", "LOC")]


def test_bom_is_not_part_of_the_first_token(fixture_path):
    docs, report = read(fixture_path("bom.tsv"))
    assert docs[0].words == ["Aspirin", "helps"] and report.bom


def test_every_docstart_form_separates_documents(fixture_path):
    docs, report = read(fixture_path("docstart_variants.tsv"))
    assert [d.words for d in docs] == [["A"], ["B"], ["C"]]
    assert ents(docs[1]) == [("B", "X")]
    assert report.document_boundaries and report.documents == 3


@pytest.mark.parametrize("name,scheme", [("iobes.tsv", "IOBES"), ("bilou.tsv", "BILOU")])
def test_end_and_single_tags_make_one_entity(fixture_path, name, scheme):
    docs, report = read(fixture_path(name))
    assert ents(docs[0]) == [("heart attack risk", "DIS"), ("mice", "SPECIES")]
    assert report.scheme == scheme and report.repairs == {}


def test_bare_labels_keep_every_letter(fixture_path):
    docs, report = read(fixture_path("io_bare_labels.tsv"))
    assert ents(docs[0]) == [("IL-2 gene", "PROTEIN"), ("NF-kB", "PROTEIN")]
    assert report.scheme == "IO"


def test_empty_token_is_dropped_and_reported(fixture_path):
    docs, report = read(fixture_path("empty_token.tsv"))
    assert docs[0].words == ["Ca", "was"]
    assert report.repairs["empty_token"]["count"] == 1 and report.repairs["empty_token"]["lines"] == [2]


def test_empty_token_is_an_error_when_strict(fixture_path):
    with pytest.raises(IobError) as err:
        read(fixture_path("empty_token.tsv"), strict=True)
    assert err.value.line == 2 and str(err.value).startswith(f"{fixture_path('empty_token.tsv')}:2: empty token")


def test_empty_tag_reads_as_outside(fixture_path):
    docs, report = read(fixture_path("empty_tag.tsv"))
    assert docs[0].words == ["Ca", "was", "doped"] and docs[0].spans == []
    assert report.repairs["empty_tag"]["lines"] == [1]
    with pytest.raises(IobError, match=r":1: empty tag"):
        read(fixture_path("empty_tag.tsv"), strict=True)


def test_i_after_o_starts_an_entity_and_is_counted(fixture_path):
    docs, report = read(fixture_path("i_after_o.tsv"))
    assert ents(docs[0]) == [("LiFePO4", "MAT"), ("NiO", "MAT")]
    assert report.scheme == "IOB2" and report.repairs["entity_starts_inside"]["lines"] == [5]
    with pytest.raises(IobError, match=r":5: I-/E-/L- tag"):
        read(fixture_path("i_after_o.tsv"), strict=True)


def test_iob1_is_read_without_repairs(fixture_path):
    docs, report = read(fixture_path("iob1.tsv"), strict=True)
    assert ents(docs[0]) == [("LiFePO4", "MAT"), ("NiO", "MAT"), ("ZnO", "MAT")]
    assert report.scheme == "IOB1" and report.repairs == {}


def test_a_bare_label_among_prefixed_tags_is_an_error(fixture_path):
    with pytest.raises(IobError) as err:
        read(fixture_path("invalid_tag.tsv"))
    assert err.value.line == 3 and "'MAT' is neither O nor a B-/I-/E-/L-/S-/U- tag" in str(err.value)


def test_a_line_without_tab_in_a_tab_file_is_an_error(fixture_path):
    with pytest.raises(IobError, match=r"no_tab_line.tsv:2: no TAB between token and tag"):
        read(fixture_path("no_tab_line.tsv"))


def test_invalid_utf8_names_the_line(fixture_path):
    with pytest.raises(IobError, match=r"invalid_utf8.tsv:2: not valid UTF-8"):
        read(fixture_path("invalid_utf8.tsv"))


def test_whitespace_separated_file_like_matscholar(fixture_path):
    docs, report = read(fixture_path("whitespace_columns.txt"))
    assert report.separator == "whitespace" and report.columns == 2
    assert [d.words for d in docs] == [["MPam 1/2", "C", "Ca"], ["is"]]  # the double blank line is one break
    assert ents(docs[0]) == [("Ca", "MAT")]
    assert report.repairs["empty_token"]["lines"] == [2]
    assert report.repairs["empty_tag"]["lines"] == [3]
    assert report.repairs["whitespace"]["lines"] == [1, 3, 4]


def test_conll_columns_take_token_first_and_tag_last(fixture_path):
    docs, report = read(fixture_path("conll_columns.txt"))
    assert docs[0].words == ["EU", "rejects"] and ents(docs[0]) == [("EU", "ORG")]
    assert report.columns == 4


def test_trailing_whitespace_is_removed_and_counted(fixture_path):
    docs, report = read(fixture_path("trailing_whitespace.tsv"))
    assert docs[0].words == ["Ca", "was"] and ents(docs[0]) == [("Ca", "MAT")]
    assert report.repairs["whitespace"]["count"] == 2
    with pytest.raises(IobError, match=r":1: whitespace around"):
        read(fixture_path("trailing_whitespace.tsv"), strict=True)


def test_sentences_are_grouped_only_without_docstart(fixture_path):
    docs, report = read(fixture_path("sentences.tsv"), sents_per_doc=2)
    assert [d.words for d in docs] == [["a", "b"], ["c", "d"], ["e"]]
    assert [d.sent_starts for d in docs] == [[0, 1], [0, 1], [0]]
    assert ents(docs[0]) == [("b", "X")]
    docs, report = read(fixture_path("docstart_variants.tsv"), sents_per_doc=2)
    assert len(docs) == 3 and any("not applied" in note for note in report.notes)


def test_entities_do_not_cross_sentence_breaks(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tB-X\n\nb\tI-X\n", encoding="utf8")
    docs, report = read(path, sents_per_doc=2)
    assert docs[0].spans == [(0, 1, "X"), (1, 2, "X")]
    assert report.repairs["entity_starts_inside"]["count"] == 1


def test_mixed_bare_then_prefixed_names_the_first_bare_line(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tO\nb\tGENE\nc\tB-GENE\n", encoding="utf8")
    with pytest.raises(IobError) as err:
        read(path)
    assert err.value.line == 2


def test_strict_iobes_rejects_an_unclosed_entity(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tB-X\nb\tO\nc\tS-X\n", encoding="utf8")
    docs, report = read(path)
    assert report.repairs["unclosed_entity"]["lines"] == [2]
    with pytest.raises(IobError, match=r":2: IOBES/BILOU entity not closed"):
        read(path, strict=True)


def test_tag_without_label_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tO\nb\tB-\n", encoding="utf8")
    with pytest.raises(IobError, match=r"x.tsv:2: tag 'B-' has no label"):
        read(path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("-DOCSTART- -X- O O\n\n", encoding="utf8")
    with pytest.raises(IobError, match="holds no token lines"):
        read(path)


def test_only_newline_ends_a_line(tmp_path):
    """Unicode line separators inside a token (U+2028, U+0085) do not split it, unlike str.splitlines."""
    path = tmp_path / "x.tsv"
    path.write_text("a\u2028b\tB-X\nc\x85d\tO\r\ne\tO", encoding="utf8")
    docs, _ = read(path)
    assert docs[0].words == ["a\u2028b", "c\x85d", "e"] and ents(docs[0]) == [("a\u2028b", "X")]
