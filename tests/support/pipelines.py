"""Tiny real pipelines that stand in for a trained model: an entity_ruler one (with a component that fails on
a marker), a token_ner one trained in seconds on spaCy's CPU tok2vec (TRAIN), and what they find."""

import random

import numpy
import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example

# -- an entity_ruler pipeline --------------------------------------------------------------------------------

LABELS = {"ZnO": "MAT", "NiO": "MAT", "sputtering": "PRO"}


@Language.component("fail_on_marker")
def fail_on_marker(doc):
    """BOOM: an error the pipeline raises on one document; STOP: a Ctrl-C in the middle of a run."""
    if "BOOM" in doc.text:
        raise ValueError("the marker BOOM\nsecond line of the error")
    if "STOP" in doc.text:
        raise KeyboardInterrupt
    return doc


def make_pipeline(faulty: bool) -> Language:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": label, "pattern": word} for word, label in LABELS.items()])
    if faulty:
        nlp.add_pipe("fail_on_marker")
    return nlp


def ruler_pipeline(path):
    """A saved pipeline that finds LiFePO4 as MAT."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "MAT", "pattern": "LiFePO4"}])
    nlp.to_disk(path)
    return path


# -- a tiny trained token_ner pipeline ------------------------------------------------------------------------

TRAIN = [
    ("LiFePO4 is a cathode made by sol-gel synthesis".split(), [(0, 1, "MAT"), (6, 8, "SMT")]),
    ("ZnO films grown by pulsed laser deposition".split(), [(0, 1, "MAT"), (4, 7, "SMT")]),
    ("we measured TiO2 by X-ray diffraction".split(), [(2, 3, "MAT"), (4, 6, "CMT")]),
    ("NiO was studied by Raman spectroscopy".split(), [(0, 1, "MAT"), (4, 6, "CMT")]),
]


def make_examples(nlp):
    examples = []
    for words, spans in TRAIN:
        gold = Doc(nlp.vocab, words=words)
        gold.ents = [gold.char_span(gold[s].idx, gold[e - 1].idx + len(gold[e - 1]), label=l) for s, e, l in spans]
        examples.append(Example(Doc(nlp.vocab, words=words), gold))
    return examples


def trained_nlp(steps=60):
    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner", name="ner")
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    random.seed(0)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp, examples


def gold_docs(vocab, wrong_every=0):
    """TRAIN as gold Docs; with `wrong_every` k, every k-th entity gets another label (the model will disagree)."""
    docs, count = [], 0
    for words, spans in TRAIN:
        doc = Doc(vocab, words=words)
        ents = []
        for s, e, label in spans:
            count += 1
            if wrong_every and count % wrong_every == 0:
                label = "SMT" if label == "MAT" else "MAT"
            ents.append(Span(doc, s, e, label))
        doc.ents = ents
        docs.append(doc)
    return docs


def is_valid_biluo(tags):
    inside = None
    for tag in tags + ["O"]:
        prefix, label = tag[0], tag[2:]
        if inside is not None:
            if prefix not in "IL" or label != inside:
                return False
            inside = None if prefix == "L" else inside
        elif prefix in "IL":
            return False
        elif prefix == "B":
            inside = label
    return inside is None


# -- entity scores of the trained token_ner (conftest's scored_model) ----------------------------------------

SCORED_TEXTS = [
    "ZnO films grown by pulsed laser deposition",
    "we measured TiO2 by X-ray diffraction",
    "NiO was studied by Raman spectroscopy",
    "CuO films by sol-gel synthesis and Raman spectroscopy",
    "the weather is nice today",
    "LiFePO4 was measured by X-ray diffraction",
    "Fe2O3 grown by laser",
    "we studied it by spectroscopy",
]
TEMPERATURE = 1.5  # not 1: the JSONL must carry the calibrated scores, not scores_t1


def scored_entities(nlp, text: str) -> list:
    """(start_char, end_char, label, exact calibrated score) of what the pipeline finds in `text`."""
    doc = nlp(text)
    group = doc.spans["token_ner"]
    assert [(s.start, s.end, s.label_) for s in group] == [(e.start, e.end, e.label_) for e in doc.ents]
    return [(s.start_char, s.end_char, s.label_, float(score)) for s, score in zip(group, group.attrs["scores"])]


def same_transformer_batch(ours, theirs) -> None:
    """Assert two TransformerData batches (ours: the wordpiece cache's; theirs: spacy-transformers') hold the
    same wordpieces, arrays and alignment, dtypes included."""
    a, b = ours.wordpieces, theirs.wordpieces
    assert a.strings == b.strings and a.lengths == b.lengths
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and numpy.array_equal(x, y), name
    assert numpy.array_equal(ours.align.dataXd, theirs.align.dataXd)
    assert numpy.array_equal(ours.align.lengths, theirs.align.lengths)
    assert ours.align.dataXd.dtype == theirs.align.dataXd.dtype
