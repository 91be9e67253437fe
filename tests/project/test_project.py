"""End to end: `spacy project run all` on the sample (CPU, few steps), reruns, and the outputs' content."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from support.project import copy_project, run_project

pytestmark = pytest.mark.slow
COMMANDS = ["convert", "create-config", "debug-data", "train", "evaluate", "report"]


def would_run(output: str) -> set:
    """Commands of the `all` workflow that a run (or --dry run) did not skip."""
    return {name for name in COMMANDS if f"Skipping '{name}'" not in output}


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("sample") / "project")
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30")
    return project, output


def test_all_runs_on_the_sample_and_leaves_every_output(sample_project):
    project, output = sample_project
    training = project / "training"
    for name in (
        "model-best",
        "model-last",
        "metrics-dev.json",
        "metrics-test.json",
        "report.md",
        "learning-curve.png",
        "per-label-f.png",
        "errors.html",
        "debug-data.txt",
        "log.jsonl",
        "calibration.json",
    ):
        assert (training / name).exists(), name
    assert "Training on CPU" in output


def test_trained_pipeline_loads_and_predicts_entities(sample_project):
    project, _ = sample_project
    nlp = spacy.load(project / "training" / "model-best")
    doc = nlp("LiFePO4 nanoparticles were prepared by a sol-gel route and showed a specific capacity of 160 mAh/g .")
    assert doc.ents, "the trained pipeline found no entity in a training sentence"
    assert {e.label_ for e in doc.ents} <= {"MAT", "PRO", "SMT", "CMT", "APL"}
    # the temperature fitted on dev after training is inside model-best, and every entity has its probability
    calibration = json.loads((project / "training" / "calibration.json").read_text())
    assert nlp.get_pipe("ner").temperature == pytest.approx(calibration["temperature"])
    scores = doc.spans["token_ner"].attrs["scores"]
    assert len(scores) == len(doc.ents) and all(0.0 <= s <= 1.0 for s in scores)


def test_metrics_count_every_gold_entity(sample_project):
    project, _ = sample_project
    for split in ("dev", "test"):
        metrics = json.loads((project / "training" / f"metrics-{split}.json").read_text())
        report = json.loads((project / "corpus" / f"{split}.report.json").read_text())
        assert metrics["gold_entities"] == report["entities_total"]
        assert sum(s["support"] for s in metrics["per_label"].values()) == report["entities_total"]
        assert (
            sum(sum(row.values()) for gold, row in metrics["confusion"].items() if gold != "(spurious)")
            >= report["entities_total"]
        )
        assert 0.0 <= metrics["typed"]["f"] <= metrics["untyped"]["f"] <= 1.0


def test_report_plots_and_error_view_are_real(sample_project):
    project, _ = sample_project
    import matplotlib.image

    training = project / "training"
    for png in ("learning-curve.png", "per-label-f.png"):
        image = matplotlib.image.imread(training / png)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    report = (training / "report.md").read_text()
    test_metrics = json.loads((training / "metrics-test.json").read_text())
    assert f"| test | {test_metrics['typed']['p']:.3f} |" in report
    assert "](learning-curve.png)" in report and "](errors.html)" in report
    # the share of padding in the transformer's training batches, logged at each evaluation and reported
    shares = [json.loads(line)["padding"] for line in (training / "log.jsonl").read_text().splitlines()]
    assert all(0.0 <= share < 0.5 for share in shares)
    assert f"Padding: {shares[-1]:.1%} of the transformer's wordpiece positions in training" in report
    html = (training / "errors.html").read_text()
    assert html.count("<tr class=") == test_metrics["examples"]
    assert 'class="entities"' in html


def test_second_run_skips_every_finished_step(sample_project):
    """convert always runs (dev and test may be "auto", which no dependency can name); its outputs are
    byte-identical, so every step after it is skipped."""
    project, _ = sample_project
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30")
    assert would_run(output) == {"convert"}
    for name in COMMANDS[1:]:
        assert f"Skipping '{name}': nothing changed" in output, name


def copy_run(source: Path, target: Path) -> Path:
    """A fresh copy of the repository with the corpus, models and lock file of the run in `source`."""
    project = copy_project(target)
    for generated in ("corpus", "training", "project.lock"):
        (shutil.copytree if (source / generated).is_dir() else shutil.copy)(source / generated, project / generated)
    return project


def test_a_package_change_reruns_everything_and_a_docs_change_nothing(sample_project, tmp_path):
    """Each command depends on src/iob_ner as a whole (weasel hashes the folder), so no module list is kept by
    hand: any module changed reruns every step; the docs are no dependency of any."""
    project = copy_run(sample_project[0], tmp_path / "p")
    page = project / "docs" / "training.md"
    page.write_text(page.read_text(encoding="utf8") + "\nA note of the user's.\n", encoding="utf8")
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30", "--dry")
    assert would_run(output) == {"convert"}  # convert always runs (no_skip); nothing else
    module = project / "src" / "iob_ner" / "evaluation" / "metrics.py"
    module.write_text(
        module.read_text(encoding="utf8") + "\n# a change to one module of the package\n", encoding="utf8"
    )
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30", "--dry")
    assert would_run(output) == set(COMMANDS)


def test_editing_the_config_reruns_exactly_what_depends_on_it(sample_project, tmp_path):
    project = copy_run(sample_project[0], tmp_path / "p")
    config = project / "configs" / "config.cfg"
    config.write_text(config.read_text().replace("dropout = 0.1", "dropout = 0.15"))
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30", "--dry")
    assert would_run(output) == {"convert", "create-config", "debug-data", "train"}
    real = run_project(project, "create-config")
    assert "edited by hand: kept" in real and "dropout = 0.15" in config.read_text()

    sample = project / "assets" / "train.tsv"
    sample.write_bytes(sample.read_bytes() + b"\r\n-DOCSTART- -X- O O\r\nNiO\tB-MAT\r\nfilms\tO")
    run_project(project, "convert")
    # an edited sample is no longer the sample: dev and test are carved from it, never the sample's own
    split = json.loads((project / "corpus" / "split.json").read_text())
    assert split["carved"] == ["dev", "test"] and sum(split["documents_per_split"].values()) == 43
    output = run_project(project, "all", ".", "--vars.max_steps", "60", "--vars.eval_frequency", "30", "--dry")
    # the test split changed too (carved now): evaluate and report read it
    assert would_run(output) == {"convert", "debug-data", "train", "evaluate", "report"}


def test_ctrl_c_during_a_retrain_keeps_model_best_and_the_same_command_resumes_exactly(sample_project, tmp_path):
    """SIGINT to the whole `spacy project run train` (as Ctrl-C in a terminal) once the new run has written
    its step-0 checkpoint: the earlier model-best is untouched; `spacy project run train` again (no --force:
    the waiting checkpoint makes weasel rerun it) resumes, and ends where the uninterrupted run ended."""
    import hashlib
    import signal
    import time

    from iob_ner.evaluation.evaluate import evaluate_pipeline

    project = copy_project(tmp_path / "p")
    source = sample_project[0]
    for generated in ("corpus", "training", "project.lock"):
        (shutil.copytree if (source / generated).is_dir() else shutil.copy)(source / generated, project / generated)
    best = project / "training" / "model-best"

    def digest() -> str:
        files = sorted(p for p in best.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    before = digest()
    same_run = ["--vars.max_steps", "60", "--vars.eval_frequency", "30"]  # the sample_project's
    command = [sys.executable, "-m", "spacy", "project", "run", "train", ".", *same_run]
    process = subprocess.Popen(
        [*command, "--force"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    step0 = project / "training" / "checkpoints" / "step-000000" / "random.pkl"
    deadline = time.monotonic() + 300
    while not step0.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert step0.exists(), "the retrain never wrote its step-0 checkpoint"
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0
    assert "Interrupted: training/model-best is still the previous run's (dev F" in output, output[-3000:]
    assert digest() == before

    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=900)
    output = " ".join(result.stdout.split())
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Resuming the interrupted run from its checkpoint at step 0" in output, output[-3000:]
    assert not (project / "training" / "checkpoints").exists()
    resumed, whole = ((p / "training" / "log.jsonl").read_text().splitlines() for p in (project, source))
    for a, b in zip(map(json.loads, resumed), map(json.loads, whole), strict=True):
        assert a["step"] == b["step"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["losses"] == pytest.approx(b["losses"], abs=1e-4)
    earlier = json.loads((source / "training" / "metrics-test.json").read_text())
    again = evaluate_pipeline(model=best, corpus=project / "corpus" / "test.spacy", output=tmp_path / "m.json")
    assert again["typed"] == pytest.approx(earlier["typed"], abs=1e-5)


def test_paths_and_names_with_spaces_reach_the_scripts_whole(tmp_path):
    project = copy_project(tmp_path / "p")
    export = project / "my data" / "job ads.tsv"
    export.parent.mkdir()
    export.write_bytes((project / "assets" / "train.tsv").read_bytes() + b"\r\n-DOCSTART- -X- O O\r\nNiO\tB-MAT")
    run_project(project, "convert", ".", "--vars.train", "my data/job ads.tsv")
    split = json.loads((project / "corpus" / "split.json").read_text())
    assert split["sources"] == {
        "train": "my data/job ads.tsv",
        "dev": "my data/job ads.tsv",
        "test": "my data/job ads.tsv",
    }
    (project / "training" / "model-best").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "package", ".", "--vars.package_name", "my model"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "package name 'my model'" in output and "Traceback" not in output
    assert not (project / "packages").exists() or not any((project / "packages").iterdir())


def test_predict_writes_jsonl_and_iob_that_convert_reads_back(sample_project, tmp_path):
    project, _ = sample_project
    output = run_project(project, "predict")
    assert "0 input(s) skipped" in output.replace("\n", " ")
    records = [json.loads(line) for line in (project / "training" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["id"] for r in records} >= {"a1", "a2", "a3"}
    for record in records:
        for ent in record["entities"]:
            assert record["text"][ent["start"] : ent["end"]] == ent["text"]
    from iob_ner.corpus.convert import convert_iob
    from iob_ner.iob.reader import read_iob

    iob = project / "training" / "predictions.tsv"
    assert iob.read_bytes().startswith(b"-DOCSTART- -X- O O\r\n") and not iob.read_bytes().endswith(b"\n")
    docs = list(read_iob(iob, strict=True))
    back = [sorted((" ".join(d.words[s:e]), label) for s, e, label in d.spans) for d in docs]
    nlp = spacy.load(project / "training" / "model-best")
    want = [
        sorted((" ".join(t.text for t in ent if not t.is_space), ent.label_) for ent in nlp(r["text"]).ents)
        for r in records
    ]
    assert [len(w) for w in want] == [len(r["entities"]) for r in records]
    assert back == want
    report = convert_iob(iob, tmp_path / "again")
    assert sum(report.entities.values()) == sum(len(r["entities"]) for r in records)


def test_predict_reports_bad_jsonl_lines_and_goes_on(sample_project, tmp_path):
    project, _ = sample_project
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "ZnO films were grown ."}\n{"text": broken\n{"title": "no text"}\n{"text": "NiO ."}\n')
    result = subprocess.run(
        [sys.executable, "scripts/predict.py", "training/model-best", str(source), str(tmp_path / "out.jsonl")],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    log = (result.stdout + result.stderr).replace("\n", " ")
    assert f"{source}:2: skipped, not JSON" in log and f'{source}:3: skipped, no "text" string' in log
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_package_installs_in_a_fresh_venv_and_loads_by_name_offline(sample_project, tmp_path):
    project, _ = sample_project
    run_project(project, "package")
    wheels = list((project / "packages").glob("en_ner_model-0.1.0/dist/*.whl"))
    assert len(wheels) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    torch_version = __import__("torch").__version__.split("+")[0]
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", f"torch=={torch_version}", str(wheels[0])],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = (
        "import spacy; nlp = spacy.load('en_ner_model'); doc = nlp('LiFePO4 was made by a sol-gel route .'); "
        "print(nlp.pipe_names, [(e.text, e.label_) for e in doc.ents]); "
        "print(nlp.get_pipe('ner').temperature, [round(float(s), 4) for s in doc.spans['token_ner'].attrs['scores']])"
    )
    result = subprocess.run(
        [python, "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("['transformer', 'ner']")
    # the fitted temperature and the entity probabilities come through `spacy package` unchanged
    here = spacy.load(project / "training" / "model-best")
    doc = here("LiFePO4 was made by a sol-gel route .")
    expected = (
        f"{here.get_pipe('ner').temperature} {[round(float(s), 4) for s in doc.spans['token_ner'].attrs['scores']]}"
    )
    assert result.stdout.splitlines()[1] == expected
    listing = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True).stdout
    assert "iob-ner" not in listing  # the component came inside the package
