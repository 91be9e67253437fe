"""Training the pipeline of configs/config.cfg on the project's corpus, on a GPU when one is present.

The run trains in `training/checkpoints/` (spaCy's loop made resumable: `loop`), and its pipelines
replace `training/model-best` and `training/model-last` only when it ends; an interrupted or failed
retrain leaves the previous pipelines, and the log they came with, as they were. What it leaves in
`training/checkpoints/` (its best pipeline so far and its last checkpoint) lets the same command go on
from that checkpoint, exactly, after Ctrl-C, kill -9 or a lost machine. Its pipelines, log and
calibration replace the old ones together (`outputs.replace_together`): a kill while they are put in
place leaves a record (`training/.promotion.json`) that the same command finishes first. One run at a
time trains into an output folder (`training/.train.lock`): a second is refused in one sentence.
"""

import hashlib
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

import spacy
from spacy import util
from spacy.cli._util import parse_config_overrides
from thinc.api import Config
from wasabi import msg

from ..corpus.convert import read_docs
from ..pipeline.layers import speedups
from ..util.errors import ConfigFileError, SetupError
from ..util.outputs import aside_name, content_sha256, finish_replacing, one_run_at_a_time, remove, replace_together
from ..util.runtime import resolve_transformer, select_device
from . import config_file, loop, precision, trackers
from .calibration import calibrate
from .checkpoints import checkpoints, unfinished_checkpoints, verify_checkpoint

MODELS = ("model-best", "model-last")
RUN = "checkpoints"  # where a run trains, beside model-best: its pipelines, log and resumable checkpoints
PROMOTION = ".promotion.json"  # beside model-best while a run's outputs replace the old ones


def check_training_corpus(config: Config, train_path: Path) -> None:
    """Stop before training on a corpus without entities; name the documents that `max_length` drops.

    spaCy's Corpus drops documents over `max_length` without a word.
    """
    limit = config["corpora"]["train"].get("max_length", 0)
    entities, long_docs = 0, []
    for i, doc in enumerate(read_docs(train_path, spacy.blank("en").vocab)):
        entities += len(doc.ents)
        if limit and len(doc) > limit:
            long_docs.append((i, len(doc)))
    if not entities:
        raise SetupError(
            f"{train_path} holds no entities: there is nothing to learn (check the training "
            f"file's tag column, or pass your annotated file with --vars.train FILE)"
        )
    if long_docs:
        shown = ", ".join(f"#{i} ({n} tokens)" for i, n in long_docs[:5])
        msg.warn(
            f"corpora.train.max_length = {limit} in the config leaves {len(long_docs)} training "
            f"document(s) out: {shown}. Set it to 0 to train on every document."
        )


def check_batch_sizes(config: Config, path: Path) -> None:
    """Batch sizes of 0 or less in the config: spaCy takes them without a word (a batch_by_words size of 0
    makes every document its own batch), so they are refused here, naming the setting."""
    size = config["training"].get("batcher", {}).get("size")
    values = {"training.batcher.size": size} if not isinstance(size, dict) else {}
    if isinstance(size, dict):  # a schedule: constant (rate) or compounding (start, stop)
        values = {f"training.batcher.size.{key}": size[key] for key in ("rate", "start", "stop") if key in size}
    values["nlp.batch_size"] = config["nlp"].get("batch_size", 1)
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise SetupError(
                f"{name} = {value} in {path}: a batch size must be positive (the default is 800 padded wordpieces, about 500 words)"
            )


def schedule_overrides(config: Config, max_steps: int, warmup_ratio: float) -> Dict[str, int]:
    """Fit a warmup/decay learning-rate schedule to `max_steps`, whatever steps the config names."""
    schedule = config["training"]["optimizer"].get("learn_rate")
    overrides = {}
    if isinstance(schedule, dict) and "total_steps" in schedule and max_steps > 0:
        overrides["training.optimizer.learn_rate.total_steps"] = max_steps
    if isinstance(schedule, dict) and "warmup_steps" in schedule and max_steps > 0:
        overrides["training.optimizer.learn_rate.warmup_steps"] = max(1, round(max_steps * warmup_ratio))
    return overrides


