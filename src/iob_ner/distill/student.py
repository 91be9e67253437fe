"""Training the student: a CNN token_ner pipeline (configs/student.cfg) on gold documents and teacher labels.

spaCy 3 has no `spacy distill`: the student trains on the teacher's loop (`iob_ner.training.loop.Run`, so it
keeps checkpoints and resumes exactly after kill -9 as `train` does), with a step of its own (`StudentRun`).
The optimizer, batcher, dropout, steps and evaluation frequency come from the student config's [training]
block through spaCy's registry. Each step takes one batch of gold examples (loss against their gold tags)
and one batch of teacher-labelled documents (loss against the teacher's distributions, or its Viterbi tags
as hard silver labels), in one forward and backward pass (`distill_update`). Every `eval_frequency` steps
the student is scored on dev with spaCy's scorer; the best is kept, as `spacy train` keeps model-best.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config, registry
from thinc.api import Optimizer, set_dropout_rate

from ..evaluation.trained_on import META_KEY
from ..training import loop
from ..training.config_file import parse_error_line
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
    (`read_gold(nlp)`: read with the student's vocab), with the teacher's labels in the teacher's order. The
    same labels in the same order give the same tag_names: the teacher's distributions then line up, column for column, with the student's outputs."""
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


def gold_batches(examples: List[Example], batcher, seed: int) -> Iterator[Tuple[int, List[Example]]]:
    """(epoch, batch) of the gold examples, forever, reshuffled each epoch (by a generator of their own: a
    resumed run draws the same batches again)."""
    rng = random.Random(seed)
    examples = list(examples)
    for epoch in itertools.count():
        rng.shuffle(examples)
        for batch in batcher(examples):
            yield epoch, batch


def one_hot(tags: numpy.ndarray, width: int) -> numpy.ndarray:
    """Hard silver targets: the teacher's Viterbi tags as distributions (a 1 per row)."""
    targets = numpy.zeros((len(tags), width), dtype="float32")
    targets[numpy.arange(len(tags)), tags.astype("int64")] = 1.0
    return targets


def max_steps_of(settings: StudentSettings, training: Dict[str, Any]) -> int:
    """The student's training steps: the settings', else the config's; one sentence for none."""
    max_steps = settings.max_steps if settings.max_steps is not None else training["max_steps"]
    if max_steps <= 0:  # spaCy's "no limit": the loop would train no step (or forever)
        raise SetupError(
            f"the student config's [training] max_steps must be a positive number of training steps, not "
            f"{max_steps} (--vars.distill_max_steps 600, say)"
        )
    return max_steps


class StudentRun(loop.Run):
    """The student's training on the teacher's loop (`iob_ner.training.loop.Run`: checkpoints, exact resume
    after kill -9, model-best and model-last replaced whole, log.jsonl), with a step of its own: one batch
    of gold examples and one of teacher-labelled documents, in one forward and backward pass
    (`distill_update`).

    Steps count from 1, and the student is scored on dev (its own gold tokens, spaCy's scorer) every
    `eval_frequency` steps and after the last; model-best is the first of the best scores; the config's
    patience is not applied (the steps are the settings').
    """

    first_step = 1  # no evaluation of the untrained student

    def __init__(
        self,
        nlp: Language,
        head: Any,
        training: Dict[str, Any],
        folder: Path,
        dev: List[Example],
        gold: List[Example],
        labels: Optional[Labels],
        settings: StudentSettings,
        *,
        fingerprints: Dict[str, str],
        checkpoint_every: int = 0,
        checkpoints_kept: int = 1,
        on_evaluation: Optional[Callable[[int, float, Dict[str, float]], None]] = None,
        trained_on: Optional[Dict[str, Any]] = None,
    ):
        super().__init__(nlp, folder, training, fingerprints, checkpoint_every, checkpoints_kept)
        self.head, self.dev, self.gold, self.labels, self.settings = head, dev, gold, labels, settings
        self.max_steps = max_steps_of(settings, training)
        self.eval_frequency = min(settings.eval_frequency or training["eval_frequency"], self.max_steps)
        self.patience = 0
        self.width = len(head.tag_names)
        self.temperature = settings.temperature if settings.mode == "soft" else 1.0
        self.on_evaluation = on_evaluation  # (step, dev F, losses since the last evaluation)
        self.trained_on = trained_on  # meta.json's record of the gold corpora (iob_ner.evaluation.trained_on)

    def summary(self) -> Dict[str, Any]:
        """The steps, seconds, best dev F and its step of the run (after `run`)."""
        best = self.state.best
        return {
            "steps": self.max_steps,
            "seconds": round(self.state.seconds, 1),
            "best_dev_f": None if best is None else best[0],
            "best_step": 0 if best is None else best[1],
        }

    def batches(self, replay: Optional[List[Any]]) -> Iterator[Tuple[int, Any]]:
        """(gold epoch, (gold batch, silver batch)) for each step; the silver batch is empty without labels."""
        golds = gold_batches(self.gold, self.T["batcher"], self.settings.seed)
        silvers = self._silver_batches()
        while True:
            silver: List[SilverDoc] = next(silvers) if silvers is not None else []
            epoch, gold = next(golds)
            yield epoch, (gold, silver)

    def _silver_batches(self) -> Optional[Iterator[List[SilverDoc]]]:
        """Batches of teacher-labelled docs (the config's batcher), streamed from the shards; None without any."""
        labels, settings = self.labels, self.settings
        if labels is None or not settings.use_silver:
            return None
        tag_names = self.head.tag_names
        if labels.tag_names != tag_names:
            raise SetupError(
                f"the teacher's labels in {labels.folder} are over tags {labels.tag_names}, the student's over "
                f"{tag_names}: delete {labels.folder} to relabel"
            )
        limit = None
        if settings.max_unlabelled is not None:  # the training texts come first, then the unlabelled texts
            limit = labels.manifest["sources"][0]["docs"] + settings.max_unlabelled
        stream = stream_silver(labels, self.nlp.vocab, limit=limit, seed=settings.seed)
        return iter(self.T["batcher"](stream))

    def train_step(self, batch: Any, dropout: float, losses: Dict[str, float]) -> None:
        gold, silver = batch
        soft = self.settings.mode == "soft"
        targets = [item.probs if soft else one_hot(item.tags, self.width) for item in silver]
        distill_update(
            self.head,
            gold,
            [item.doc for item in silver],
            targets,
            temperature=self.temperature,
            drop=dropout,
            sgd=self.optimizer,
            losses=losses,
        )

    def words(self, batch: Any) -> int:
        gold, silver = batch
        return sum(len(eg) for eg in gold) + sum(len(item) for item in silver)

    def evaluates(self, step: int) -> bool:
        return not (step % self.eval_frequency) or step == self.max_steps

    def evaluate(self) -> Tuple[float, Dict[str, Any]]:
        scores = self.nlp.evaluate(self.dev)
        return float(scores.get("ents_f") or 0.0), scores

    def is_best(self, results: List[Tuple[float, int]]) -> bool:
        """The first of the best scores."""
        return all(results[-1][0] > score for score, _ in results[:-1])

    def log_record(self, info: dict) -> dict:
        scores, f = info["other_scores"], info["score"]
        record = {
            "step": info["step"],
            "losses": {name: float(value) for name, value in info["losses"].items()},
            "scores": {"ents_f": f * 100, "ents_p": float(scores.get("ents_p") or 0.0) * 100},
            "score": f,
        }
        if self.on_evaluation is not None:
            self.on_evaluation(info["step"], f, info["losses"])
        return record

    def save(self, is_best: bool, info: dict) -> None:
        """model-best when the evaluation is the best so far, with the optimizer's averaged weights (model-last
        is saved at the end)."""
        if not is_best:
            return
        scores = info["other_scores"]
        self.nlp.meta["performance"] = {key: value for key, value in scores.items() if isinstance(value, float)}
        if self.trained_on is not None:
            self.nlp.meta[META_KEY] = self.trained_on
        with self.nlp.use_params(self.optimizer.averages or {}):
            self._save_pipeline(loop.MODEL_BEST)


