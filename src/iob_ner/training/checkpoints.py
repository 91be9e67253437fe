"""Resumable training checkpoints: everything a run needs to go on exactly where it stopped.

spaCy 3 cannot resume a training run; starting again from model-last loses the optimizer's moments, the
learning-rate schedule's position, the batch order and the random states, so the resumed run is another
run. A checkpoint here holds all of them:

- `model/`: the pipeline's weights as `nlp.to_disk` writes them (the raw weights, never the averages);
- `optimizer.npz`: thinc's Adam moments (and parameter averages, where the config uses them), one array
  per parameter, named by where the parameter sits in the pipeline (`ner.3:W`, `transformer.0.shim0:
  encoder.layer.0.output.dense.weight`): thinc keys them by node ids, which are counters that differ
  between processes;
- `state.json`: the step, epoch, evaluations so far, words and seconds, losses since the last evaluation,
  each parameter's update count, the log records, and the fingerprints of the config, corpora and
  transformer the run was started with;
- `random.pkl`: the states of Python's, NumPy's and torch's random generators (and CUDA's, on a GPU),
  and Python's state before each epoch's shuffle of the training documents.

The batches and the schedules (learning rate, batch size, dropout) are not stored: they are regenerated
and replayed to the checkpoint's step, each epoch shuffled from its recorded state, which is cheap and
exact (see `loop`). A checkpoint is written under a temporary name and renamed when complete, so a kill -9 at
any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import pickle
import random
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy
import torch
from thinc.api import Model, get_current_ops
from thinc.backends import get_array_ops

from ..util.errors import CheckpointError
from ..util.outputs import remove, replace, temporary_name

STEP_PREFIX = "step-"
Key = Tuple[int, str]  # thinc's optimizer key: (node or shim id, parameter name)


@dataclass
class TrainingState:
    """Where a run stands after a step (what `loop` needs besides weights and optimizer)."""

    step: int
    epoch: int
    results: List[Tuple[float, int]]  # (score, step) of every evaluation so far
    words: int
    seconds: float
    losses: Dict[str, float]  # since the last evaluation
    log: List[Dict[str, Any]] = field(default_factory=list)  # the JSONL log records so far
    fingerprints: Dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> Optional[Tuple[float, int]]:
        """(score, step) of the best evaluation, the earliest of equals (spaCy's rule)."""
        if not self.results:
            return None
        score, negative_step = max((score, -step) for score, step in self.results)
        return score, -negative_step


def parameter_names(nlp) -> Dict[Key, str]:
    """Each trainable parameter's optimizer key -> a name that is the same in every process: the
    component, the node's place in a walk of its model, and the parameter's own name."""
    names: Dict[Key, str] = {}
    for component, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if not isinstance(model, Model):
            continue
        for i, node in enumerate(model.walk()):
            for param in node.param_names:
                names.setdefault((node.id, param), f"{component}.{i}:{param}")
            for j, shim in enumerate(node.shims):
                torch_model = getattr(shim, "_model", None)
                for param, _ in getattr(torch_model, "named_parameters", lambda: [])():
                    names.setdefault((shim.id, param), f"{component}.{i}.shim{j}:{param}")
    return names


def optimizer_state(optimizer, names: Dict[Key, str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(arrays, counts) of thinc's optimizer, keyed by stable names. Raises ValueError for a key that no
    parameter of the pipeline has (a checkpoint without it would not resume exactly)."""
    unknown = [key for key in list(optimizer.mom1) + list(optimizer.nr_update) if key not in names]
    if unknown:
        raise ValueError(f"the optimizer updates parameters outside the pipeline's components: {unknown[:3]}")
    arrays: Dict[str, Any] = {}
    stores = {"mom1": optimizer.mom1, "mom2": optimizer.mom2, "averages": optimizer.averages or {}}
    for store, values in stores.items():
        for key, array in values.items():
            arrays[f"{store}/{names[key]}"] = get_array_ops(array).to_numpy(array)
    counts = {
        "nr_update": {names[key]: n for key, n in optimizer.nr_update.items()},
        "last_seen": {names[key]: n for key, n in optimizer.last_seen.items() if key in names},
    }
    return arrays, counts


def restore_optimizer(optimizer, names: Dict[Key, str], arrays: Dict[str, Any], counts: Dict[str, Any]) -> None:
    """Put a saved optimizer state into a fresh optimizer of the same config (its schedules are replayed
    by the caller)."""
    ops = get_current_ops()
    keys = {name: key for key, name in names.items()}
    missing = sorted({name.split("/", 1)[1] for name in arrays} - set(keys))
    if missing:
        raise ValueError(f"the checkpoint has parameters this pipeline lacks: {missing[:3]}")
    stores = {"mom1": optimizer.mom1, "mom2": optimizer.mom2, "averages": optimizer.averages}
    for name, array in arrays.items():
        store, parameter = name.split("/", 1)
        if stores[store] is None:
            raise ValueError("the checkpoint has parameter averages, the config's optimizer keeps none")
        stores[store][keys[parameter]] = ops.asarray(array)
    for name, n in counts["nr_update"].items():
        optimizer.nr_update[keys[name]] = n
    for name, n in counts["last_seen"].items():
        optimizer.last_seen[keys[name]] = n


def random_states() -> Dict[str, Any]:
    states: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": numpy.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: Dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_checkpoint(folder: Path, nlp, optimizer, state: TrainingState, kept: int, shuffles: List[Any]) -> Path:
    """Write the checkpoint of `state.step` into `folder` (`step-000200/`), whole or not at all, then
    remove all but the newest `kept` checkpoints. `shuffles`: Python's random state before each epoch's
    shuffle so far (`loop.train_batches`). Returns the checkpoint's path."""
    final = folder / f"{STEP_PREFIX}{state.step:06d}"
    tmp = temporary_name(final)
    remove(tmp)
    tmp.mkdir(parents=True)
    nlp.to_disk(tmp / "model")
    arrays, counts = optimizer_state(optimizer, parameter_names(nlp))
    numpy.savez(tmp / "optimizer.npz", **arrays)
    (tmp / "state.json").write_text(json.dumps({**asdict(state), "optimizer": counts}), encoding="utf8")
    with (tmp / "random.pkl").open("wb") as handle:
        pickle.dump({**random_states(), "shuffles": shuffles}, handle)
    replace(tmp, final)
    for older in checkpoints(folder)[:-kept]:
        remove(older)
    return final


FILES = ("state.json", "optimizer.npz", "random.pkl", "model")  # what every checkpoint holds


def checkpoints(folder: Path) -> List[Path]:
    """The checkpoints in `folder`, oldest first. Each was renamed into place whole (`write_checkpoint`), so
    one that lacks a file was damaged afterwards: `verify_checkpoint` refuses it, it is not skipped."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))


def unfinished_checkpoints(folder: Path) -> List[Path]:
    """Checkpoints whose writing was interrupted (their temporary names): never resumed from."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{STEP_PREFIX}") and p.name.endswith(".tmp"))


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint file {path} is damaged ({why}): rerun with --vars.resume false to start over (the "
        f"interrupted run's checkpoints are then removed)"
    )


def read_state(checkpoint: Path) -> Tuple[TrainingState, Dict[str, Any]]:
    """(the training state, the optimizer's counts) of a checkpoint; a CheckpointError naming state.json
    when it is missing, truncated or not a state."""
    path = checkpoint / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf8"))
        counts = data.pop("optimizer")
        data["results"] = [tuple(result) for result in data["results"]]
        return TrainingState(**data), counts
    except FileNotFoundError:
        raise _damaged(path, "it is missing") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise _damaged(path, f"it is not whole JSON: {err}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise _damaged(path, f"it is not a training state: {type(err).__name__} {err}") from None


def verify_checkpoint(checkpoint: Path) -> Tuple[TrainingState, Dict[str, Any]]:
    """Check every file of a checkpoint before anything heavy is loaded (the transformer takes minutes):
    its state, optimizer moments, random states and weights folder. Returns `read_state`'s answer; a
    CheckpointError names the first damaged file."""
    state = read_state(checkpoint)
    model = checkpoint / "model"
    if not (model / "config.cfg").is_file():
        raise _damaged(model, "it is missing" if not model.exists() else "it has no config.cfg")
    optimizer = checkpoint / "optimizer.npz"
    if not optimizer.is_file():
        raise _damaged(optimizer, "it is missing")
    try:
        with zipfile.ZipFile(optimizer) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"{bad} fails its checksum")
    except (zipfile.BadZipFile, OSError) as err:
        raise _damaged(optimizer, f"it is not a whole NumPy archive: {err}") from None
    try:
        states = read_random_states(checkpoint)
        if not isinstance(states, dict) or "shuffles" not in states:
            raise ValueError("it holds no random states")
    except FileNotFoundError:
        raise _damaged(checkpoint / "random.pkl", "it is missing") from None
    except Exception as err:  # a truncated pickle raises EOFError, UnpicklingError, ValueError...
        raise _damaged(checkpoint / "random.pkl", f"{type(err).__name__}: {err}") from None
    return state


def load_checkpoint(checkpoint: Path, nlp, optimizer) -> TrainingState:
    """Load a checkpoint's weights into `nlp` (initialized from the same config) and its moments into
    `optimizer`; return its training state. The random states are set by the caller, at the right moment
    (`read_random_states`)."""
    state, counts = read_state(checkpoint)
    model = checkpoint / "model"
    nlp.vocab.from_disk(model / "vocab")
    for name, proc in nlp.pipeline:
        if hasattr(proc, "from_disk") and (model / name).exists():
            proc.from_disk(model / name, exclude=("vocab",))
    with numpy.load(checkpoint / "optimizer.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    restore_optimizer(optimizer, parameter_names(nlp), arrays, counts)
    return state


def read_random_states(checkpoint: Path) -> Dict[str, Any]:
    with (checkpoint / "random.pkl").open("rb") as handle:
        return pickle.load(handle)
