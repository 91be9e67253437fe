"""`spacy project run all` on real data, a file of its own so that the two test workers run it beside the
sample project's tests (tests/project/test_project.py), the longest file."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from support.paths import SHARED_DATA
from support.project import copy_project, run_project

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside this checkout")
def test_all_on_ncbi_disease_with_a_model_folder_that_is_gone_afterwards(tmp_path):
    """Real data (one label, no -DOCSTART-), train and test files only (dev carved from train), a transformer
    from a local folder, then load without it. The transformer is the tiny random BERT with the embedded
    model's tokenizer: what is tested is the data and the folder, not the learning (the sample project's
    tests train the embedded MiniLM itself), and the 1,880 documents' evaluations take seconds, not minutes."""
    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert

    project = copy_project(tmp_path / "project")
    model_copy = make_tiny_bert(resolve_transformer("embedded"), tmp_path / "tiny-bert")
    data = SHARED_DATA / "ncbi-disease"
    run_project(
        project,
        "all",
        ".",
        "--vars.train",
        str(data / "train.tsv"),
        "--vars.test",
        str(data / "test.tsv"),
        "--vars.max_steps",
        "50",
        "--vars.eval_frequency",
        "50",
        "--vars.transformer",
        str(model_copy),
    )
    metrics = json.loads((project / "training" / "metrics-test.json").read_text())
    assert metrics["gold_entities"] == 960 and list(metrics["per_label"]) == ["Disease"]  # test untouched
    split = json.loads((project / "corpus" / "split.json").read_text())
    assert split["carved"] == ["dev"] and split["documents_per_split"]["test"] == 940
    assert split["entities"]["train"]["Disease"] + split["entities"]["dev"]["Disease"] == 5134
    shutil.rmtree(model_copy)
    check = (
        "import spacy; nlp = spacy.load('training/model-best'); print(len(nlp('Hereditary breast cancer is common .')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "6"