def check_steps(max_steps: int, eval_frequency: int, warmup_ratio: float, confidence_samples: int = 0) -> None:
    """The one check of a training schedule (train, crossval and data-curve): spaCy reads max_steps = 0 as "no
    limit", where it would train forever, and never evaluates a trained model when eval_frequency > max_steps."""
    if max_steps <= 0:
        raise SetupError(
            f"max_steps must be a positive number of training steps, not {max_steps} (--vars.max_steps 2000, say)"
        )
    if eval_frequency <= 0:
        raise SetupError(f"eval_frequency must be a positive number of steps, not {eval_frequency}")
    if eval_frequency > max_steps:
        # spaCy evaluates at step 0 and then every eval_frequency steps: none would come after the first
        # update, and model-best would be the untrained model (dev F 0), replacing a good one.
        raise SetupError(
            f"eval_frequency {eval_frequency} is above max_steps {max_steps}: the only evaluation would be "
            f"the untrained model's at step 0, and it would become model-best. Set --vars.eval_frequency "
            f"to at most {max_steps} (a quarter of it, say: {max(1, max_steps // 4)})"
        )
    if not 0 <= warmup_ratio < 1:
        raise SetupError(f"warmup_ratio must be at least 0 and below 1, not {warmup_ratio}")
    if confidence_samples < 0:
        raise SetupError(
            f"confidence_samples must be 0 (one pass) or a number of dropout passes, not {confidence_samples}"
        )


@dataclass(frozen=True)
class Checkpointing:
    """How a run keeps resumable checkpoints (`checkpoints`, `loop`)."""

    every: int = 0  # steps between checkpoints; 0: at each evaluation
    kept: int = 1  # the newest this many are kept (model-best is kept beside them)
    resume: bool = True  # go on from an interrupted run's last checkpoint; False: start over

    def check(self) -> None:
        if self.every < 0:
            raise SetupError(f"checkpoint_every must be 0 (at each evaluation) or a number of steps, not {self.every}")
        if self.kept < 1:
            raise SetupError(f"checkpoints_kept must be at least 1, not {self.kept}")


def train_pipeline(
    *,
    config: Path,
    output: Path,
    train: Path,
    dev: Path,
    transformer: str,
    gpu_id: Optional[int],
    max_steps: int,
    eval_frequency: int,
    seed: int,
    warmup_ratio: float = 0.1,
    log_file: Optional[Path] = None,
    confidence_samples: int = 0,
    checkpointing: Checkpointing = Checkpointing(),
) -> None:
    check_steps(max_steps, eval_frequency, warmup_ratio, confidence_samples)
    checkpointing.check()
    # one run per output folder: two would train the same steps into the same checkpoints and pipelines
    with one_run_at_a_time(output, "train"):
        config_data = config_file.read_config(config, fix=config_file.CREATE_CONFIG_FIX)
        check_batch_sizes(config_data, config)
        check_training_corpus(config_data, train)
        used_trackers = trackers.used_trackers(config_data)
        trackers.check_installed(used_trackers, config)  # one sentence, not spacy-loggers' ImportError later
        user_overrides = parse_config_overrides([])  # SPACY_CONFIG_OVERRIDES, as `spacy train` reads it
        precision_setting = precision.check_config(config, config_data, user_overrides)  # refuses fp16
        model = resolve_transformer(transformer)
        gpu, device = select_device(gpu_id)
        precision.choose(precision_setting, gpu)  # one sentence before anything loads, e.g. bf16 on a GPU without it
        msg.info(f"Training on {device}, transformer {model}")
        trackers.local_by_default(used_trackers)
        missing = speedups.lacking(config_data)
        if speedups.CALLBACK in missing:  # else the callback says it, in spacy train too
            msg.warn(speedups.lacking_message(missing, str(config)))
        overrides = {
            "paths.train": str(train),
            "paths.dev": str(dev),
            "paths.transformer": model,
            "training.max_steps": max_steps,
            "training.eval_frequency": eval_frequency,
            "system.seed": seed,
        }
        overrides.update(schedule_overrides(config_data, max_steps, warmup_ratio))
        overrides.update(user_overrides)
        try:
            config_file.check_pipeline(config, overrides)
        except ConfigFileError as err:
            raise SetupError(
                f"{err} (fix the config, or delete it and run `spacy project run create-config`)"
            ) from None
        run_dir = output / RUN
        fingerprints = training_input_digests(config, overrides, train, dev, model)
        if finished_promotion(output, fingerprints, checkpointing.resume):
            return
        resume_from = resume_point(run_dir, fingerprints, checkpointing.resume)
        run = Run(run_dir, output, log_file, gpu, dev, confidence_samples)
        resumable = {"fingerprints": fingerprints, "resume_from": resume_from}
        resumable.update(checkpoint_every=checkpointing.every, checkpoints_kept=checkpointing.kept)
        _train_then_promote(config, run, overrides, resumable)