def gold_examples(nlp: Language, docs: Sequence[Doc]) -> List[Example]:
    """Examples whose predicted side is a bare copy of the gold doc's tokens, as spaCy's Corpus makes them."""
    return [
        Example(Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]), doc)
        for doc in docs
    ]


def teacher_student_loss(
    head: Any, teacher_probs: Sequence[Any], student_scores: Sequence[Any], temperature: float = 1.0
) -> Tuple[float, List[Any]]:
    """Knowledge-distillation loss of a batch for the student `head` (a token_ner; the shape of spaCy v4's
    `TrainablePipe.get_teacher_student_loss`, kept here so that the component that every packaged pipeline
    ships stays an inference component).

    `teacher_probs[i]`: doc i's target distribution over `tag_names` per token (tokens x tags), a teacher's
    softmax(z_t / T), or one-hot rows for hard silver tags. `student_scores[i]`: the head's output on doc
    i in training mode, which is softmax(z_s) (thinc's Softmax normalises while training even with
    normalize = false). The loss is T² · Σ_tokens KL(p_t ‖ softmax(z_s / T)), summed like `get_loss`: the
    cross-entropy less the teacher's own entropy, so that 0 means the student matches the teacher (the
    cross-entropy of soft targets never gets near 0). The gradient with respect to the student's logits
    z_s (what the Softmax layer's backprop takes) is the same for both: T · (softmax(z_s / T) − p_t). T²
    keeps the gradient's size independent of T (Hinton et al., 2015).
    """
    if not numpy.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{head.name}: the distillation temperature must be positive, not {temperature!r}")
    ops = head.model.ops
    loss, d_scores = 0.0, []
    for probs, scores in zip(teacher_probs, student_scores):
        target = ops.asarray(probs, dtype="float32")
        # log softmax(z_s) differs from z_s by a constant per token: softmax(log p_s / T) = softmax(z_s / T).
        # The floor keeps an underflown probability finite (its softmax term is ~0 at any T >= 1 anyway).
        scaled = ops.xp.log(ops.xp.maximum(scores, 1e-37)) / temperature
        log_q = scaled - ops.xp.max(scaled, axis=1, keepdims=True)
        log_q = log_q - ops.xp.log(ops.xp.exp(log_q).sum(axis=1, keepdims=True))
        # p log p with 0 log 0 = 0 (one-hot rows, float16 underflow)
        entropy_term = ops.xp.where(target > 0, target * ops.xp.log(ops.xp.maximum(target, 1e-37)), 0.0)
        loss += float((temperature**2) * (entropy_term - target * log_q).sum())
        d_scores.append((temperature * (ops.xp.exp(log_q) - target)).astype("float32"))
    if numpy.isnan(loss):
        raise ValueError(f"{head.name}: the distillation loss is NaN")
    return loss, d_scores


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
    `get_loss`) and silver docs (loss against a teacher's distributions, `teacher_student_loss`), in
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
    silver_loss, d_silver = teacher_student_loss(head, teacher_probs, scores[len(gold) :], temperature)
    losses[f"{head.name}_distill"] += silver_loss
    backprop(list(d_gold) + d_silver)
    if sgd not in (None, False):
        head.finish_update(sgd)
    return losses
