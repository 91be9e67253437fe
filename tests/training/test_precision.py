"""[system] precision: bf16 autocast runs the transformer's forward in bf16 and hands float32 to the head (on
the CPU too), trains the sample as well as fp32 does, and spaCy's fp16 `mixed_precision = true` is refused in
one sentence before anything trains."""

import json
import re
import subprocess
import sys
from contextlib import contextmanager

import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import load_config, load_model_from_config
from support.paths import ROOT
from thinc.api import Adam

from iob_ner.corpus.convert import convert_iob
from iob_ner.pipeline.layers.transformer import transformer_shims
from iob_ner.training import precision
from iob_ner.util.runtime import SetupError, resolve_transformer

CONFIG = ROOT / "configs" / "config.cfg"


# --- choosing the precision ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,gpu,native,chosen",
    [
        ("auto", -1, True, "fp32"),  # the CPU stays fp32 unless bf16 is asked for
        ("bf16", -1, False, "bf16"),
        ("fp32", -1, True, "fp32"),
        ("auto", 0, True, "bf16"),  # a GPU with native bf16 (A100, H100, ...)
        ("auto", 0, False, "fp32"),  # an older GPU
        ("fp32", 0, True, "fp32"),
    ],
)
def test_auto_is_bf16_only_on_a_gpu_that_supports_it(monkeypatch, setting, gpu, native, chosen):
    monkeypatch.setattr(precision, "_gpu_has_bf16", lambda gpu, **kw: native)
    assert precision.choose(setting, gpu) == chosen


def test_bf16_asked_for_on_a_gpu_without_it_is_one_sentence(monkeypatch):
    monkeypatch.setattr(precision, "_gpu_has_bf16", lambda gpu, **kw: False)
    with pytest.raises(SetupError, match=r'^\[system\] precision = "bf16" was asked for, but GPU 0 has no bf16'):
        precision.choose("bf16", 0)


def test_the_setting_is_read_from_the_config_overrides_first(tmp_path):
    config = load_config(CONFIG, interpolate=False)
    assert config["system"]["precision"] == "auto"
    assert precision.check_config(CONFIG, config) == "auto"
    assert precision.check_config(CONFIG, config, {"system.precision": "bf16"}) == "bf16"
    del config["system"]["precision"]  # a config.cfg written before the setting existed
    assert precision.check_config(CONFIG, config) == "auto"
    config["system"]["precision"] = "fp16"
    with pytest.raises(
        SetupError, match=r"^\[system\] precision in .*config\.cfg must be one of auto, bf16, fp32, not 'fp16'$"
    ):
        precision.check_config(CONFIG, config)


def test_the_chosen_precision_is_said_in_one_line():
    assert precision.describe("bf16", "bf16", -1) == (
        'Precision: bf16 autocast around the transformer on the CPU, float32 weights ([system] precision = "bf16")'
    )
    assert precision.describe("fp32", "auto", -1) == (
        'Precision: fp32 on the CPU ([system] precision = "auto": bf16 only on a GPU that supports it)'
    )
    assert precision.describe("bf16", "auto", 0).startswith("Precision: bf16 autocast around the transformer on GPU 0")


# --- spaCy's fp16 is refused -------------------------------------------------------------------------

FP16_SENTENCE = re.compile(
    r"config\.cfg sets mixed_precision = true in \[components\.transformer\.model\], spaCy's fp16 training, "
    r"which stops learning \(dev F 0\.02 on an H100\): set it to false and use \[system\] precision = \"bf16\" "
    r"instead \(\"auto\", the default, picks bf16 on GPUs that support it\)"
)


@pytest.mark.parametrize(
    "in_config,overrides",
    [
        (True, {}),
        (False, {"components.transformer.model.mixed_precision": True}),  # SPACY_CONFIG_OVERRIDES
    ],
)
def test_fp16_mixed_precision_is_refused_in_one_sentence(in_config, overrides):
    config = load_config(CONFIG, interpolate=False)
    config["components"]["transformer"]["model"]["mixed_precision"] = in_config
    with pytest.raises(SetupError) as err:
        precision.check_config(CONFIG, config, overrides)
    assert FP16_SENTENCE.search(str(err.value)) and "\n" not in str(err.value)


