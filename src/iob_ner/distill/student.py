"""Training the student: a CNN token_ner pipeline (configs/student.cfg) on gold documents and teacher labels.

A small loop of its own over spaCy's objects (spaCy 3 has no `spacy distill`): the optimizer, batcher,
dropout, steps and evaluation frequency come from the student config's [training] block through spaCy's
registry. Each step takes one batch of gold examples (loss against their gold tags) and one batch of
teacher-labelled documents (loss against the teacher's distributions, or its Viterbi tags as hard silver
labels), in one forward and backward pass (`distill_update`). Every `eval_frequency` steps the
student is scored on dev with spaCy's scorer; the best is kept, as `spacy train` keeps model-best.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Optimizer, set_dropout_rate

from ..evaluation.trained_on import META_KEY
from ..util.errors import SetupError
from .labels import Labels, SilverDoc, stream_silver

MODES = ("soft", "hard", "gold")  # gold: no teacher labels at all (the baseline of an ablation)
HEAD_FACTORY = "token_ner"


@dataclass(frozen=True)
class StudentSettings:
    """How the student learns from the teacher."""

    temperature: float = 2.0  # of the soft targets (the teacher's softmax(z / T))
    mode: str = "soft"  # "soft": the teacher's distributions; "hard": its Viterbi tags (silver labels); "gold"
    max_steps: Optional[int] = None  # None: the config's [training] max_steps
    eval_frequency: Optional[int] = None  # None: the config's
    max_unlabelled: Optional[int] = None  # distillation texts beyond the training texts (None: all; 0: none)
    seed: int = 0

    @property
    def use_silver(self) -> bool:
        return self.mode != "gold"

    def check(self) -> None:
        if self.mode not in MODES:
            raise SetupError(f"distill_mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not numpy.isfinite(self.temperature) or self.temperature <= 0:
            raise SetupError(f"distill_temperature must be a positive number, not {self.temperature}")
        # as train's check_steps: 0 is no "use the default" here, and never "no limit"
        if self.max_steps is not None and self.max_steps <= 0:
            raise SetupError(
                f"distill_max_steps must be a positive number of training steps, not {self.max_steps} "
                f"(--vars.distill_max_steps 600, say)"
            )
        if self.eval_frequency is not None and self.eval_frequency <= 0:
            raise SetupError(
                f"distill_eval_frequency must be a positive number of steps, not {self.eval_frequency} "
                f"(--vars.distill_eval_frequency 100, say)"
            )
        if self.max_unlabelled is not None and self.max_unlabelled < 0:
            raise SetupError(f"the number of unlabelled texts must be 0 or more, not {self.max_unlabelled}")


def student_head(nlp: Language, config: Path) -> Any:
    """The student's token_ner component, or one sentence naming the config."""
    names = [name for name in nlp.pipe_names if nlp.get_pipe_meta(name).factory == HEAD_FACTORY]
    if len(names) != 1:
        raise SetupError(
            f"{config} must have exactly one token_ner component (it has {len(names)}): the student learns the "
            f"teacher's per-token BILUO distributions through that head"
        )
    return nlp.get_pipe(names[0])


def build_student(config: Path, overrides: Dict[str, Any], labels: Sequence[str], read_gold):
    """The initialized student pipeline, its head, its resolved [training] block and its gold examples
    (`read_gold(nlp)`: read with the student's vocab), with the teacher's labels in the teacher's order. The same labels in the same order give the same tag_names: the teacher's
    distributions then line up, column for column, with the student's outputs."""
    from spacy.schemas import ConfigSchemaTraining
    from spacy.util import fix_random_seed, load_config, load_model_from_config, registry

    from ..training.config_file import parse_error_line

    try:
        nlp = load_model_from_config(load_config(config, overrides=overrides, interpolate=False), auto_fill=True)
        training = registry.resolve(nlp.config.interpolate()["training"], schema=ConfigSchemaTraining)
    except Exception as err:  # an unknown architecture, a bad value: spaCy's own first line, naming the file
        raise SetupError(f"spaCy cannot build the student of {config}: {parse_error_line(err)}") from None
    fix_random_seed(training["seed"])
    head = student_head(nlp, config)
    for label in labels:
        head.add_label(label)
    gold = read_gold(nlp)
    nlp.initialize(lambda: gold)
    return nlp, head, training, gold


