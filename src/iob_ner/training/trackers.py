"""Experiment trackers for training runs: `--vars.logger console | mlflow | wandb`.

The choice is written into the config's `[training.logger]` by create-config, so that `spacy train` with
the same config logs to the same tracker. A tracker is spacy-loggers' own logger (`spacy.MLflowLogger.v2`,
`spacy.WandbLogger.v5`), chained after the console logger (`spacy.ChainLogger.v1`): the console shows what
it shows with `console`, and the tracker receives spaCy's `info` of each evaluation (losses, scores, step).

The project's `train` also:
- points MLflow at a local `mlruns/` folder (MLFLOW_TRACKING_URI, where the user has not set one) and
  W&B at offline mode (WANDB_MODE, where there is no W&B API key): both work without a network;
- hands the loggers no pipeline to upload (`without_pipeline`);
- continues the same tracker run when a killed run resumes: the run's id is kept beside its checkpoints
  (`trackers.json`) and handed to the logger through the tracker's own variables (MLFLOW_RUN_ID, WANDB_RUN_ID).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List

from wasabi import msg

from ..util.errors import SetupError
from ..util.outputs import write_text_atomic

LOGGERS = ("console", "mlflow", "wandb")
REQUIREMENTS = "requirements-trackers.txt"
RUNS = "trackers.json"  # beside a run's checkpoints: the tracker runs it logs to, for a resume
# spacy-loggers logs MLflow metrics without a step (all at step 0): spaCy's step, epoch, words and seconds
# go in as metrics of their own (its `log_custom_stats`), so that a score can be read against its step.
PROGRESS_STATS = ["^(step|epoch|words|seconds)"]  # the keys of spaCy's info that start so
# tracker -> (its spacy-loggers logger, the module that logger imports)
TRACKERS = {"mlflow": ("spacy.MLflowLogger.v2", "mlflow"), "wandb": ("spacy.WandbLogger.v5", "wandb")}
NAMES = {"mlflow": "MLflow", "wandb": "W&B"}
TRACKER_OPTIONS: Dict[str, Dict[str, Any]] = {
    "mlflow": {"run_name": None, "experiment_id": None, "log_custom_stats": PROGRESS_STATS},
    "wandb": {"project_name": "iob_ner", "run_name": None, "log_custom_stats": PROGRESS_STATS},
}


def logger_section(name: str, console: Dict[str, Any]) -> Dict[str, Any]:
    """The `[training.logger]` block for logger `name`, given the base config's console logger block."""
    if name not in LOGGERS:
        raise SetupError(f"unknown logger {name!r} (--vars.logger): use one of {', '.join(LOGGERS)}")
    if name == "console":
        return console
    registered, _ = TRACKERS[name]
    tracker = {"@loggers": registered, **TRACKER_OPTIONS[name]}
    return {"@loggers": "spacy.ChainLogger.v1", "logger1": copy.deepcopy(console), "logger2": tracker}


def used_trackers(config: Dict[str, Any]) -> List[str]:
    """The trackers that the config's `[training.logger]` logs to (at any depth of a chain)."""
    names: List[str] = []

    def visit(block: Any) -> None:
        if isinstance(block, dict):
            for tracker, (registered, _) in TRACKERS.items():
                if str(block.get("@loggers", "")).split(".")[1:2] == registered.split(".")[1:2]:
                    names.append(tracker)
            for value in block.values():
                visit(value)

    visit(config.get("training", {}).get("logger", {}))
    return sorted(set(names))


def check_installed(trackers: List[str], config_path: Path) -> None:
    """One sentence, before anything loads, for a tracker whose package is not installed."""
    for tracker in trackers:
        _, module = TRACKERS[tracker]
        if importlib.util.find_spec(module) is None:
            raise SetupError(
                f"[training.logger] of {config_path} logs to {tracker}, which is not installed: "
                f"pip install -r {REQUIREMENTS} (or create-config with --vars.logger console)"
            )


def local_by_default(trackers: List[str]) -> None:
    """Point the trackers at this machine where the user has not pointed them elsewhere (said once)."""
    if "mlflow" in trackers and not os.environ.get("MLFLOW_TRACKING_URI"):
        # MLflow 3 defaults to an SQLite store that mlflow-skinny cannot write, and keeps its file store
        # (a folder, readable by `mlflow ui`) behind this switch
        os.environ["MLFLOW_TRACKING_URI"] = Path("mlruns").resolve().as_uri()
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = os.environ.get("MLFLOW_ALLOW_FILE_STORE") or "true"
    if "mlflow" in trackers:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        msg.info(f"MLflow: runs go to {uri} (see them with: mlflow ui --backend-store-uri {uri})")
    if "wandb" in trackers and not os.environ.get("WANDB_MODE") and not _has_wandb_key():
        os.environ["WANDB_MODE"] = "offline"
        msg.info(
            "W&B: no API key (wandb login), so offline: the run goes to wandb/offline-run-*; "
            "`wandb sync` on that folder uploads it later"
        )


def _has_wandb_key() -> bool:
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # where `wandb login` keeps the key (NETRC, as wandb reads it, else ~/.netrc)
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextmanager
def same_runs(folder: Path, resumed: bool, used: List[str]) -> Iterator[None]:
    """Around the logger's setup: a resumed run's tracker runs are continued (their ids, recorded in
    `folder` when they started, are handed over in the trackers' own variables, then taken back), and the
    ids of the runs the logger opened are recorded for the next resume. What happens is said before the
    setup, where the console logger then prints its table."""
    path = folder / RUNS
    earlier = json.loads(path.read_text(encoding="utf8")) if resumed and path.exists() else {}
    for tracker in used if resumed else ():
        name = NAMES[tracker]
        if tracker in earlier:
            msg.info(f"{name}: the resumed run goes on logging to the interrupted run's {name} run {earlier[tracker]}")
        else:
            msg.info(f"{name}: the resumed run logs to a new {name} run (the interrupted run recorded none)")
    handed = {}
    if "mlflow" in earlier:
        handed["MLFLOW_RUN_ID"] = earlier["mlflow"]
    if "wandb" in earlier:
        handed.update(WANDB_RUN_ID=earlier["wandb"], WANDB_RESUME="allow")
    before = {variable: os.environ.get(variable) for variable in handed}
    os.environ.update(handed)
    try:
        yield
    finally:
        for variable, value in before.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    now = _open_runs()
    for tracker, run_id in now.items():
        if tracker in earlier and earlier[tracker] != run_id:
            msg.warn(f"{NAMES[tracker]} did not continue run {earlier[tracker]}: this run logs to {run_id}")
    if now:
        write_text_atomic(path, json.dumps(now))


def without_pipeline(info: Dict[str, Any]) -> Dict[str, Any]:
    """spaCy's `info` of an evaluation for the logger, less the saved pipeline's path (`output_path`).

    Given it, spacy-loggers' MLflow logger uploads the whole pipeline at each new best score (a minute
    each on a busy CPU here, a copy of the transformer each time; and MLflow 3 then writes every metric's
    history again for the logged model, so each value is read back twice). model-best stays in the output
    folder; docs/training.md says how to log it to MLflow once, after training.
    """
    return {key: value for key, value in info.items() if key != "output_path"}


def _open_runs() -> Dict[str, str]:
    """The ids of the tracker runs open in this process (a tracker not imported has none)."""
    runs = {}
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        runs["mlflow"] = sys.modules["mlflow"].active_run().info.run_id
    if "wandb" in sys.modules and getattr(sys.modules["wandb"], "run", None) is not None:
        runs["wandb"] = sys.modules["wandb"].run.id
    return runs
