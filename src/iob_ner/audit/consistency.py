"""The same words annotated differently in different places: a check that needs no model.

For every token sequence annotated as an entity somewhere, every place where the same tokens occur is
looked at: annotated as exactly that span with a label, or left outside every entity ("none"). A
sequence with two or more different annotations is a finding, with every place's file:line. Places where
the tokens are part of a longer or other entity are not counted: "cancer" inside "breast cancer" says
nothing about how "cancer" alone is annotated. Tokens are compared exactly (case included).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, List, Sequence, Tuple

from .locate import Located

NONE = "none"  # the annotation of a place where the tokens are outside every entity


def _entity_forms(documents: Sequence[Located]) -> Dict[Tuple[str, ...], None]:
    """Every token sequence annotated as an entity somewhere, in order of first appearance."""
    forms: Dict[Tuple[str, ...], None] = {}
    for doc in documents:
        for start, end, _ in doc.spans:
            forms.setdefault(tuple(doc.words[start:end]), None)
    return forms


def _annotation_at(doc: Located, labels: List[str], start: int, end: int, entity_at: Dict) -> str:
    """The label of the entity that is exactly [start, end), NONE when every token is outside, "" otherwise."""
    label = entity_at.get((start, end))
    if label is not None:
        return label
    return NONE if all(not labels[i] for i in range(start, end)) else ""


def find_inconsistencies(documents: Sequence[Located]) -> List[dict]:
    """One record per token sequence annotated in two or more ways, most places against the majority first.

    Each record: "tokens", "counts" (annotation -> places), "majority" (the most common annotation; ties:
    the entity label first, then by name), "places" (every place: file, line, annotation, document index).
    """
    forms = _entity_forms(documents)
    by_first: Dict[str, List[Tuple[str, ...]]] = defaultdict(list)
    for form in forms:
        by_first[form[0]].append(form)
    places: Dict[Tuple[str, ...], List[dict]] = defaultdict(list)
    for index, doc in enumerate(documents):
        labels = [""] * len(doc.words)
        for start, end, label in doc.spans:
            labels[start:end] = [label] * (end - start)
        entity_at = {(start, end): label for start, end, label in doc.spans}
        for i, word in enumerate(doc.words):
            for form in by_first.get(word, ()):
                end = i + len(form)
                if end > len(doc.words) or tuple(doc.words[i:end]) != form:
                    continue
                annotation = _annotation_at(doc, labels, i, end, entity_at)
                if annotation:
                    places[form].append(
                        {"file": doc.file, "line": doc.lines[i], "annotation": annotation, "document": index}
                    )
    found = [_record(form, where) for form, where in places.items() if len({p["annotation"] for p in where}) > 1]
    return sorted(found, key=lambda r: (-r["against_majority"], -len(r["places"]), r["tokens"]))


def _record(form: Tuple[str, ...], where: List[dict]) -> dict:
    counts = Counter(p["annotation"] for p in where)
    majority = min(counts, key=lambda a: (-counts[a], a == NONE, a))
    return {
        "kind": "inconsistent",
        "tokens": " ".join(form),
        "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "majority": majority,
        "against_majority": len(where) - counts[majority],
        "places": where,
    }