def gold_batches(examples: List[Example], batcher, seed: int) -> Iterator[List[Example]]:
    """The gold examples in batches, forever, reshuffled each epoch."""
    rng = random.Random(seed)
    examples = list(examples)
    while True:
        rng.shuffle(examples)
        yield from batcher(examples)


def one_hot(tags: numpy.ndarray, width: int) -> numpy.ndarray:
    """Hard silver targets: the teacher's Viterbi tags as distributions (a 1 per row)."""
    targets = numpy.zeros((len(tags), width), dtype="float32")
    targets[numpy.arange(len(tags)), tags.astype("int64")] = 1.0
    return targets


@dataclass
class StudentRun:
    """What the loop needs, and what it keeps."""

    nlp: Language
    head: Any
    training: Dict[str, Any]
    folder: Path  # model-best, model-last and log.jsonl are written here
    dev: List[Example]
    best: Optional[float] = None
    best_step: int = 0
    summary: Optional[Dict[str, Any]] = None  # what train_student returned
    on_evaluation: Optional[Callable[[int, float, Dict[str, float]], None]] = None  # (step, dev F, losses)
    trained_on: Optional[Dict[str, Any]] = (
        None  # meta.json's record of the gold corpora (iob_ner.evaluation.trained_on)
    )


def train_student(
    run: StudentRun, gold: List[Example], labels: Optional[Labels], settings: StudentSettings
) -> Dict[str, Any]:
    """Train `run.nlp` for the settings' steps; writes model-best (best dev F), model-last and log.jsonl in
    `run.folder`. Returns the steps, seconds, best dev F and its step."""
    training = run.training
    max_steps = settings.max_steps if settings.max_steps is not None else training["max_steps"]
    if max_steps <= 0:  # spaCy's "no limit": the loop would train no step (or forever)
        raise SetupError(
            f"the student config's [training] max_steps must be a positive number of training steps, not "
            f"{max_steps} (--vars.distill_max_steps 600, say)"
        )
    eval_frequency = min(settings.eval_frequency or training["eval_frequency"], max_steps)
    batcher, optimizer = training["batcher"], training["optimizer"]
    golds = gold_batches(gold, batcher, settings.seed)
    silvers = _silver_batches(run, labels, settings)
    width = len(run.head.tag_names)
    temperature = settings.temperature if settings.mode == "soft" else 1.0
    run.folder.mkdir(parents=True, exist_ok=True)
    (run.folder / "log.jsonl").write_text("", encoding="utf8")
    losses: Dict[str, float] = {}
    start = time.perf_counter()
    for step in range(1, max_steps + 1):
        silver: List[SilverDoc] = next(silvers) if silvers is not None else []
        targets = [item.probs if settings.mode == "soft" else one_hot(item.tags, width) for item in silver]
        distill_update(
            run.head,
            next(golds),
            [item.doc for item in silver],
            targets,
            temperature=temperature,
            drop=training["dropout"],
            sgd=optimizer,
            losses=losses,
        )
        optimizer.step_schedules()
        if step % eval_frequency == 0 or step == max_steps:
            _evaluate_and_keep(run, optimizer, step, losses)
            losses = {}
    _save(run.nlp, optimizer, run.folder / "model-last", None)
    return {
        "steps": max_steps,
        "seconds": round(time.perf_counter() - start, 1),
        "best_dev_f": run.best,
        "best_step": run.best_step,
    }


