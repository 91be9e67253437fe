"""spaCy's training loop (`spacy train`), resumable: the same steps, plus checkpoints and resume.

`spacy.training.loop.train` and `train_while_improving`, step for step (the same batches, updates,
evaluations, model-best rule, patience, logger and saved pipelines), with these changes:

- every `checkpoint_every` steps (0: at each evaluation) a resumable checkpoint is written
  (`checkpoints.write_checkpoint`), and model-best / model-last are replaced whole, never half written;
- a run started from a checkpoint replays the seeded batch generator and the optimizer's schedules to the
  checkpoint's step without computing anything, loads the weights, moments and random states, and goes on
  from the next step: the losses and scores that follow are those of the run that was never interrupted;
- the JSONL log (`log.jsonl` in the output folder) is written here, one flushed line per evaluation, so a
  resumed run's log holds every evaluation once.
- `update` is `nlp.update` without its copy of the batch (unless a component annotates);
- the logger is given no saved pipeline to upload (`trackers.without_pipeline`), and a resumed run's
  tracker run (MLflow, W&B) goes on (`trackers.same_runs`).

`Run` is the loop's skeleton; what a step is and how it is judged are its methods: `SpacyRun` makes them
spaCy's (the `train` command), distill's student (`iob_ner.distill.student.StudentRun`) its own, and both
get the checkpoints and the exact resume.

The other speed-ups (wordpieces tokenized once, pooling per batch, fused Adam, bf16) come with the config's
architectures and its `[initialize] after_init` callback (`layers`), in `spacy train` as here. The config
is not touched: `spacy train` with the same config still trains the same pipeline.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from timeit import default_timer as timer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from spacy import util
from spacy.cli._util import setup_gpu, show_validation_error
from spacy.errors import Errors
from spacy.schemas import ConfigSchemaTraining
from spacy.training import validate_examples
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    create_before_to_disk_callback,
    create_evaluation_callback,
    subdivide_batch,
    update_meta,
)
from spacy.util import registry, resolve_dot_names
from thinc.api import constant, fix_random_seed, set_gpu_allocator
from wasabi import msg

from ..evaluation.trained_on import META_KEY, trained_on_record
from ..pipeline.layers.speedups import release
from ..pipeline.layers.transformer import padding_share
from ..util.outputs import aside_name, remove, replace, temporary_name
from . import checkpoints, trackers
from .checkpoints import TrainingState

MODEL_BEST, MODEL_LAST, LOG = "model-best", "model-last", "log.jsonl"


def train(
    config_path: Path,
    output_path: Path,
    *,
    use_gpu: int,
    overrides: Dict[str, Any],
    fingerprints: Dict[str, str],
    resume_from: Optional[Path] = None,
    checkpoint_every: int = 0,
    checkpoints_kept: int = 1,
) -> None:
    """`spacy train config_path --output output_path`, resumable (see the module's docstring)."""
    output_path.mkdir(parents=True, exist_ok=True)
    setup_gpu(use_gpu)
    with show_validation_error(config_path):
        config = util.load_config(config_path, overrides=overrides, interpolate=False)
    msg.divider("Initializing pipeline")
    with show_validation_error(config_path, hint_fill=False):
        nlp = init_nlp(config, use_gpu=use_gpu)
    msg.good("Initialized pipeline")
    msg.divider("Training pipeline")
    SpacyRun(nlp, output_path, use_gpu, fingerprints, checkpoint_every, checkpoints_kept).run(resume_from)


class Run:
    """One resumable training run of an initialized pipeline into `output`: the skeleton of
    spacy.training.loop.train (steps, evaluations, model-best and model-last, the log), with checkpoints and
    exact resume.

    What a step is and how it is judged are the methods below the skeleton: `SpacyRun` makes them spaCy's
    (the `train` command), and distill's student (`iob_ner.distill.student.StudentRun`) makes them its own (a
    batch of gold examples and one of teacher-labelled documents per step), so both resume the same way.
    `T` is the resolved [training] block: its optimizer, dropout, before_update, before_to_disk, frozen and
    annotating components, max_steps, eval_frequency and patience (which a subclass may set otherwise).
    """

    first_step = 0  # spaCy counts steps from 0 and evaluates the untrained pipeline at step 0

    def __init__(self, nlp, output: Path, T: Dict[str, Any], fingerprints: Dict[str, str], every: int, kept: int):
        self.nlp, self.output, self.T, self.fingerprints = nlp, output, T, fingerprints
        self.optimizer = T["optimizer"]
        self.before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
        self.frozen, self.annotating = T["frozen_components"], T["annotating_components"]
        self.max_steps, self.eval_frequency, self.patience = T["max_steps"], T["eval_frequency"], T["patience"]
        self.checkpoint_every, self.kept = every, kept
        self.log_path = output / LOG
        self.shuffles: List[Any] = []  # Python's random state before each epoch's shuffle, for a replay
        self.state: Optional[TrainingState] = None  # where the run stands, after `run`

    @property
    def every(self) -> int:
        """Steps between checkpoints: `checkpoint_every`, or each evaluation's."""
        return self.checkpoint_every or self.eval_frequency

    def run(self, resume_from: Optional[Path]) -> TrainingState:
        """Train from the start, or from the checkpoint `resume_from`; returns the last step's state."""
        try:
            self._run(resume_from)
        finally:
            release(self.nlp)  # the training documents' wordpieces
        return self.state

    def _run(self, resume_from: Optional[Path]) -> None:
        nlp = self.nlp
        replay = checkpoints.read_random_states(resume_from)["shuffles"] if resume_from else None
        batches = self.batches(replay)
        dropouts = _schedule(self.T["dropout"])
        self.state = state = TrainingState(0, 0, [], 0, 0.0, {}, [], dict(self.fingerprints))
        first_step = self.first_step
        if resume_from is not None:
            self.state = state = self._resume(resume_from, batches, dropouts)
            first_step = state.step + 1
            if self._stops(state):  # interrupted after its last step (while saving or calibrating)
                batches = iter(())
        else:
            for name in (MODEL_BEST, MODEL_LAST, LOG):
                remove(self.output / name)
        self._write_log(state.log)
        self.say_start()
        log_step, finalize_logger = self.logger(resumed=resume_from is not None)
        try:
            for info, evaluated, is_best in self._steps(batches, dropouts, state, first_step):
                if evaluated:
                    self._record(state, info)
                    self.save(is_best, info)
                if not (info["step"] % self.every):
                    self._checkpoint(state)
                log_step(info if evaluated else None)
        finally:
            finalize_logger()
        with nlp.use_params(self.optimizer.averages or {}):
            self._save_pipeline(MODEL_LAST)
        say_padding(nlp)

    def _steps(self, batches, dropouts, state: TrainingState, first_step: int) -> Iterator[Tuple[dict, bool, bool]]:
        """spacy.training.loop.train_while_improving from `first_step` on: yields (info, evaluated,
        is_best) after each step, with `state` brought up to date."""
        T, nlp, optimizer = self.T, self.nlp, self.optimizer
        start_time = timer() - state.seconds
        for step, (epoch, batch) in enumerate(batches, first_step):
            if T["before_update"]:
                T["before_update"](nlp, {"step": step, "epoch": epoch})
            self.train_step(batch, next(dropouts), state.losses)
            optimizer.step_schedules()
            evaluated = self.evaluates(step)
            score, other_scores, is_best = None, None, False
            if evaluated:
                with nlp.use_params(optimizer.averages or {}):
                    score, other_scores = self.evaluate()
                state.results.append((score, step))
                is_best = self.is_best(state.results)
            state.step, state.epoch = step, epoch
            losses = state.losses
            if evaluated:  # the next step's losses start afresh (the state a checkpoint of this step holds)
                state.losses = {}
            state.words += self.words(batch)
            state.seconds = timer() - start_time
            info = {
                "epoch": epoch,
                "step": step,
                "score": score,
                "other_scores": other_scores,
                "losses": losses,
                "checkpoints": state.results,
                "seconds": int(state.seconds),
                "words": state.words,
            }
            yield info, evaluated, is_best
            if self._stops(state):
                break

    def _stops(self, state: TrainingState) -> bool:
        """spaCy's two stops after a step: no better evaluation in `patience` steps, or `max_steps` done."""
        best = state.best
        if self.patience and best is not None and (state.step - best[1]) >= self.patience:
            return True
        return bool(self.max_steps and state.step >= self.max_steps)

    def _resume(self, checkpoint: Path, batches: Iterator, dropouts: Iterator) -> TrainingState:
        """Load `checkpoint` and replay the batches and schedules to its step, computing nothing."""
        state = checkpoints.load_checkpoint(checkpoint, self.nlp, self.optimizer)
        for _ in range(self.first_step, state.step + 1):  # the batches of the steps done, as the run drew them
            next(batches)
            next(dropouts)
            self.optimizer.step_schedules()
        checkpoints.set_random_states(checkpoints.read_random_states(checkpoint))
        for name in (MODEL_BEST, MODEL_LAST):
            _recover(self.output / name)
        return state

    def _record(self, state: TrainingState, info: dict) -> None:
        """The evaluation's JSONL log record, kept in the state and appended to the log at once."""
        record = self.log_record(info)
        state.log.append(record)
        with self.log_path.open("a", encoding="utf8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _write_log(self, records: List[dict]) -> None:
        self.log_path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf8")

    def _save_pipeline(self, name: str) -> None:
        """The pipeline (as the caller's parameters stand) saved as `name`, replacing the old one whole."""
        tmp = temporary_name(self.output / name)
        remove(tmp)
        self.before_to_disk(self.nlp).to_disk(tmp)
        replace(tmp, self.output / name)

    def _checkpoint(self, state: TrainingState) -> None:
        checkpoints.write_checkpoint(self.output, self.nlp, self.optimizer, state, self.kept, self.shuffles)

    # -- what a step is and how it is judged: spaCy's here (SpacyRun), the student's in distill ----------------

    def batches(self, replay: Optional[List[Any]]) -> Iterator[Tuple[int, Any]]:
        """(epoch, batch) for each step, forever or to the last; `replay`: the random states a resumed run's
        batches are drawn with again (`shuffles` of its checkpoint), None for a new run."""
        raise NotImplementedError

    def train_step(self, batch: Any, dropout: float, losses: Dict[str, float]) -> None:
        """One step's forward and backward pass over `batch` and the optimizer's update of the weights."""
        raise NotImplementedError

    def words(self, batch: Any) -> int:
        return sum(len(eg) for eg in batch)

    def evaluates(self, step: int) -> bool:
        return not (step % self.eval_frequency)

    def evaluate(self) -> Tuple[float, Dict[str, Any]]:
        """(score, all scores) on dev, with the optimizer's averaged weights in place."""
        raise NotImplementedError

    def is_best(self, results: List[Tuple[float, int]]) -> bool:
        """Whether the last evaluation of `results` ((score, step) so far) makes model-best: spaCy's rule,
        the best score, the latest of equals."""
        return results[-1][0] == max(results)[0]

    def log_record(self, info: dict) -> dict:
        raise NotImplementedError

    def save(self, is_best: bool, info: dict) -> None:
        """What an evaluation saves (model-best when `is_best`)."""
        raise NotImplementedError

    def say_start(self) -> None:
        """Lines printed before the first step."""

    def logger(self, resumed: bool) -> Tuple[Callable[[Optional[dict]], None], Callable[[], None]]:
        """(log_step, finalize): told of each step (its info when evaluated, else None), and of the end;
        `resumed`: the run goes on from a checkpoint."""
        return (lambda info: None), (lambda: None)


class SpacyRun(Run):
    """`spacy train`'s run: spaCy's batches, update, evaluation, model-best rule, logger and saved pipelines
    (spacy.training.loop.train's body)."""

    def __init__(self, nlp, output: Path, use_gpu: int, fingerprints: Dict[str, str], every: int, kept: int):
        config = nlp.config.interpolate()
        paths = config.get("paths", {})
        self.trained_on = trained_on_record(paths.get("train"), paths.get("dev"), fingerprints)
        if config["training"]["seed"] is not None:
            fix_random_seed(config["training"]["seed"])
        if use_gpu >= 0 and config["training"]["gpu_allocator"]:
            set_gpu_allocator(config["training"]["gpu_allocator"])
        T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
        self.train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
        super().__init__(nlp, output, T, fingerprints, every, kept)
        self.trackers = trackers.used_trackers(config)
        self.evaluation = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])

    def batches(self, replay: Optional[List[Any]]) -> Iterator[Tuple[int, Any]]:
        T = self.T
        return train_batches(self.nlp, self.train_corpus, T["batcher"], T["max_epochs"], self.shuffles, replay)

    def evaluate(self) -> Tuple[float, Dict[str, Any]]:
        return self.evaluation()

    def train_step(self, batch: Any, dropout: float, losses: Dict[str, float]) -> None:
        for subbatch in subdivide_batch(batch, self.T["accumulate_gradient"]):
            update(self.nlp, subbatch, dropout, losses, self.frozen, self.annotating)
        finish_updates(self.nlp, self.optimizer, self.frozen)

    def log_record(self, info: dict) -> dict:
        """spaCy's ConsoleLogger's `output_file` shape."""
        trainable = [name for name, proc in self.nlp.pipeline if getattr(proc, "is_trainable", False)]
        scores = {}
        for column, weight in self.T["score_weights"].items():
            if weight is not None:
                value = float(info["other_scores"].get(column, 0.0))
                scores[column] = value if column == "speed" else value * 100
        record = {
            "epoch": info["epoch"],
            "step": info["step"],
            "losses": {name: float(info["losses"].get(name, 0.0)) for name in trainable},
            "scores": scores,
            "score": float(info["score"]),
        }
        padding = padding_share(self.nlp)
        if padding is not None:  # the share of padding in the transformer's training batches so far
            record["padding"] = round(padding, 6)
        return record

    def save(self, is_best: bool, info: dict) -> None:
        """model-last at each evaluation, model-best when it is the best so far (spaCy's save_checkpoint),
        each replaced whole."""
        with self.nlp.select_pipes(disable=self.frozen):
            update_meta(self.T, self.nlp, info)
        if self.trained_on is not None:  # what evaluate compares a corpus with (iob_ner.evaluation.trained_on)
            self.nlp.meta[META_KEY] = self.trained_on
        with self.nlp.use_params(self.optimizer.averages or {}):
            self._save_pipeline(MODEL_LAST)
        if is_best:
            tmp = temporary_name(self.output / MODEL_BEST)
            remove(tmp)
            shutil.copytree(self.output / MODEL_LAST, tmp)
            replace(tmp, self.output / MODEL_BEST)
        info["output_path"] = str(self.output / MODEL_LAST)

    def say_start(self) -> None:
        msg.info(f"Pipeline: {self.nlp.pipe_names}")
        if self.frozen:
            msg.info(f"Frozen components: {self.frozen}")
        if self.annotating:
            msg.info(f"Set annotations on update for: {self.annotating}")
        msg.info(f"Initial learn rate: {self.optimizer.learn_rate}")

    def logger(self, resumed: bool):
        # a resumed run logs on to its tracker run (MLflow, W&B), whose id is kept beside the checkpoints
        with self.nlp.select_pipes(disable=self.frozen), trackers.same_runs(self.output, resumed, self.trackers):
            log_step, finalize = self.T["logger"](self.nlp, sys.stdout, sys.stderr)
        return (lambda info: log_step(None if info is None else trackers.without_pipeline(info))), finalize