def test_train_script_refuses_fp16_before_training(tmp_path, fixture_path):
    config = tmp_path / "config.cfg"
    config.write_text(
        CONFIG.read_text(encoding="utf8").replace("mixed_precision = false", "mixed_precision = true"), encoding="utf8"
    )
    convert_iob(fixture_path("iobes.tsv"), tmp_path / "c")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/train.py",
            str(config),
            str(tmp_path / "training"),
            "--train",
            str(tmp_path / "c.spacy"),
            "--dev",
            str(tmp_path / "c.spacy"),
            "--max-steps",
            "10",
            "--eval-frequency",
            "5",
            "--gpu-id",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = " ".join(result.stdout.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert FP16_SENTENCE.search(output), output
    assert not (tmp_path / "training").exists()


# --- bf16 inside the transformer, float32 at the head (CPU autocast) ------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    """The project's pipeline (configs/config.cfg, embedded transformer), initialized on one sentence."""
    overrides = {"paths.transformer": resolve_transformer("embedded")}
    nlp = load_model_from_config(load_config(CONFIG, overrides=overrides, interpolate=False), auto_fill=True)
    words = ["LiFePO4", "nanoparticles", "were", "made", "by", "a", "sol-gel", "route", "."]
    gold = Doc(nlp.vocab, words=words, ents=["B-MAT", "O", "O", "O", "O", "O", "B-SMT", "I-SMT", "O"])
    examples = [Example(Doc(nlp.vocab, words=words), gold)]
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-4)  # the config's schedule starts at 0: nothing would move
    nlp.update(examples, sgd=optimizer)  # the head starts at zeros, which pass no gradient back: move it once
    return nlp, examples, optimizer


