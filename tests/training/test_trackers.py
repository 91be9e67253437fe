"""Experiment trackers (`--vars.logger`): a training run logged to MLflow is read back by MLflow's own client,
continued after a kill -9, and a W&B run is written offline (the tiny random transformer, on the CPU)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from spacy.util import load_config
from support.paths import ROOT

from iob_ner.corpus.convert import convert_iob
from iob_ner.training.config_file import write_config
from iob_ner.training.trackers import RUNS, check_installed, used_trackers
from iob_ner.util.errors import SetupError
from iob_ner.util.runtime import resolve_transformer
from iob_ner.util.tiny import make_tiny_bert

BASE = ROOT / "configs" / "base_config.cfg"
STEPS, EVAL = 6, 2

# kill -9 just before the checkpoint of step 4 (after the evaluations of steps 0 and 2 were logged)
KILL_BEFORE_STEP_4 = """
import os, runpy, signal, sys
from iob_ner.training import checkpoints

write = checkpoints.write_checkpoint

def write_or_die(folder, nlp, optimizer, state, kept, shuffles):
    if state.step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(folder, nlp, optimizer, state, kept, shuffles)

checkpoints.write_checkpoint = write_or_die
sys.argv = [os.environ["TRAIN_SCRIPT"], *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trackers")
    for split in ("train", "dev"):
        convert_iob(ROOT / "assets" / f"{split}.tsv", folder / split)
    return folder, make_tiny_bert(resolve_transformer("embedded"), folder / "bert")


def train(corpus, config, output, cwd, env, script=None):
    folder, bert = corpus
    args = [str(config), str(output), "--train", str(folder / "train.spacy"), "--dev", str(folder / "dev.spacy")]
    args += ["--transformer", str(bert), "--gpu-id", "cpu", "--max-steps", str(STEPS), "--eval-frequency", str(EVAL)]
    args += ["--log-file", str(output / "log.jsonl")]
    command = (
        [sys.executable, "-c", script, *args] if script else [sys.executable, str(ROOT / "scripts/train.py"), *args]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRAIN_SCRIPT": str(ROOT / "scripts/train.py"), **env}
    env = {name: value for name, value in env.items() if value is not None}  # None: unset
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode, " ".join(result.stdout.split()), result.stderr


def test_create_config_writes_the_tracker_into_training_logger(tmp_path):
    for logger, expected in (("console", []), ("mlflow", ["mlflow"]), ("wandb", ["wandb"])):
        write_config(BASE, tmp_path / f"{logger}.cfg", "token", logger=logger)
        config = load_config(tmp_path / f"{logger}.cfg", interpolate=False)
        assert used_trackers(config) == expected
    # console: the base's console logger, and the config that create-config wrote before trackers existed
    console = load_config(tmp_path / "console.cfg", interpolate=False)["training"]["logger"]
    assert console == load_config(BASE, interpolate=False)["training"]["logger"]
    assert (tmp_path / "console.cfg").read_text() == (ROOT / "configs" / "config.cfg").read_text()
    chained = load_config(tmp_path / "mlflow.cfg", interpolate=False)["training"]["logger"]
    assert chained["@loggers"] == "spacy.ChainLogger.v1" and chained["logger1"] == console
    assert chained["logger2"]["@loggers"] == "spacy.MLflowLogger.v2"


def test_a_tracker_that_is_not_installed_stops_train_in_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # Python's own way to make a module unimportable
    with pytest.raises(
        SetupError, match=r"config.cfg logs to mlflow, which is not installed: pip install -r requirements-trackers.txt"
    ):
        check_installed(["mlflow"], Path("configs/config.cfg"))


@pytest.mark.slow
def test_an_mlflow_run_has_the_losses_and_dev_scores_of_each_evaluation_and_goes_on_after_kill_9(corpus, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    config = tmp_path / "config.cfg"
    write_config(BASE, config, "token", logger="mlflow")
    env = {
        "MLFLOW_TRACKING_URI": None,
        "MLFLOW_ALLOW_FILE_STORE": None,
        "MLFLOW_RUN_ID": None,
    }  # the project's default: ./mlruns
    code, out, err = train(corpus, config, tmp_path / "training", tmp_path, env, KILL_BEFORE_STEP_4)
    assert code == -9, err[-2000:]
    assert (tmp_path / "training" / "checkpoints" / RUNS).exists()  # the MLflow run's id, for a resume
    code, out, err = train(corpus, config, tmp_path / "training", tmp_path, env)
    assert code == 0, err[-2000:]
    assert "Resuming the interrupted run from its checkpoint at step 2" in out
    assert "MLflow: the resumed run goes on logging to the interrupted run's MLflow run" in out
    assert f"MLflow: runs go to {(tmp_path / 'mlruns').as_uri()}" in out
    assert not (tmp_path / "training" / "checkpoints" / RUNS).exists()  # the run folder went with its promotion

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 reads its file store only so
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # one run, continued after the kill
    run = runs[0]
    assert run.info.status == "FINISHED"

    def history(key):
        return [metric.value for metric in client.get_metric_history(run.info.run_id, key)]

    steps = list(range(0, STEPS + 1, EVAL))
    assert history("step") == steps  # every evaluation once: 0 and 2 before the kill, 4 and 6 after it
    for key in ("loss_transformer", "loss_ner", "ents_f", "ents_p", "ents_r", "score"):
        assert len(history(key)) == len(steps), key
    # the losses and dev scores of each evaluation are the run's own (its log.jsonl: scores in %)
    log = [json.loads(line) for line in (tmp_path / "training" / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == steps
    assert history("loss_ner") == pytest.approx([record["losses"]["ner"] for record in log])
    assert history("ents_f") == pytest.approx([record["scores"]["ents_f"] / 100 for record in log])
    assert all(loss > 0 for loss in history("loss_ner"))
    assert run.data.params["training.max_steps"] == str(STEPS)
    assert run.data.params["training.eval_frequency"] == str(EVAL)
    assert run.data.params["components.ner.factory"] == "token_ner"


@pytest.mark.slow
def test_a_wandb_run_without_an_api_key_is_written_offline(corpus, tmp_path):
    pytest.importorskip("wandb")
    config = tmp_path / "config.cfg"
    write_config(BASE, config, "token", logger="wandb")
    env = {
        "WANDB_MODE": None,
        "WANDB_API_KEY": None,
        "WANDB_DIR": None,
        "NETRC": str(tmp_path / "netrc"),
    }  # no key, no netrc
    code, out, err = train(corpus, config, tmp_path / "training", tmp_path, env)
    assert code == 0, err[-2000:]
    assert "W&B: no API key (wandb login), so offline" in out
    # wandb's own summary of the run it wrote: the dev F and the last step it was given
    summary = " ".join(f"{out} {err}".split())
    assert re.search(r"wandb: ents_f [0-9.]+", summary) and f"wandb: step {STEPS}" in summary, summary[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