def train_batches(nlp, corpus, batcher, max_epochs: int, shuffles: List[Any], replay: Optional[List[Any]] = None):
    """spacy.training.loop.create_train_batches, replayable: Python's random state before each epoch's
    shuffle is appended to `shuffles`, and a replay sets the recorded one back before each shuffle, so
    the batches (and a batch-size schedule's position) are exactly the interrupted run's, whatever else
    drew from Python's random generator during training."""
    epoch = 0
    if max_epochs >= 0:
        examples = list(corpus(nlp))
        if not examples:
            raise ValueError(Errors.E986)
    while max_epochs < 1 or epoch != max_epochs:
        if max_epochs >= 0:
            if replay is not None and epoch < len(replay):
                random.setstate(replay[epoch])
            shuffles.append(random.getstate())
            random.shuffle(examples)
        else:
            examples = corpus(nlp)
        for batch in batcher(examples):
            yield epoch, batch
        epoch += 1


def say_padding(nlp) -> None:
    """One line on the arithmetic spent on padding in this run's transformer batches."""
    train, predict = padding_share(nlp, "train"), padding_share(nlp, "predict")
    if train is not None:
        evaluations = f", {predict:.1%} in its evaluations" if predict is not None else ""
        msg.info(
            f"Padding: {train:.1%} of the transformer's wordpiece positions in training were padding{evaluations} "
            "(rows of a batch are padded to the longest; [training.batcher] groups documents by length)"
        )


