"""train.py's checks before spaCy trains: no silent document drops, a schedule that fits max_steps."""
from spacy.util import load_config

from conftest import ROOT
from iob_ner.corpus import convert_iob
from train import check_length_limit, schedule_overrides


def test_a_length_limit_that_drops_documents_names_them(tmp_path, fixture_path, capsys):
    convert_iob(fixture_path("sentences.tsv"), tmp_path / "train", sents_per_doc=2)
    config = load_config(ROOT / "configs" / "base_config.cfg", interpolate=False)
    check_length_limit(config, tmp_path / "train.spacy")
    assert capsys.readouterr().out == ""
    config["corpora"]["train"]["max_length"] = 1
    check_length_limit(config, tmp_path / "train.spacy")
    out = capsys.readouterr().out.replace("\n", " ")
    assert "leaves 2 training document(s) out: #0 (2 tokens), #1 (2 tokens)" in out


def test_schedule_fits_max_steps():
    config = load_config(ROOT / "configs" / "base_config.cfg", interpolate=False)
    assert schedule_overrides(config, 300, 0.1) == {
        "training.optimizer.learn_rate.total_steps": 300, "training.optimizer.learn_rate.warmup_steps": 30}
    config["training"]["optimizer"]["learn_rate"] = 1e-4
    assert schedule_overrides(config, 300, 0.1) == {}
