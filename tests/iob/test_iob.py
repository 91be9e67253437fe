"""The IOB reader on one fixture per defect of `spacy convert`: exact tokens, entities, repairs, errors."""

import pytest

from iob_ner.iob.reader import read_iob
from iob_ner.iob.report import ReadReport
from iob_ner.util.errors import IobError


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


def test_lower_case_prefixes_are_prefixes_and_counted(fixture_path):
    docs, report = read(fixture_path("lower_case_prefixes.tsv"))
    assert docs[0].words == ["Python", "scripting", "and", "SQL", ",", "team", "work"]
    assert ents(docs[0]) == [("Python scripting", "skill"), ("SQL", "SKILL"), ("team work", "Soft")]
    assert report.scheme == "IOB2" and dict(report.entities) == {"skill": 1, "SKILL": 1, "Soft": 1}
    assert report.repairs["lower_case_prefix"]["count"] == 4
    assert report.repairs["lower_case_prefix"]["lines"] == [1, 2, 4, 7]
    assert report.repairs["lower_case_outside"]["lines"] == [3]
    assert report.repairs["lower_case_prefix"]["what"] == "lower-case tag prefix read as a prefix"


def test_lower_case_prefix_is_an_error_when_strict(fixture_path):
    with pytest.raises(IobError) as err:
        read(fixture_path("lower_case_prefixes.tsv"), strict=True)
    assert err.value.line == 1
    assert str(err.value).endswith("lower-case tag prefix read as a prefix (strict mode allows no repairs): 'b-skill'")


