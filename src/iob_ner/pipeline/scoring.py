"""Which component of a pipeline scores its entities, and reading those scores from a doc.

One rule for every command (predict, review, serve, evaluate, train's calibration, the benchmarks): the
scoring NER is the component that assigns doc.ents and writes them, with scores, to doc.spans[its
spans_key] (token_ner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc


@dataclass
class ScoringNer:
    """The pipeline's scoring entity recognizer: its name, its doc.spans key, the component itself."""

    name: str
    spans_key: str
    pipe: object


def scoring_ner(nlp: Language) -> Optional[ScoringNer]:
    """The component that sets doc.ents and writes them, with scores, to doc.spans[its spans_key]: token_ner.

    Found by what it is (a `spans_key` setting on a component that assigns doc.ents), not by its name or
    the default key, so a renamed component or a key overridden in the config is still found. The last
    one wins where there are several: it is the closest to the final doc.ents.
    """
    found = None
    for name, pipe in nlp.pipeline:
        key = getattr(pipe, "spans_key", None)
        if isinstance(key, str) and key and "doc.ents" in nlp.get_pipe_meta(name).assigns:
            found = ScoringNer(name, key, pipe)
    return found


def unscored_ner(nlp: Language) -> str:
    """Who sets the entities of a pipeline without scores, for a message: "the pipeline's ner (transition)"."""
    names = []
    for name in nlp.pipe_names:
        meta = nlp.get_pipe_meta(name)
        if "doc.ents" in meta.assigns:
            kind = "transition" if meta.factory == "ner" else meta.factory
            if getattr(nlp.get_pipe(name), "spans_key", "") is None:
                kind += ", spans_key null"
            names.append(name if name == kind else f"{name} ({kind})")
    return f"the pipeline's {', '.join(names)}" if names else "the pipeline (no entity recognizer)"


def scores_by_span(doc: Doc, spans_key: Optional[str]) -> Dict[Tuple[int, int, str], float]:
    """{(token start, token end, label): calibrated probability} from doc.spans[spans_key]; {} when absent."""
    if not spans_key or spans_key not in doc.spans:
        return {}
    group = doc.spans[spans_key]
    scores = group.attrs.get("scores")
    if scores is None or len(scores) != len(group):
        return {}
    return {(span.start, span.end, span.label_): float(score) for span, score in zip(group, scores)}


def switched_off_scorer(nlp: Language) -> Optional[str]:
    """The name of a component that would score its entities but has its spans_key set to null (None: none)."""
    for name, pipe in nlp.pipeline:
        if hasattr(pipe, "spans_key") and not pipe.spans_key and "doc.ents" in nlp.get_pipe_meta(name).assigns:
            return name
    return None
