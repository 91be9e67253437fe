"""train's checks before spaCy trains: no silent document drops, a schedule that fits max_steps, and
one sentence (no traceback) for settings and inputs that cannot train."""

import subprocess
import sys

import pytest
from spacy.util import load_config
from support.paths import ROOT

from iob_ner.corpus.convert import convert_iob
from iob_ner.training.config_file import CREATE_CONFIG_FIX, read_config
from iob_ner.training.train import check_steps, check_training_corpus, schedule_overrides
from iob_ner.util.errors import ConfigFileError
from iob_ner.util.runtime import SetupError


def test_a_length_limit_that_drops_documents_names_them(tmp_path, fixture_path, capsys):
    convert_iob(fixture_path("sentences.tsv"), tmp_path / "train", sents_per_doc=2)
    config = load_config(ROOT / "configs" / "base_config.cfg", interpolate=False)
    check_training_corpus(config, tmp_path / "train.spacy")
    assert capsys.readouterr().out == ""
    config["corpora"]["train"]["max_length"] = 1
    check_training_corpus(config, tmp_path / "train.spacy")
    out = capsys.readouterr().out.replace("\n", " ")
    assert "leaves 2 training document(s) out: #0 (2 tokens), #1 (2 tokens)" in out


def test_a_training_corpus_without_entities_stops_with_one_sentence(tmp_path):
    source = tmp_path / "plain.tsv"
    source.write_text("Aspirin\tO\nhelps\tO\n", encoding="utf8")
    convert_iob(source, tmp_path / "train")
    config = load_config(ROOT / "configs" / "base_config.cfg", interpolate=False)
    with pytest.raises(SetupError, match=r"train\.spacy holds no entities: there is nothing to learn"):
        check_training_corpus(config, tmp_path / "train.spacy")


def test_schedule_fits_max_steps():
    config = load_config(ROOT / "configs" / "base_config.cfg", interpolate=False)
    assert schedule_overrides(config, 300, 0.1) == {
        "training.optimizer.learn_rate.total_steps": 300,
        "training.optimizer.learn_rate.warmup_steps": 30,
    }
    config["training"]["optimizer"]["learn_rate"] = 1e-4
    assert schedule_overrides(config, 300, 0.1) == {}


@pytest.mark.parametrize(
    "steps,frequency,warmup,message",
    [
        (0, 25, 0.1, "max_steps must be a positive number of training steps, not 0"),
        (-5, 25, 0.1, "max_steps must be a positive number of training steps, not -5"),
        (100, 0, 0.1, "eval_frequency must be a positive number of steps, not 0"),
        (100, 25, 1.0, "warmup_ratio must be at least 0 and below 1, not 1.0"),
    ],
)
def test_step_settings_that_cannot_train_are_refused(steps, frequency, warmup, message):
    with pytest.raises(SetupError, match=message):
        check_steps(steps, frequency, warmup)
    with pytest.raises(
        SetupError, match="confidence_samples must be 0 .one pass. or a number of dropout passes, not -1"
    ):
        check_steps(100, 25, 0.1, confidence_samples=-1)


def test_calibrate_with_dropout_samples_stores_them_or_says_why_not(trf_nlp, tmp_path, capsys):
    import json

    import spacy
    from spacy.tokens import DocBin
    from support.pipelines import trained_nlp

    from iob_ner.training.calibration import calibrate

    nlp, gold = trf_nlp
    nlp.to_disk(tmp_path / "trf")
    DocBin(docs=gold).to_disk(tmp_path / "dev.spacy")
    result = calibrate(tmp_path / "trf", tmp_path / "dev.spacy", tmp_path / "trf.json", samples=2)
    ner = spacy.load(tmp_path / "trf").get_pipe("ner")
    assert result["samples"] == ner.samples == 2 and ner.score_temperature == result["samples_temperature"]
    assert json.loads((tmp_path / "trf.json").read_text())["samples_temperature"] == result["samples_temperature"]
    assert "means over 2 dropout passes" in capsys.readouterr().out
    trained_nlp(20)[0].to_disk(tmp_path / "cpu")  # token_ner on spaCy's tok2vec: nothing to sample
    result = calibrate(tmp_path / "cpu", tmp_path / "dev.spacy", tmp_path / "cpu.json", samples=2)
    assert result["samples"] == 0 and spacy.load(tmp_path / "cpu").get_pipe("ner").samples == 0
    assert "dropout samples need a transformer" in capsys.readouterr().out


def test_a_broken_config_names_the_file_and_the_line(tmp_path):
    broken = tmp_path / "config.cfg"
    broken.write_text((ROOT / "configs" / "base_config.cfg").read_text().replace("[training]\n", "[training\n"))
    with pytest.raises(ConfigFileError) as err:
        read_config(broken, fix=CREATE_CONFIG_FIX)
    assert str(err.value).startswith(f"{broken} is not a valid config: ")
    assert "create-config" in str(err.value) and "\n" not in str(err.value)


def test_train_script_fails_in_one_line_without_training(tmp_path, fixture_path):
    """max_steps 0 would train forever in spaCy: the script stops at once, exit 1, no traceback."""
    convert_iob(fixture_path("iobes.tsv"), tmp_path / "c")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/train.py",
            "configs/config.cfg",
            str(tmp_path / "training"),
            "--train",
            str(tmp_path / "c.spacy"),
            "--dev",
            str(tmp_path / "c.spacy"),
            "--max-steps",
            "0",
            "--gpu-id",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "max_steps must be a positive number" in result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "training").exists()


CTRL_C_CHILD = """
import sys
import torch
from iob_ner.training.train import _said_at_once_on_ctrl_c
matrix = torch.randn(2500, 2500) / 50
with _said_at_once_on_ctrl_c("Interrupted: the earlier model stays"):
    print("inside", flush=True)
    torch.linalg.matrix_power(matrix, 2**24 - 1)  # one torch call of seconds: no bytecode runs meanwhile
    print("the operation ended", flush=True)
"""


def test_ctrl_c_is_answered_within_a_quarter_second_even_inside_one_long_torch_operation(tmp_path):
    """`spacy project run` kills its child 0.25 s after Ctrl-C; a plain Python handler waits for the torch
    call to return (CI: the line never came), the wake-up thread prints at once."""
    import signal
    import time

    script = tmp_path / "child.py"
    script.write_text(CTRL_C_CHILD, encoding="utf8")
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout.readline().strip() == "inside"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    time.sleep(0.25)  # what subprocess.run, under weasel, waits before it kills
    child.kill()
    output = child.communicate(timeout=30)[0]
    assert "the operation ended" not in output, "the torch call was too short to show anything"
    assert output.count("Interrupted: the earlier model stays") == 1, output