def test_lower_case_end_tags_still_tell_the_scheme(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("heart\tb-DIS\nattack\te-DIS\nin\tO\nmice\ts-SPECIES\n", encoding="utf8")
    docs, report = read(path)
    assert ents(docs[0]) == [("heart attack", "DIS"), ("mice", "SPECIES")]
    assert report.scheme == "IOBES" and report.repairs["lower_case_prefix"]["count"] == 3


def test_a_lower_case_prefix_among_bare_labels_is_an_error(tmp_path):
    """b-gene is a prefix, never the bare label 'b-gene': in a file of bare labels it mixes schemes."""
    path = tmp_path / "x.tsv"
    path.write_text("IL-2\tGENE\nNF-kB\tb-gene\n", encoding="utf8")
    with pytest.raises(IobError) as err:
        read(path)
    assert err.value.line == 1 and "(line 2: 'b-gene')" in str(err.value)


def test_four_tab_columns_take_token_first_and_tag_last(fixture_path):
    docs, report = read(fixture_path("four_tab_columns.tsv"))
    assert docs[0].words == ["EU", "rejects", "New York", "call"]
    assert ents(docs[0]) == [("EU", "ORG"), ("New York", "LOC")]
    assert report.separator == "tab" and report.columns == 4 and report.repairs == {}
    assert "4 columns: token first, tag last, others ignored" in report.notes


def test_a_tab_line_with_another_column_count_is_an_error(fixture_path):
    with pytest.raises(IobError) as err:
        read(fixture_path("tab_column_count_mismatch.tsv"))
    assert err.value.line == 3
    assert err.value.message == "2 TAB-separated columns where the file has 4: 'German\\tB-MISC'"


def test_an_extra_tab_column_in_a_two_column_file_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("New York\tB-LOC\nis\tO\nbig\tJJ\tO\n", encoding="utf8")
    with pytest.raises(IobError, match=r"x.tsv:3: 3 TAB-separated columns where the file has 2"):
        read(path)


def test_long_sentence_is_cut_after_a_period_and_never_inside_an_entity(fixture_path):
    docs, report = read(fixture_path("long_sentence.tsv"), max_sentence_tokens=6)
    assert [d.words for d in docs] == [
        ["Aspirin", "reduces", "fever", "."],
        ["It", "helps", "patients", "with"],
        ["heart", "attack", "risk", "in", "trials", "."],
        ["Doses", "vary"],
    ]
    assert [ents(d) for d in docs] == [[("Aspirin", "CHEM")], [], [("heart attack risk", "DIS")], []]
    assert [d.first_line for d in docs] == [1, 5, 9, 15]
    assert (report.sentences, report.documents, report.longest_document) == (4, 4, 6)
    assert report.repairs["long_sentence"] == {
        "count": 1,
        "lines": [1],
        "what": "sentence over 6 tokens split into pieces of at most 6",
    }


def test_long_sentence_is_an_error_when_strict(fixture_path):
    with pytest.raises(IobError) as err:
        read(fixture_path("long_sentence.tsv"), max_sentence_tokens=6, strict=True)
    assert err.value.line == 1
    assert err.value.message.startswith("sentence over 6 tokens (strict mode allows no repairs): add blank lines")


def test_pieces_are_grouped_like_sentences(fixture_path):
    docs, report = read(fixture_path("long_sentence.tsv"), max_sentence_tokens=6, sents_per_doc=2)
    assert [len(d.words) for d in docs] == [8, 8] and [d.sent_starts for d in docs] == [[0, 4], [0, 6]]
    assert [ents(d) for d in docs] == [[("Aspirin", "CHEM")], [("heart attack risk", "DIS")]]


def test_long_document_is_split_at_sentence_boundaries(tmp_path, fixture_path):
    path = tmp_path / "x.tsv"
    path.write_text("-DOCSTART-\n" + fixture_path("long_sentence.tsv").read_text() + "-DOCSTART-\nflu\tB-DIS\n")
    docs, report = read(path, max_sentence_tokens=6, max_document_tokens=10)
    assert [d.words[0] for d in docs] == ["Aspirin", "heart", "flu"]
    assert [d.sent_starts for d in docs] == [[0, 4], [0, 6], [0]]
    assert [d.first_line for d in docs] == [2, 10, 19]
    assert [ents(d) for d in docs] == [[("Aspirin", "CHEM")], [("heart attack risk", "DIS")], [("flu", "DIS")]]
    assert report.repairs["long_sentence"]["lines"] == [2]
    assert report.repairs["long_document"] == {
        "count": 1,
        "lines": [2],
        "what": "document over 10 tokens split into documents at sentence boundaries",
    }


def test_cut_without_punctuation_falls_before_the_open_entity(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tO\nb\tO\nc\tO\nd\tB-X\ne\tI-X\nf\tO\ng\tO\n", encoding="utf8")
    docs, _ = read(path, max_sentence_tokens=4)
    assert [d.words for d in docs] == [["a", "b", "c"], ["d", "e", "f", "g"]]
    assert ents(docs[1]) == [("d e", "X")]


def test_an_entity_longer_than_the_limit_is_kept_whole(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tO\nb\tB-X\nc\tI-X\nd\tI-X\ne\tI-X\nf\tO\ng\tO\n", encoding="utf8")
    docs, report = read(path, max_sentence_tokens=2)
    assert [d.words for d in docs] == [["a"], ["b", "c", "d", "e"], ["f", "g"]]
    assert ents(docs[1]) == [("b c d e", "X")]
    assert any("holds an entity over 2 tokens: kept whole" in note for note in report.notes)


def test_piece_lines_count_dropped_lines(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tO\n\tO\nb\tO\n.\tO\nc\tO\n", encoding="utf8")
    docs, report = read(path, max_sentence_tokens=3)
    assert [d.words for d in docs] == [["a", "b", "."], ["c"]] and [d.first_line for d in docs] == [1, 5]
    assert report.repairs["empty_token"]["lines"] == [2]


def test_no_limit_keeps_a_long_sentence_whole(fixture_path):
    docs, report = read(fixture_path("long_sentence.tsv"), max_sentence_tokens=0)
    assert len(docs) == 1 and len(docs[0].words) == 16 and "long_sentence" not in report.repairs


@pytest.mark.parametrize("periods", [True, False])
def test_thirty_thousand_tokens_without_a_blank_line(tmp_path, periods):
    """A UBIAI-like export: one sentence of 30,000 tokens, a 3-token entity every 100 tokens (4998-5000
    straddles the first 5,000-token window), a period every 31 tokens or none at all."""
    path, expected = tmp_path / "long.tsv", []
    with path.open("w", encoding="utf8") as out:
        for i in range(30_000):
            tag = "B-X" if i % 100 == 98 else "I-X" if i % 100 in (99, 0) and i > 0 else "O"
            word = "." if periods and i % 31 == 30 and tag == "O" else f"w{i}"
            if tag == "B-X":
                expected.append(" ".join(f"w{j}" for j in range(i, min(i + 3, 30_000))))
            out.write(f"{word}\t{tag}\n")
    docs, report = read(path, max_sentence_tokens=5000)
    assert max(len(d.words) for d in docs) <= 5000 and report.longest_document <= 5000
    assert sum(len(d.words) for d in docs) == report.tokens == 30_000 and report.documents == len(docs)
    assert [" ".join(d.words[s:e]) for d in docs for s, e, _ in d.spans] == expected
    if periods:
        assert all(d.words[-1] == "." for d in docs[:-1])  # every cut falls after a period
    else:
        assert docs[0].words[-1] == "w4997"  # before the entity w4998 w4999 w5000, not inside it
    assert report.repairs["long_sentence"]["count"] == 1 and report.repairs["long_sentence"]["lines"] == [1]
