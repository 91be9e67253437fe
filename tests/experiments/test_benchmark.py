"""benchmarks/training's --recipes grammar (settings per run, one sentence for each bad part),
benchmarks/host_time's figures on a tiny corpus, and how benchmarks/long_input's predict-long builds its
text and compares entities."""

import pytest
from support.paths import ROOT, load_benchmark, training_benchmark_arguments

from iob_ner.training import precision
from iob_ner.util.runtime import SetupError

benchmark = load_benchmark("training/benchmark_training.py")
Defaults, Run, build_config, effective_settings = (
    benchmark.Defaults,
    benchmark.Run,
    benchmark.build_config,
    benchmark.effective_settings,
)
parse_batch_sizes, parse_runs, plan, run_label = (
    benchmark.parse_batch_sizes,
    benchmark.parse_runs,
    benchmark.plan,
    benchmark.run_label,
)


# --- the --recipes grammar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("token", [("token", 90.0, {})]),
        ("token,transition", [("token", 90.0, {}), ("transition", 90.0, {})]),
        (
            "token@75, transition quickstart@30",
            [("token", 75.0, {}), ("transition", 90.0, {}), ("quickstart", 30.0, {})],
        ),
        ("token:batch=4000@90", [("token", 90.0, {"batch": 4000})]),
        (
            "token:batch=4000/lr=2e-4/precision=bf16@45.5,token:precision=fp32",
            [("token", 45.5, {"batch": 4000, "lr": 2e-4, "precision": "bf16"}), ("token", 90.0, {"precision": "fp32"})],
        ),
        ("quickstart:precision=auto", [("quickstart", 90.0, {"precision": "auto"})]),
        ("token:batcher=words/batch=500", [("token", 90.0, {"batcher": "words", "batch": 500})]),
    ],
)
def test_good_specs_give_each_run_its_settings_and_budget(spec, expected):
    runs = parse_runs(spec, budget=90.0)
    assert [(r.recipe, r.budget, r.settings) for r in runs] == expected
    assert all(r.spec and "," not in r.spec for r in runs)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("", "--recipes '' names no recipe: use e.g. token,transition"),
        ("token,tok", "unknown recipe 'tok' in 'tok': use token, transition, quickstart"),
        (
            "token:batch=4000,lr=2e-4",
            "'lr=2e-4' is not a recipe: separate settings with '/' (token:batch=4000/lr=2e-4) and runs with commas",
        ),
        ("token:@90", "'token:@90' has a ':' with no settings after it: write e.g. token:batch=4000"),
        (
            "token:batch",
            "the setting 'batch' in 'token:batch' must be KEY=VALUE, with KEY one of batch, lr, precision, batcher",
        ),
        (
            "token:batch=",
            "the setting 'batch=' in 'token:batch=' must be KEY=VALUE, with KEY one of batch, lr, precision, batcher",
        ),
        ("token:eval=200", "unknown setting 'eval' in 'token:eval=200': use batch, lr, precision, batcher"),
        ("token:batch=0", "batch=0 in 'token:batch=0' must be a positive whole number of words"),
        ("token:batch=4e3", "batch=4e3 in 'token:batch=4e3' must be a positive whole number of words"),
        ("token:lr=-1", "lr=-1 in 'token:lr=-1' must be a positive number"),
        ("token:lr=nan", "lr=nan in 'token:lr=nan' must be a positive number"),
        ("token:precision=fp16", "precision=fp16 in 'token:precision=fp16' must be one of auto, bf16, fp32"),
        ("token:batcher=sorted", "batcher=sorted in 'token:batcher=sorted' must be one of padded, words"),
        ("token:lr=1e-4/lr=2e-4", "'token:lr=1e-4/lr=2e-4' sets lr twice"),
        ("token@0", "the budget '0' in 'token@0' must be a positive number of seconds (one '@' per run)"),
        ("token@", "the budget '' in 'token@' must be a positive number of seconds (one '@' per run)"),
        ("token@90@30", "the budget '90@30' in 'token@90@30' must be a positive number of seconds (one '@' per run)"),
        (
            "quickstart:batch=4000",
            "batch in 'quickstart:batch=4000' does not apply: quickstart keeps the tutorial's "
            "batcher and learning-rate schedule (only precision can be set)",
        ),
    ],
)
def test_a_bad_spec_is_one_sentence_naming_the_bad_part(spec, message):
    with pytest.raises(SetupError) as err:
        parse_runs(spec, budget=90.0)
    assert str(err.value) == message


def test_infer_batch_sizes_keep_their_order_so_the_first_one_fills_the_old_key():
    assert parse_batch_sizes("256,64") == [256, 64]
    assert parse_batch_sizes(" 64 ,") == [64]
    for bad in ("", "0", "64,x", "-1", "1.5"):
        with pytest.raises(SetupError, match="must be positive whole numbers separated by commas"):
            parse_batch_sizes(bad)


