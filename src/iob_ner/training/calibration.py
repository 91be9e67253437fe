"""Calibrating token_ner's entity scores after training: the temperature (and, optionally, the dropout samples)
that make its probabilities honest on dev, written into the component's cfg and saved with the pipeline.

spaCy's pattern for a fitted setting (`spacy/cli/find_threshold.py` beside `spancat.py`): the fitting lives
with training, the component only reads its cfg. `calibrate` is what `train` runs on model-best.
"""

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch
from wasabi import msg

from ..corpus.convert import read_docs
from ..pipeline.scoring import scoring_ner
from ..pipeline.token_ner import Entity, TokenNER, _BiluoDecoder, _length_chunks, _stack

# Temperatures `fit_temperature` tries: log-spaced 0.25 .. 32 (and 1.0, so that fitting never does worse than T = 1).
# Up to 8 was too few: NCBI-disease trained 3,000 steps on the CPU wanted T = 8 or more (at the grid's edge).
TEMPERATURE_GRID = numpy.union1d(2.0 ** numpy.linspace(-2.0, 5.0, 71), [1.0])


def calibrate(model_dir: Path, dev: Path, record: Path, samples: int = 0) -> dict:
    """Fit the entity-score temperature of model_dir's token_ner on the dev documents; save it in the pipeline.

    The head's probabilities come out of training over- or under-confident; one temperature, chosen on dev
    (never test) to minimise the cross-entropy of "this predicted entity is right", makes them honest.
    `samples` > 0: the scores become means over that many dropout passes, with a temperature of their own.
    """
    nlp = spacy.load(model_dir)
    scoring = scoring_ner(nlp)
    if scoring is None or not isinstance(scoring.pipe, TokenNER):
        result = {"temperature": None, "note": "the ner head gives no entity scores (spaCy's transition ner)"}
        msg.info(f"No entity scores to calibrate: {result['note']}")
    else:
        name, pipe = scoring.name, scoring.pipe
        gold = list(read_docs(dev, nlp.vocab))
        try:
            result = {"component": name, **fit_temperature(pipe, nlp, gold, samples=samples)}
        except ValueError as err:  # no transformer to sample: keep the trained model, score in one pass
            msg.warn(f"{err}: the scores stay one-pass")
            result = {"component": name, **fit_temperature(pipe, nlp, gold, samples=0)}
        nlp.to_disk(model_dir)
        prefix = "samples_" if result.get("samples") else ""
        if not result["entities"]:
            msg.warn(
                f"Entity scores not calibrated: the model predicts no entity on {dev} (dev F 0: train longer, "
                f"or check the corpus); they keep temperature {result['temperature']:g}"
            )
            record.write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
            return result
        what = f"means over {result['samples']} dropout passes, " if prefix else ""
        msg.good(
            f"Entity scores ({what}calibrated on {dev}): temperature {result[prefix + 'temperature']:.3g}, "
            f"cross-entropy {result[prefix + 'bce_before']:.3f} -> {result[prefix + 'bce_after']:.3f} over "
            f"{result['entities']} predicted entities"
        )
    record.write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


def fit_temperature(
    pipe: TokenNER,
    nlp: Language,
    gold: Iterable[Union[Doc, Example]],
    *,
    grid: Optional[Sequence[float]] = None,
    apply: bool = True,
    batch_size: int = 64,
    samples: Optional[int] = None,
) -> Dict[str, Any]:
    """Choose the temperature that makes `pipe`'s predicted entities' probabilities honest on `gold`.

    `gold`: annotated Docs (their words are re-read, their ents are the truth) or Examples. Runs the
    pipes before `pipe` and `pipe` once, then scores every temperature of `grid` (default
    TEMPERATURE_GRID, always with 1.0) on the same logits: Viterbi does not depend on T, so the predicted
    entities are fixed and only their marginals move. The loss is the binary cross-entropy between each
    predicted entity's probability and whether it is exactly (span and label) a gold entity.
    `samples` (None: the component's setting): also fit the temperature of scores averaged over that
    many dropout passes (`samples_*` in the result), which then become the scores. With `apply`, the
    temperatures and `samples` are stored (cfg: saved with the pipeline). An empty prediction changes nothing.
    """
    samples = pipe.samples if samples is None else int(samples)
    if samples:
        pipe.sampling_transformer()  # why first: say it before the long pass, not after
    examples = [_fresh_example(nlp, item) for item in gold]
    truth = [{(s.start, s.end, s.label_) for s in eg.get_aligned_spans_y2x(eg.reference.ents)} for eg in examples]
    docs = _run_upstream(pipe, nlp, [eg.predicted for eg in examples], batch_size)
    logits, entities = _logits_and_entities(pipe, docs, batch_size)
    correct = [[ent in gold_ents for ent in ents] for ents, gold_ents in zip(entities, truth)]
    temperatures = numpy.union1d(TEMPERATURE_GRID if grid is None else numpy.asarray(grid, dtype="float64"), [1.0])
    n_entities, n_correct = sum(map(len, correct)), sum(map(sum, correct))
    if not n_entities:
        return {
            "temperature": pipe.temperature,
            "bce_before": None,  # why not NaN: json.dumps writes NaN, which is not JSON
            "bce_after": None,
            "entities": 0,
            "correct": 0,
            "at_grid_edge": False,
            "samples": pipe.samples,
        }
    found = {"": _best_temperature(pipe.decoder, logits, entities, correct, temperatures)}
    if samples:
        busy = [i for i, ents in enumerate(entities) if ents]
        for i, stack in zip(busy, pipe.sampled_logits([docs[i] for i in busy], samples)):
            logits[i] = stack
        found["samples_"] = _best_temperature(pipe.decoder, logits, entities, correct, temperatures)
    if apply:
        pipe.temperature = found[""]["temperature"]
        pipe.samples = samples
        if samples:
            pipe.cfg["samples_temperature"] = found["samples_"]["temperature"]
    result = {f"{prefix}{key}": value for prefix, fit in found.items() for key, value in fit.items()}
    return {**result, "entities": n_entities, "correct": int(n_correct), "samples": samples}