def _schedule(value: Any) -> Iterator[float]:
    return constant(value) if isinstance(value, float) else value


def _recover(path: Path) -> None:
    """A folder that `outputs.replace` was swapping when the process was killed: put the old one back."""
    old = aside_name(path)
    if not path.exists() and old.exists():
        old.rename(path)
    remove(temporary_name(path))


def update(nlp, examples: List[Any], drop: float, losses: Dict[str, float], exclude=(), annotates=()) -> None:
    """`nlp.update(examples, drop=drop, losses=losses, sgd=False, exclude=..., annotates=...)`, without its
    copy of every example where no component annotates: the copy keeps a caller's docs safe from the
    annotations, and the loop's batch is read by nothing after its update (spaCy builds each Example again,
    token by token: ~12 ms a 4,000-word step)."""
    if annotates:
        nlp.update(examples, drop=drop, losses=losses, sgd=False, exclude=exclude, annotates=annotates)
        return
    if not examples:
        return
    validate_examples(examples, "Language.update")
    for name, proc in nlp.pipeline:
        if name not in exclude and hasattr(proc, "update"):
            proc.update(examples, sgd=None, losses=losses, drop=drop)


def finish_updates(nlp, optimizer, frozen: List[str]) -> None:
    """The update at the end of a step, as spaCy's loop makes it: each trainable pipe but the frozen (a
    transformer of `iob_ner.TransformerModel.v1` updates its parameters in one fused Adam call)."""
    for name, proc in nlp.pipeline:
        if name not in frozen and getattr(proc, "is_trainable", False) and proc.model not in (True, False, None):
            proc.finish_update(optimizer)