def training_input_digests(config: Path, overrides: dict, train: Path, dev: Path, model: str) -> Dict[str, str]:
    """What a checkpoint must match to be resumed: the config as trained (its settings, not the paths of
    the corpora and transformer, nor its logger), the two corpora's contents, and the transformer (a folder's contents, or
    a Hugging Face name)."""
    settings = {**overrides, "paths.train": "", "paths.dev": "", "paths.transformer": ""}
    trained = util.load_config(config, overrides=settings, interpolate=False)
    trained["training"].pop("logger", None)  # where the run is logged changes nothing it trains: a resume may switch
    text = trained.to_str()
    return {
        "config": hashlib.sha256(text.encode("utf8")).hexdigest(),
        "training corpus": content_sha256(train),
        "dev corpus": content_sha256(dev),
        "transformer": content_sha256(model) if Path(model).is_dir() else model,
    }


def finished_promotion(output: Path, fingerprints: Dict[str, str], resume: bool) -> bool:
    """Finish putting a killed run's outputs in place, if it was killed while they were; True when that run
    was this one (the same config, corpora and transformer) and `resume`: it had ended, nothing is left to
    train."""
    note = finish_replacing(output / PROMOTION)
    if note is None:
        return False
    msg.good(
        f"The previous run was killed while its pipelines were put in place: {output / 'model-best'}, "
        f"{output / 'model-last'}, its log and calibration are now all its"
    )
    same = resume and note.get("fingerprints") == fingerprints
    if same:
        msg.info(
            "That run had ended, with this config, corpora and transformer: nothing is left to train "
            "(--vars.resume false trains again)"
        )
    return same


def resume_point(run_dir: Path, fingerprints: Dict[str, str], resume: bool) -> Optional[Path]:
    """The checkpoint to go on from, if an interrupted run left one and `resume`; else the run folder is
    cleared. A checkpoint of another config, corpus or transformer is refused in one sentence."""
    found = checkpoints(run_dir)
    if resume:
        for unfinished in unfinished_checkpoints(run_dir):  # kill -9 while it was written: said, not silent
            msg.warn(f"Skipping {unfinished}: its writing was interrupted, so it is incomplete")
    if found and resume:
        state, _ = verify_checkpoint(found[-1])  # one sentence naming a damaged file, before the transformer loads
        changed = [what for what, value in fingerprints.items() if state.fingerprints.get(what) != value]
        if changed:
            raise SetupError(
                f"{run_dir} holds an interrupted run (step {state.step}) trained with another "
                f"{' and '.join(changed)}: rerun with --vars.resume false to start over (its checkpoints "
                f"are then removed), or put back what it was started with to resume it"
            )
        best = state.best
        if best is not None and not any(
            p.exists() for p in (run_dir / "model-best", aside_name(run_dir / "model-best"))
        ):
            raise SetupError(
                f"{run_dir} holds an interrupted run (step {state.step}) without its model-best: rerun with "
                f"--vars.resume false to start over (its checkpoints are then removed)"
            )
        so_far = f"best dev score {best[0]:.3f} at step {best[1]}" if best else "not evaluated yet"
        msg.info(f"Resuming the interrupted run from its checkpoint at step {state.step} ({so_far})")
        return found[-1]
    if found:
        msg.info(f"Starting over (resume false): the interrupted run's checkpoints in {run_dir} are removed")
    remove(run_dir)
    return None