def _logits_and_entities(
    pipe: TokenNER, docs: List[Doc], batch_size: int
) -> Tuple[List[numpy.ndarray], List[List[Entity]]]:
    """`pipe`'s logits and Viterbi entities for docs the upstream pipes have run on."""
    logits: List[numpy.ndarray] = []
    entities: List[List[Entity]] = []
    for batch in minibatch(docs, size=batch_size):
        lengths = [len(doc) for doc in batch]
        if not any(lengths):
            logits += [numpy.zeros((0, len(pipe.tag_names)))] * len(batch)
            entities += [[] for _ in batch]
            continue
        flat, probabilities = pipe.model_scores(batch), pipe.outputs_probabilities()
        entities += [pipe.decoder.entities(p) for p in pipe.decoder.decode(flat, lengths, probabilities)]
        logits += pipe.decoder.log_potentials(flat, lengths, probabilities)
    return logits, entities


def _run_upstream(pipe: TokenNER, nlp: Language, docs: List[Doc], batch_size: int) -> List[Doc]:
    """`docs` through the pipes before this one (a transformer, a tok2vec), in place, as nlp.pipe would."""
    names = [name for name, p in nlp.pipeline if p is pipe]
    if not names:
        raise ValueError(f"{pipe.name}: fit_temperature needs the nlp that holds the component")
    upstream = nlp.pipe_names[: nlp.pipe_names.index(names[0])]
    with nlp.select_pipes(enable=upstream):
        return list(nlp.pipe(docs, batch_size=batch_size))


def _fresh_example(nlp: Language, item: Union[Doc, Example]) -> Example:
    """An Example whose predicted side is a bare copy of the tokens (no annotation to leak), gold as given."""
    reference = item.reference if isinstance(item, Example) else item
    source = item.predicted if isinstance(item, Example) else item
    words = [token.text for token in source]
    spaces = [bool(token.whitespace_) for token in source]
    return Example(Doc(nlp.vocab, words=words, spaces=spaces), reference)


def _best_temperature(
    decoder: _BiluoDecoder,
    logits: Sequence[Any],
    entities: Sequence[List[Entity]],
    correct: Sequence[Sequence[bool]],
    temperatures: numpy.ndarray,
) -> Dict[str, Any]:
    """The temperature of `temperatures` with the lowest `temperature_bce`, that loss at T = 1 and at it."""
    bce = temperature_bce(decoder, logits, entities, correct, temperatures)
    best = float(temperatures[int(numpy.argmin(bce))])
    # at_grid_edge: the best T may lie beyond the grid (widen it); typical of tiny or toy dev sets.
    return {
        "temperature": best,
        "bce_before": float(bce[temperatures == 1.0][0]),
        "bce_after": float(bce.min()),
        "at_grid_edge": best in (float(temperatures[0]), float(temperatures[-1])),
    }


def temperature_bce(
    decoder: _BiluoDecoder,
    logits: Sequence[Any],
    entities: Sequence[List[Entity]],
    correct: Sequence[Sequence[bool]],
    temperatures: Sequence[float],
    max_cells: int = 8_000_000,
) -> numpy.ndarray:
    """The binary cross-entropy of the entities' marginals against `correct`, at each temperature.

    `logits[i]`: doc i's logit matrix, or a list of them (dropout samples: the marginals are averaged).

    All temperatures go through one batched forward-backward pass (a doc at T is the doc's logits / T), so
    the per-time-step cost of Python is paid once per chunk of docs, not once per T. NaN for every T when
    there is no entity.
    """
    temperatures = numpy.asarray(temperatures, dtype="float64")
    truth = numpy.array([flag for flags in correct for flag in flags], dtype="float64")
    if not truth.size:
        return numpy.full(len(temperatures), numpy.nan)
    offsets = numpy.cumsum([0] + [len(ents) for ents in entities])
    probs = numpy.empty((len(temperatures), truth.size))
    busy = [i for i, ents in enumerate(entities) if ents]
    stacks = [_stack(x) for x in logits]
    width = len(decoder.names) * len(temperatures) * max((len(stacks[i]) for i in busy), default=1)
    for positions in _length_chunks([len(stacks[i][0]) for i in busy], width, max_cells):
        chunk = [busy[j] for j in positions]
        scaled = [[x / t for x in stacks[i]] for t in temperatures for i in chunk]
        found = decoder.mean_entity_probabilities(scaled, [entities[i] for _ in temperatures for i in chunk])
        for k in range(len(temperatures)):
            for j, i in enumerate(chunk):
                probs[k, offsets[i] : offsets[i + 1]] = found[k * len(chunk) + j]
    probs = numpy.clip(probs, 1e-12, 1 - 1e-12)  # why: one certain mistake must not make the loss infinite
    return -(truth * numpy.log(probs) + (1 - truth) * numpy.log1p(-probs)).mean(axis=1)