def _silver_batches(run: StudentRun, labels: Optional[Labels], settings: StudentSettings):
    """Batches of teacher-labelled docs (the config's batcher), streamed from the shards; None without any."""
    if labels is None or not settings.use_silver:
        return None
    tag_names = run.head.tag_names
    if labels.tag_names != tag_names:
        raise SetupError(
            f"the teacher's labels in {labels.folder} are over tags {labels.tag_names}, the student's over "
            f"{tag_names}: delete {labels.folder} to relabel"
        )
    limit = None
    if settings.max_unlabelled is not None:  # the training texts come first, then the unlabelled texts
        limit = labels.manifest["sources"][0]["docs"] + settings.max_unlabelled
    stream = stream_silver(labels, run.nlp.vocab, limit=limit, seed=settings.seed)
    return iter(run.training["batcher"](stream))


def _evaluate_and_keep(run: StudentRun, optimizer, step: int, losses: Dict[str, float]) -> None:
    """Score on dev (with the optimizer's averaged weights, as spaCy's loop does), log, keep the best."""
    averages = optimizer.averages if getattr(optimizer, "averages", None) else None
    with run.nlp.use_params(averages) if averages else nullcontext():
        scores = run.nlp.evaluate(run.dev)
    f = float(scores.get("ents_f") or 0.0)
    record = {
        "step": step,
        "losses": {name: float(value) for name, value in losses.items()},
        "scores": {"ents_f": f * 100, "ents_p": float(scores.get("ents_p") or 0.0) * 100},
        "score": f,
    }
    with (run.folder / "log.jsonl").open("a", encoding="utf8") as handle:
        handle.write(json.dumps(record) + "\n")
    if run.on_evaluation is not None:
        run.on_evaluation(step, f, losses)
    if run.best is None or f > run.best:
        run.best, run.best_step = f, step
        run.nlp.meta["performance"] = {key: value for key, value in scores.items() if isinstance(value, float)}
        if run.trained_on is not None:
            run.nlp.meta[META_KEY] = run.trained_on
        _save(run.nlp, optimizer, run.folder / "model-best", averages)


def _save(nlp: Language, optimizer, path: Path, averages) -> None:
    from ..util.outputs import atomic_output

    averages = averages if averages is not None else (getattr(optimizer, "averages", None) or None)
    with atomic_output(path) as tmp:
        with nlp.use_params(averages) if averages else nullcontext():
            nlp.to_disk(tmp)


def gold_examples(nlp: Language, docs: Sequence[Doc]) -> List[Example]:
    """Examples whose predicted side is a bare copy of the gold doc's tokens, as spaCy's Corpus makes them."""
    return [
        Example(Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]), doc)
        for doc in docs
    ]


def distill_update(
    head: Any,
    gold: Sequence[Example],
    silver: Sequence[Doc],
    teacher_probs: Sequence[Any],
    *,
    temperature: float = 1.0,
    drop: float = 0.0,
    sgd: Optional[Optimizer] = None,
    losses: Optional[Dict[str, float]] = None,
) -> Dict[str, float]:
    """One step of the student `head` (a token_ner) on gold examples (loss against their gold tags, its
    `get_loss`) and silver docs (loss against a teacher's distributions, its `get_teacher_student_loss`), in
    one forward and backward pass of its model.

    For a student whose tok2vec is part of the head's model (a CNN student): nothing upstream is updated.
    `losses` gets `{name}` (gold) and `{name}_distill` (silver) added.
    """
    losses = {} if losses is None else losses
    losses.setdefault(head.name, 0.0)
    losses.setdefault(f"{head.name}_distill", 0.0)
    docs = [eg.predicted for eg in gold] + list(silver)
    if not any(len(doc) for doc in docs):
        return losses
    set_dropout_rate(head.model, drop)
    scores, backprop = head.model.begin_update(docs)
    d_gold: List[Any] = []
    if gold:
        gold_loss, d_gold = head.get_loss(gold, scores[: len(gold)])
        losses[head.name] += gold_loss
    silver_loss, d_silver = head.get_teacher_student_loss(teacher_probs, scores[len(gold) :], temperature)
    losses[f"{head.name}_distill"] += silver_loss
    backprop(list(d_gold) + d_silver)
    if sgd not in (None, False):
        head.finish_update(sgd)
    return losses