def test_settings_reach_the_config_and_the_table(tmp_path):
    run = parse_runs("token:batch=4000/lr=2e-4/precision=bf16@45", budget=90.0)[0]
    config = build_config(run.recipe, tmp_path, "model", run.settings["batch"], run.settings["lr"])
    settings = effective_settings(run, config, "bf16")
    assert settings == {
        "batch_words": 4000,
        "batcher": "spacy.batch_by_padded.v1",
        "learn_rate": 2e-4,
        "precision": "bf16",
        "chosen_precision": "bf16",
    }
    entry = {"recipe": "token", "budget_s": 45.0, "settings": settings}
    assert run_label(entry) == "token padded batch=4000 lr=0.0002 bf16 (45 s)"
    words = parse_runs("token:batcher=words/batch=4000", budget=90.0)[0]
    config = build_config(words.recipe, tmp_path, "model", words.settings["batch"], None, words.settings["batcher"])
    assert config["training"]["batcher"]["@batchers"] == "spacy.batch_by_words.v1"
    entry = {"recipe": "token", "budget_s": 45.0, "settings": effective_settings(words, config, "fp32")}
    assert run_label(entry) == "token batch=4000 lr=0.0001 fp32 (45 s)"
    quick = build_config("quickstart", tmp_path, "model", 4000, 2e-4)  # the CLI defaults leave quickstart alone
    assert effective_settings(Run("quickstart", 1.0), quick, "fp32")["batch_words"] == 2000
    assert effective_settings(Run("quickstart", 1.0), quick, "fp32")["learn_rate"] == 5e-5


def test_precision_is_chosen_per_run_before_anything_trains(monkeypatch):
    runs = parse_runs("token,token:precision=bf16,token:precision=fp32", budget=1.0)
    assert plan(runs, Defaults(None, None, "auto", (256,)), gpu=-1) == ["fp32", "bf16", "fp32"]
    monkeypatch.setattr(precision, "_gpu_has_bf16", lambda gpu, **kw: False)
    with pytest.raises(SetupError, match="has no bf16 support"):
        plan(runs, Defaults(None, None, "auto", (256,)), gpu=0)


def test_the_cli_stops_on_a_bad_spec_in_one_line_before_converting(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.benchmark(**training_benchmark_arguments(tmp_path / "out.json", recipes="token:batch=lots"))
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert "batch=lots in 'token:batch=lots' must be a positive whole number of words" in " ".join(out.split())
    assert out.count("\u2718") == 1 and not (tmp_path / "out.json").exists()  # one failure line (wasabi may wrap it)


# --- host time ----------------------------------------------------------------------------------------


def test_host_time_runs_two_steps_with_figures_that_add_up(tmp_path):
    host_time = load_benchmark("host_time/benchmark_host_time.py")
    AREAS, measure_host_time = host_time.AREAS, host_time.measure_host_time
    from iob_ner.corpus.convert import convert_iob

    convert_iob(ROOT / "assets" / "train.tsv", tmp_path / "train", write_json=False)
    report = measure_host_time(corpus=tmp_path / "train.spacy", steps=2, warmup=1)
    assert report["steps"] == 2 and report["words_per_step"] > 0
    assert 0 < report["torch_ms"] < report["step_ms"] and report["host_ms"] > 0
    assert report["host_ms"] + report["torch_ms"] == pytest.approx(report["step_ms"], abs=0.02)
    per_1000 = 1000 * report["host_ms"] / report["words_per_step"]
    assert report["host_ms_per_1000_words"] == pytest.approx(per_1000, rel=0.01)
    areas = report["areas"]
    assert set(areas) == {*AREAS, "other"}
    assert sum(a["ms_per_step"] for a in areas.values()) == pytest.approx(report["step_ms"], abs=0.1)
    assert areas["torch"]["ms_per_step"] == pytest.approx(report["torch_ms"], abs=0.01)
    for name in ("optimizer_adam", "optimizer_other", "token_ner", "token_ner_gold", "spacy_transformers"):
        assert areas[name]["ms_per_step"] > 0, name  # every wrapped entry point was reached
    # the training documents were tokenized once, before the steps, as the training loop does
    assert areas["hf_tokenizer"]["ms_per_step"] == 0 and report["tokenized_once"]["spans"] > 0
    assert areas["other"]["ms_per_step"] > -0.5  # the areas do not overlap (nested time counted once)


def test_predict_long_joins_whole_sentences_into_one_line_and_places_each_difference(tmp_path):
    bench = load_benchmark("long_input/benchmark_predict_long.py")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("A b .\nC d e .\n\nF .\n", encoding="utf8")
    assert bench.long_line(sentences, 20) == "A b . C d e . F ."  # the next "A b ." would pass 20
    assert bench.long_line(sentences, 35) == "A b . C d e . F . A b . C d e ."  # from the start again
    reference = {(0, 3, "X", "abc"): 0.5, (10, 12, "Y", "de"): 0.2}
    other = {(0, 3, "X", "abc"): 0.5001, (11, 12, "Y", "e"): 0.3}
    found = bench.compare(reference, other, cuts=[10, 400])
    assert (found["same"], found["identical"], found["max_score_difference"]) == (1, False, 0.0001)
    assert [(e["text"], e["to_cut"]) for e in found["only_reference"]] == [("de", 0)]
    assert [(e["text"], e["to_cut"]) for e in found["only_other"]] == [("e", 1)]
    assert bench.piece_cuts("Aa bb. Cc dd. Ee ff.", 8) == [7, 14]