@dataclass(frozen=True)
class Run:
    """Where a run trains (`folder`, kept until it ends) and what follows its training."""

    folder: Path
    output: Path
    log_file: Optional[Path]
    gpu: int
    dev: Path
    confidence_samples: int = 0


def _train_then_promote(config: Path, run: Run, overrides: dict, resumable: dict) -> None:
    """Train into the run's folder, calibrate, then put its pipelines, log and calibration in place of the
    output's, together. On Ctrl-C, kill -9 or a crash, the folder and its checkpoints stay for the next run to
    resume; a kill while the outputs are put in place leaves the record that the next run finishes."""
    with _said_at_once_on_ctrl_c(_interrupted_message(run.output, run.folder)):
        try:
            # spaCy's training loop, resumable; the speed-ups and the transformer's precision come with the
            # config (its architectures and [initialize] after_init callback)
            loop.train(config, run.folder, use_gpu=run.gpu, overrides=overrides, **resumable)
            calibrate(
                run.folder / "model-best", run.dev, run.folder / "calibration.json", samples=run.confidence_samples
            )
        except BaseException:
            if not checkpoints(run.folder):  # nothing to resume from: nothing to keep
                remove(run.folder)
            raise
    # together, even across a kill -9: a rerun that finds the record finishes it (finished_promotion)
    pairs = [(run.folder / name, run.output / name) for name in MODELS]
    if run.log_file is not None:
        pairs.append((run.folder / loop.LOG, run.log_file))
    pairs.append((run.folder / "calibration.json", run.output / "calibration.json"))
    note = {"fingerprints": resumable["fingerprints"]}
    replace_together(pairs, run.output / PROMOTION, removed=[run.folder], note=note)
    msg.good(f"{run.output / 'model-best'} and {run.output / 'model-last'} are this run's")


def _dev_f(model_dir: Path) -> str:
    """The dev F that spaCy stored in a pipeline's meta.json, for messages."""
    try:
        performance = json.loads((model_dir / "meta.json").read_text(encoding="utf8")).get("performance", {})
        return f"dev F {performance['ents_f']:.3f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "not evaluated"


def _interrupted_message(output: Path, run_dir: Path) -> str:
    """What Ctrl-C will say, worked out before training starts (the handler has no time to read files)."""
    best = output / "model-best"
    kept = f"{best} is still the previous run's ({_dev_f(best)})" if best.exists() else f"no {best} was written"
    return (
        f"Interrupted: {kept}. The same command resumes this run from its last checkpoint in {run_dir} "
        f"(--vars.resume false starts over)"
    )


@contextmanager
def _said_at_once_on_ctrl_c(message: str) -> Iterator[None]:
    """On Ctrl-C, print `message` at once, then stop as Ctrl-C does (KeyboardInterrupt).

    At once, because `spacy project run` gives its child a quarter of a second after Ctrl-C before it
    kills it (subprocess.run). A Python signal handler runs only between bytecodes of the main thread,
    which can sit longer than that inside one torch operation on a busy CPU; so the C-level handler's
    wake-up byte (signal.set_wakeup_fd) is read by a thread that writes the prepared line straight to fd 1
    (torch releases the GIL inside its operations). The handler says it too, if it comes first, and raises.
    """
    line = msg.text(message, color="yellow", icon="warn", no_print=True).encode("utf8", "replace") + b"\n"
    said = threading.Lock()

    def say() -> None:
        if said.acquire(blocking=False):  # once, whichever of thread and handler comes first
            os.write(sys.stdout.fileno(), line)

    def on_sigint(*_: object) -> None:
        sys.stdout.flush()
        say()
        raise KeyboardInterrupt

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        try:
            while True:
                woken_by = os.read(read_end, 64)  # one byte per signal that has a Python handler
                if not woken_by:
                    return
                if signal.SIGINT in woken_by:
                    say()
        except OSError:
            pass  # the pipe was closed: training ended

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_handler)
        os.close(write_end)  # ends the watcher's read
        watcher.join(timeout=1)
        os.close(read_end)
