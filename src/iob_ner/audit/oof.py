"""Out-of-fold predictions: each document seen by the one fold model that never trained on it.

The fold models are crossval's (`experiments.crossval`, kept with `keep_models`). Each document goes
through its fold's pipeline as bare words (no annotation to leak), and the token_ner head gives every
token a calibrated distribution over BILUO tags (`TokenNER.tag_probabilities`), folded into IOB2 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import spacy
from spacy.tokens import Doc
from spacy.util import minibatch

from ..util.errors import SetupError
from .findings import OutOfFoldPrediction, biluo_to_iob2


def _probability_head(nlp, model: Path):
    """The component that sets doc.ents and gives tag probabilities (token_ner)."""
    for name, pipe in nlp.pipeline:
        if callable(getattr(pipe, "tag_probabilities", None)) and "doc.ents" in nlp.get_pipe_meta(name).assigns:
            return pipe
    raise SetupError(
        f"{model} has no NER that gives token probabilities: audit needs the token_ner head "
        f"(create the config with --vars.ner_head token, the default)"
    )


def out_of_fold(
    models: Sequence[Path],
    docs: Sequence[Doc],
    assigned: Sequence[int],
    classes: Sequence[str],
    *,
    batch_size: int = 64,
) -> List[OutOfFoldPrediction]:
    """The prediction of each document of `docs` by models[its fold], in the order of `docs`, on the device
    selected before (runtime.select_device)."""
    found: List[Optional[OutOfFoldPrediction]] = [None] * len(docs)
    for fold, model in enumerate(models):
        nlp = spacy.load(model)
        head = _probability_head(nlp, model)
        to_iob2 = biluo_to_iob2(head.tag_names, classes)
        held = [i for i, f in enumerate(assigned) if f == fold]
        for batch in minibatch(held, size=batch_size):
            bare = [Doc(nlp.vocab, words=[t.text for t in docs[i]]) for i in batch]
            processed = list(nlp.pipe(bare, batch_size=batch_size))
            for i, doc, probabilities in zip(batch, processed, head.tag_probabilities(processed)):
                entities = [(e.start, e.end, e.label_) for e in doc.ents]
                found[i] = OutOfFoldPrediction(probabilities @ to_iob2, entities)
    missing = [i for i, p in enumerate(found) if p is None]
    if missing:  # a bug: every document has a fold
        raise ValueError(f"no fold model predicted document {missing[0]}")
    return found  # type: ignore[return-value]
