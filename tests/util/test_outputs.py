"""Outputs replaced together across a kill -9 (`replace_together` and the record that `finish_replacing`
finishes): a kill at every file-system step leaves either all the old outputs or, once finished, all the new
ones, and nothing hidden beside them."""

import shutil
from pathlib import Path

import pytest

from iob_ner.util import outputs


class Killed(BaseException):
    """What a kill -9 does to the process: nothing after it runs, no except or finally that cleans up."""


def make_outputs(root: Path, run: str) -> list:
    """A run's four outputs under `root`: two pipelines (folders), a log and a calibration (files)."""
    made = []
    for name in ("model-best", "model-last"):
        (root / name).mkdir(parents=True)
        (root / name / "meta.json").write_text(run)
        made.append(root / name)
    for name in ("log.jsonl", "calibration.json"):
        (root / name).write_text(run)
        made.append(root / name)
    return made


def runs_of(root: Path) -> set:
    return {(root / name / "meta.json").read_text() for name in ("model-best", "model-last")} | {
        (root / name).read_text() for name in ("log.jsonl", "calibration.json")
    }


def kill_at(monkeypatch, n: int) -> None:
    """The n-th rename, replace, unlink or folder removal from now on raises Killed instead."""
    count = [0]

    def dying(real):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == n:
                raise Killed(n)
            return real(*args, **kwargs)

        return call

    for name in ("rename", "replace", "unlink"):
        monkeypatch.setattr(Path, name, dying(getattr(Path, name)))
    monkeypatch.setattr(shutil, "rmtree", dying(shutil.rmtree))


def test_a_kill_at_any_step_leaves_the_old_outputs_or_the_record_that_finishes_the_new_ones(tmp_path, monkeypatch):
    n = 0
    while True:
        n += 1
        root = tmp_path / str(n)
        output, run = root / "training", root / "training" / "checkpoints"
        finals = make_outputs(output, "old")
        sources = make_outputs(run, "new")
        (run / "step-000004").mkdir()
        record = output / ".promotion.json"
        with monkeypatch.context() as patched:
            kill_at(patched, n)
            try:
                outputs.replace_together(list(zip(sources, finals)), record, removed=[run], note={"run": "new"})
                killed = False
            except Killed:
                killed = True
        if not killed:
            break
        note = outputs.finish_replacing(record)  # the next run, first
        assert runs_of(output) == ({"new"} if note is not None else {"old"}), n
        if note is not None:
            assert note == {"run": "new"} and not run.exists()
        else:  # killed before the record was in place: the run's folder waits, whole, to be promoted again
            assert runs_of(run) == {"new"}
        left = sorted(p.name for p in output.iterdir() if p.name.startswith("."))
        assert left == [], (n, left)
        assert outputs.finish_replacing(record) is None  # finished once
    assert n > 10  # every rename and removal of the four outputs was a kill point
    assert runs_of(output) == {"new"} and not run.exists() and not record.exists()


def test_a_damaged_record_is_one_sentence(tmp_path):
    from iob_ner.util.errors import SetupError

    record = tmp_path / ".promotion.json"
    record.write_text("{not json")
    with pytest.raises(SetupError, match=r"\.promotion\.json, the record of outputs being replaced, is damaged"):
        outputs.finish_replacing(record)


HOLD_THE_LOCK = """
import sys, time
from iob_ner.util.outputs import one_run_at_a_time
with one_run_at_a_time(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def holding_child(folder: Path):
    """A real second process that holds the folder's train lock until it is killed."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_ones_lock_taken_over(tmp_path, capsys):
    from iob_ner.util.errors import SetupError

    child = holding_child(tmp_path)
    try:
        with pytest.raises(SetupError, match=rf"in use by another train run \(pid {child.pid} on .*kill its pid"):
            with outputs.one_run_at_a_time(tmp_path, "train"):
                pass
    finally:
        child.kill()  # kill -9: its lock file stays, with its pid
        child.wait()
    assert (tmp_path / ".train.lock").exists()
    with outputs.one_run_at_a_time(tmp_path, "train") as lock:
        assert f'"pid": {__import__("os").getpid()}' in lock.read_text()
    said = " ".join(capsys.readouterr().out.split())
    assert f"Taking over {tmp_path / '.train.lock'}: the train run that held it (pid {child.pid} on" in said
    assert not (tmp_path / ".train.lock").exists()  # released at the end


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_on_an_error_and_on_ctrl_c(tmp_path, stop, capsys):
    with pytest.raises(stop):
        with outputs.one_run_at_a_time(tmp_path, "train"):
            raise stop()
    assert not (tmp_path / ".train.lock").exists()
    with outputs.one_run_at_a_time(tmp_path, "train"):
        pass
    assert "Taking over" not in capsys.readouterr().out


def test_train_refuses_a_second_run_on_the_same_output_in_one_line(tmp_path):
    import subprocess
    import sys

    from support.paths import ROOT

    output = tmp_path / "training"
    child = holding_child(output)
    try:
        command = [sys.executable, "scripts/train.py", "configs/config.cfg", str(output), "--train"]
        command += ["assets/sample.json", "--dev", "assets/sample.json", "--gpu-id", "cpu"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        child.kill()
        child.wait()
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"{output} is in use by another train run (pid {child.pid} on" in said, said
    assert not (output / "checkpoints").exists()


def test_a_folder_the_lock_made_is_not_left_empty(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.one_run_at_a_time(tmp_path / "training", "train"):
            raise RuntimeError("a config that cannot train")
    assert not (tmp_path / "training").exists()


def test_a_checkpoint_whose_run_lost_its_model_best_is_one_sentence_not_e052(tmp_path):
    """The state a kill left before replace_together (model-best moved out of training/checkpoints): resuming
    it would end in spaCy's E052 at calibration, so it is refused before anything loads."""
    import json
    import pickle

    import numpy

    from iob_ner.training.train import resume_point
    from iob_ner.util.errors import SetupError

    checkpoint = tmp_path / "checkpoints" / "step-000030"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "model" / "config.cfg").write_text("")
    numpy.savez(checkpoint / "optimizer.npz", w=numpy.zeros(2))
    (checkpoint / "random.pkl").write_bytes(pickle.dumps({"shuffles": []}))
    state = {"step": 30, "epoch": 1, "results": [[0.5, 20]], "words": 9, "seconds": 1.0, "losses": {}}
    (checkpoint / "state.json").write_text(json.dumps({**state, "optimizer": {}}))
    with pytest.raises(SetupError, match=r"step 30\) without its model-best: rerun with --vars.resume false"):
        resume_point(tmp_path / "checkpoints", {}, resume=True)
    (tmp_path / "checkpoints" / "model-best").mkdir()
    assert resume_point(tmp_path / "checkpoints", {}, resume=True) == checkpoint