@contextmanager
def recorded_dtypes(nlp):
    """The dtypes of every Linear output inside the transformer, and of what reaches the NER head's softmax."""
    seen = {"linear": set(), "head": set()}
    torch_model = nlp.get_pipe("transformer").model.transformer
    hooks = [
        module.register_forward_hook(lambda m, i, out: seen["linear"].add(out.dtype))
        for module in torch_model.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    softmax = next(node for node in nlp.get_pipe("ner").model.walk() if node.name == "softmax")
    forward = softmax._func

    def recording(model, X, is_train):
        seen["head"].add(str(X.dtype))
        return forward(model, X, is_train)

    softmax._func = recording
    try:
        yield seen
    finally:
        softmax._func = forward
        for hook in hooks:
            hook.remove()


def test_bf16_runs_the_transformer_in_bf16_and_hands_float32_to_the_head(pipeline):
    nlp, examples, optimizer = pipeline
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    linears = [
        m
        for name, m in shim._model.named_modules()  # the pooler's output is not used
        if isinstance(m, torch.nn.Linear) and not name.startswith("pooler")
    ]
    try:
        assert precision.set_precision(nlp, "bf16") == 1
        before = [m.weight.detach().clone() for m in linears]
        with recorded_dtypes(nlp) as training:
            nlp.update(examples, sgd=optimizer)
        assert training == {"linear": {torch.bfloat16}, "head": {"float32"}}
        # spaCy finishes the transformer's update before the head's backprop reaches it, so this step's
        # gradients wait in .grad: they came back through the float32 casts, float32 and not zero
        grads = [m.weight.grad for m in linears]
        assert all(g is not None and g.dtype == torch.float32 and bool(g.abs().sum() > 0) for g in grads)
        nlp.update(examples, sgd=optimizer)
        assert all(not torch.equal(old, m.weight.detach()) for old, m in zip(before, linears))
        assert {p.dtype for p in shim._model.parameters()} == {torch.float32}  # float32 master weights
        with recorded_dtypes(nlp) as predicting:
            doc = nlp("LiFePO4 nanoparticles were made by a sol-gel route .")
        assert predicting == {"linear": {torch.bfloat16}, "head": {"float32"}}
        assert {str(array.dtype) for array in doc._.trf_data.model_output.values()} == {"float32"}  # as stored
    finally:
        assert precision.set_precision(nlp, "fp32") == 1
    assert shim.autocast is None
    with recorded_dtypes(nlp) as fp32:
        nlp.update(examples, sgd=optimizer)
    assert fp32 == {"linear": {torch.float32}, "head": {"float32"}}


# --- bf16 trains the sample as well as fp32 --------------------------------------------------------------

STEPS = 30  # the sample's dev F is about 0.8 at 30 steps on the CPU, in fp32 and in bf16 alike


# Without bf16 in the CPU (AVX512-BF16, AMX), torch emulates it: 15x slower than fp32 here (an AMD EPYC
# without it, measured 2026-11-29), so 30 steps take a quarter of an hour. bf16 is for GPUs and such CPUs.
NATIVE_CPU_BF16 = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


@pytest.mark.slow
@pytest.mark.skipif(not NATIVE_CPU_BF16, reason="this CPU has no native bf16: emulated, 15x slower than fp32")
def test_bf16_trains_the_sample_to_the_dev_f_of_fp32(tmp_path, capsys):
    from iob_ner.training.train import train_pipeline

    for split in ("train", "dev"):
        convert_iob(ROOT / "assets" / f"{split}.tsv", tmp_path / split)
    dev_f = {}
    for setting in ("fp32", "bf16"):
        config = tmp_path / f"{setting}.cfg"
        config.write_text(
            CONFIG.read_text(encoding="utf8").replace('precision = "auto"', f'precision = "{setting}"'), encoding="utf8"
        )
        output = tmp_path / setting
        train_pipeline(
            config=config,
            output=output,
            train=tmp_path / "train.spacy",
            dev=tmp_path / "dev.spacy",
            transformer="embedded",
            gpu_id=-1,
            max_steps=STEPS,
            eval_frequency=STEPS,
            seed=0,
            log_file=output / "log.jsonl",
        )
        assert f"Precision: {setting} " in " ".join(capsys.readouterr().out.split())
        last = json.loads((output / "log.jsonl").read_text(encoding="utf8").splitlines()[-1])
        assert last["step"] == STEPS
        dev_f[setting] = last["scores"]["ents_f"] / 100
    print(f"dev F after {STEPS} steps: {dev_f}")
    assert dev_f["fp32"] > 0.3, dev_f  # it learns at all (0 before training)
    assert abs(dev_f["bf16"] - dev_f["fp32"]) <= 0.05, dev_f
    # the bf16-trained pipeline loads as any other (the config holds only the string) and predicts in float32
    nlp = spacy.load(tmp_path / "bf16" / "model-best")
    assert nlp.config["system"]["precision"] == "bf16"
    assert nlp.get_pipe("transformer").model.layers[0].shims[0].autocast is None


# --- the precision reaches spaCy's own loop through [initialize] after_init ---------------------------

SEEN_AUTOCAST: list = []


def record_autocast(nlp):
    SEEN_AUTOCAST.append(sorted({str(shim.autocast) for shim in transformer_shims(nlp)}))
    return nlp


@pytest.mark.parametrize("runner", ["spacy train", "train_pipeline"])
def test_the_configs_callback_sets_the_precision_in_spacys_loop_and_ours(tmp_path, runner, capsys):
    """spaCy's own `train` and the project's resumable loop: the transformer's forward is in bf16 while it
    trains (seen by [training] before_to_disk), the run says so in its "Speed-ups" line, and the saved
    pipeline loads in float32."""
    from spacy.cli.train import train
    from spacy.util import registry

    from iob_ner.training.train import train_pipeline
    from iob_ner.util.tiny import make_tiny_bert

    registry.callbacks.register("test.record_autocast.v1", func=lambda: record_autocast)
    convert_iob(ROOT / "assets" / "dev.tsv", tmp_path / "dev")
    bert = make_tiny_bert(resolve_transformer("embedded"), tmp_path / "bert")
    config = tmp_path / "config.cfg"
    text = CONFIG.read_text(encoding="utf8").replace('precision = "auto"', 'precision = "bf16"')
    text = text.replace("before_to_disk = null\n", "")
    text += '\n[training.before_to_disk]\n@callbacks = "test.record_autocast.v1"\n'
    config.write_text(text, encoding="utf8")
    SEEN_AUTOCAST.clear()
    dev = str(tmp_path / "dev.spacy")
    settings = {"paths.train": dev, "paths.dev": dev, "paths.transformer": str(bert), "training.max_steps": 2}
    if runner == "spacy train":
        train(config, tmp_path / "out", use_gpu=-1, overrides={**settings, "training.eval_frequency": 2})
    else:
        train_pipeline(
            config=config,
            output=tmp_path / "out",
            train=tmp_path / "dev.spacy",
            dev=tmp_path / "dev.spacy",
            transformer=str(bert),
            gpu_id=-1,
            max_steps=2,
            eval_frequency=2,
            seed=0,
        )
    assert SEEN_AUTOCAST and all(seen == ["bf16"] for seen in SEEN_AUTOCAST), SEEN_AUTOCAST
    said = " ".join(capsys.readouterr().out.split())
    assert "Speed-ups (iob_ner.training_speedups.v1): wordpieces of " in said
    assert "Precision: bf16 autocast around the transformer on the CPU" in said
    nlp = spacy.load(tmp_path / "out" / "model-best")
    assert [shim.autocast for shim in transformer_shims(nlp)] == [None]  # predicts in float32
