"""Property: any valid document, written as IOB2, IOB1, IOBES or BILOU (with or without BOM, CRLF and
-DOCSTART-), converts to a DocBin and back to IOB2 unchanged."""
import io

import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iob_ner.corpus import convert_iob, read_docs
from iob_ner.iob import spans_to_tags, write_iob

WORD = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\t\ufeff\x85"),
               min_size=1, max_size=8).filter(lambda w: not w.startswith("-DOCSTART-") and w.strip() == w)
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
@given(docs=st.lists(documents(), min_size=1, max_size=5), scheme=st.sampled_from(["IOB2", "IOB1", "IOBES", "BILOU"]),
       bom=st.booleans(), crlf=st.booleans(), docstart=st.booleans())
def test_iob_to_docbin_and_back(tmp_path, docs, scheme, bom, crlf, docstart):
    buffer = io.StringIO()
    write_iob(buffer, [(w, s, [0]) for w, s in docs], scheme=scheme, docstart=docstart, newline="\r\n" if crlf else "\n")
    path = tmp_path / "in.tsv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf8"))
    report = convert_iob(path, tmp_path / "out", strict=True)
    back = list(read_docs(tmp_path / "out.spacy", spacy.blank("en").vocab))
    assert [[t.text for t in d] for d in back] == [w for w, _ in docs]
    expected = [spans_to_tags(s, len(w)) for w, s in docs]
    got = [[f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ != "O" else "O" for t in d] for d in back]
    assert got == expected
    assert report.repairs == {}
