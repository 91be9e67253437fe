"""Property: any valid document, written as IOB2, IOB1, IOBES or BILOU (with or without BOM, CRLF and
-DOCSTART-), converts to a DocBin and back to IOB2 unchanged."""

import io

import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iob_ner.corpus.convert import convert_iob, read_docs
from iob_ner.iob.reader import read_iob
from iob_ner.iob.report import ReadReport
from iob_ner.iob.tags import spans_to_tags
from iob_ner.iob.writer import write_iob

WORD = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\t\ufeff\x85"),
    min_size=1,
    max_size=8,
).filter(lambda w: not w.startswith("-DOCSTART-") and w.strip() == w)
LABEL = st.sampled_from(["MAT", "HARD SKILLS", "Disease", "b-x", "X-Y-Z"])


@st.composite
def documents(draw):
    words = draw(st.lists(WORD, min_size=1, max_size=12))
    spans, i = [], 0
    while i < len(words):
        if draw(st.booleans()):
            end = draw(st.integers(i + 1, min(len(words), i + 3)))
            spans.append((i, end, draw(LABEL)))
            i = end
        else:
            i += 1
    return words, spans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(documents(), min_size=1, max_size=5),
    scheme=st.sampled_from(["IOB2", "IOB1", "IOBES", "BILOU"]),
    bom=st.booleans(),
    crlf=st.booleans(),
    docstart=st.booleans(),
)
def test_iob_to_docbin_and_back(tmp_path, docs, scheme, bom, crlf, docstart):
    buffer = io.StringIO()
    write_iob(
        buffer, [(w, s, [0]) for w, s in docs], scheme=scheme, docstart=docstart, newline="\r\n" if crlf else "\n"
    )
    path = tmp_path / "in.tsv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf8"))
    report = convert_iob(path, tmp_path / "out", strict=True)
    back = list(read_docs(tmp_path / "out.spacy", spacy.blank("en").vocab))
    assert [[t.text for t in d] for d in back] == [w for w, _ in docs]
    expected = [spans_to_tags(s, len(w)) for w, s in docs]
    got = [[f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ != "O" else "O" for t in d] for d in back]
    assert got == expected
    assert report.repairs == {}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(documents(), min_size=1, max_size=4),
    scheme=st.sampled_from(["IOB2", "IOB1", "IOBES", "BILOU"]),
    docstart=st.booleans(),
    sentence_limit=st.integers(1, 6),
    document_limit=st.integers(1, 15),
    sents_per_doc=st.integers(1, 3),
    lower_case=st.booleans(),
)
def test_cutting_long_sentences_keeps_every_token_and_entity(
    tmp_path, docs, scheme, docstart, sentence_limit, document_limit, sents_per_doc, lower_case
):
    """Each written document is one sentence without blank lines; read with small limits, the pieces hold
    the same tokens and entities, and only a piece that is one entity may pass the sentence limit.
    Lower-case prefixes (b-MAT, o) read the same, one repair a line."""
    buffer = io.StringIO()
    write_iob(buffer, [(w, s, [0]) for w, s in docs], scheme=scheme, docstart=docstart, newline="\n")
    text = buffer.getvalue()
    if lower_case:
        text = "\n".join(_lower_case_prefix(line) for line in text.split("\n"))
    path = tmp_path / "in.tsv"
    path.write_text(text, encoding="utf8")
    report = ReadReport(path=str(path))
    read = list(
        read_iob(
            path,
            max_sentence_tokens=sentence_limit,
            max_document_tokens=document_limit,
            sents_per_doc=sents_per_doc,
            report=report,
        )
    )
    lower_case_lines = sum(r["count"] for k, r in report.repairs.items() if k.startswith("lower_case"))
    assert lower_case_lines == (sum(len(w) for w, _ in docs) if lower_case else 0)
    assert [w for doc in read for w in doc.words] == [w for words, _ in docs for w in words]
    assert _global_spans([(d.words, d.spans) for d in read]) == _global_spans(docs)
    for doc in read:
        bounds = doc.sent_starts + [len(doc.words)]
        for start, end in zip(bounds, bounds[1:]):
            assert end - start <= sentence_limit or [(s, e) for s, e, _ in doc.spans if s == start] == [(start, end)]
        assert len(doc.words) <= max(sentence_limit, document_limit) or len(doc.sent_starts) == 1
        assert docstart or len(doc.sent_starts) <= sents_per_doc


def _global_spans(docs):
    spans, offset = [], 0
    for words, doc_spans in docs:
        spans += [(s + offset, e + offset, label) for s, e, label in doc_spans]
        offset += len(words)
    return spans


def _lower_case_prefix(line):
    """`token<TAB>B-X` as `token<TAB>b-X` and `token<TAB>O` as `token<TAB>o`; other lines unchanged."""
    token, tab, tag = line.partition("\t")
    return f"{token}{tab}{tag[:1].lower()}{tag[1:]}"
