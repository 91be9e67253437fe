"""The upgrade check of src/iob_ner/pipeline/layers: the speed-ups mirror a few spacy-transformers and thinc internals
(each is tested for the same numbers elsewhere: test_wordpieces, test_pooling, test_fused_adam). When a new
release changes one of them, these tests fail and say what to compare (docs/training.md#upgrading).

Also: the architectures build spacy-transformers' own structure, plain `spacy train` finds them by name, and
nothing is patched on a class of spaCy, spacy-transformers or thinc."""

import hashlib
import importlib
import inspect

import pytest
import spacy
from spacy.util import load_config, registry
from spacy_transformers.layers import TransformerListener
from spacy_transformers.layers import TransformerModel as SpacyTransformerModel
from spacy_transformers.layers.hf_shim import HFShim
from support.paths import ROOT

from iob_ner.pipeline.layers.pooling import Listener
from iob_ner.pipeline.layers.transformer import TransformerModel, TransformerShim

# What each mirror was written against (spacy-transformers 1.4.0, thinc 8.3.14): the first 16 hex digits of
# the sha256 of the function's source, and where this project mirrors it.
MIRRORED = {
    "spacy_transformers.layers.transformer_model:forward": (
        "36cf9614a5f61b9e",
        "layers/wordpieces.py cached_forward (the same steps, the wordpieces from the cache)",
    ),
    "spacy_transformers.layers.transformer_model:TransformerModel.__init__": (
        "d5e21889621a4d28",
        "layers/transformer.py TransformerModel.__init__ (the same layers and attrs, built from a reference)",
    ),
    "spacy_transformers.data_classes:FullTransformerBatch.split_by_doc": (
        "d96457c58eac143b",
        "layers/wordpieces.py _split_by_doc (token positions by arithmetic)",
    ),
    "spacy_transformers.layers.trfs2arrays:forward": (
        "7cf0c8f509216f59",
        "layers/pooling.py batched_forward (the same pooling, once per batch)",
    ),
    "spacy_transformers.layers.listener:TransformerListener.get_batch_id": (
        "60e278acfca7e884",
        "layers/pooling.py Listener.get_batch_id (the same integer, from arrays)",
    ),
    "thinc.shims.pytorch:PyTorchShim.finish_update": (
        "c47c681239f5e7b4",
        "layers/fused_adam.py shim_finish_update (loss scaler, counts, gradients cleared)",
    ),
    "thinc.optimizers:Optimizer._adam": (
        "898c55dc41167f47",
        "layers/fused_adam.py _fused_step (thinc's Adam arithmetic in torch's fused AdamW)",
    ),
    "thinc.optimizers:Optimizer.__call__": (
        "5bb3f877852ae81a",
        "layers/fused_adam.py _fused_step (gradient clipping per parameter, weight decay after the step)",
    ),
}


def _source_digest(target: str) -> str:
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode("utf8")).hexdigest()[:16]


@pytest.mark.parametrize("target", sorted(MIRRORED))
def test_the_mirrored_internals_are_the_ones_the_speedups_were_written_against(target):
    digest, ours = MIRRORED[target]
    found = _source_digest(target)
    assert found == digest, (
        f"{target} changed in the installed release (source digest {found}, written against {digest}). "
        f"Compare it with {ours}: carry the change over (or check that it does not matter), run "
        f"tests/pipeline/layers/test_wordpieces.py, test_pooling.py and test_fused_adam.py, then put {found} in MIRRORED"
    )


def test_the_transformer_architecture_builds_spacy_transformers_structure():
    from thinc.layers.pytorchwrapper import forward as pytorch_wrapper_forward

    get_spans = registry.span_getters.get("spacy-transformers.strided_spans.v1")(window=16, stride=12)
    make = registry.architectures.get("iob_ner.TransformerModel.v1")
    ours = make("some-model", get_spans, {"use_fast": True}, {}, False, {})
    theirs = SpacyTransformerModel("some-model", get_spans, {"use_fast": True}, {}, False, {})
    assert isinstance(ours, SpacyTransformerModel) and isinstance(ours, TransformerModel)
    assert (ours.name, ours.dim_names, sorted(ours.attrs)) == (theirs.name, theirs.dim_names, sorted(theirs.attrs))
    assert ours.init is theirs.init
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    (our_wrapper,), (their_wrapper,) = ours.layers, theirs.layers
    assert sorted(our_wrapper.attrs) == sorted(their_wrapper.attrs) == ["convert_inputs", "convert_outputs"]
    assert our_wrapper.dim_names == their_wrapper.dim_names
    assert their_wrapper._func is pytorch_wrapper_forward, "spacy-transformers' HFWrapper has another forward now"
    (shim,) = our_wrapper.shims
    assert type(shim) is TransformerShim and isinstance(shim, HFShim)
    assert shim._hfmodel._init_tokenizer_config == {"use_fast": True}
    assert ours.wordpiece_cache is None and shim.autocast is None  # outside training: spacy-transformers' paths


def test_the_listener_architecture_builds_spacy_transformers_structure():
    from thinc.api import reduce_mean

    ours = registry.architectures.get("iob_ner.TransformerListener.v1")(reduce_mean(), 0.5, "*")
    theirs = registry.architectures.get("spacy-transformers.TransformerListener.v1")(reduce_mean(), 0.5, "*")
    assert [node.name for node in ours.walk()] == [node.name for node in theirs.walk()]
    assert ours.ref_names == theirs.ref_names == ("listener",)
    assert type(ours.get_ref("listener")) is Listener and isinstance(ours.get_ref("listener"), TransformerListener)
    (our_pooling,), (their_pooling,) = ([n for n in m.walk() if n.name == "trfs2arrays"] for m in (ours, theirs))
    assert our_pooling.attrs == their_pooling.attrs == {"grad_factor": 0.5}


def test_the_names_are_found_without_importing_the_package_first():
    """Entry points (pyproject.toml): a fresh interpreter resolves the generated config's names, as
    `python -m spacy train configs/config.cfg` and `spacy.load` do."""
    import subprocess
    import sys

    code = (
        "from spacy.util import registry; "
        "registry.architectures.get('iob_ner.TransformerModel.v1'); "
        "registry.architectures.get('iob_ner.TransformerListener.v1'); "
        "registry.callbacks.get('iob_ner.training_speedups.v1'); print('found')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "found", result.stderr[-2000:]


def test_the_generated_config_names_the_speedups():
    config = load_config(ROOT / "configs" / "config.cfg", interpolate=False)
    assert config["components"]["transformer"]["model"]["@architectures"] == "iob_ner.TransformerModel.v1"
    assert config["components"]["ner"]["model"]["tok2vec"]["@architectures"] == "iob_ner.TransformerListener.v1"
    assert config["initialize"]["after_init"]["@callbacks"] == "iob_ner.training_speedups.v1"
    assert config["initialize"]["after_init"]["precision"] == "${system.precision}"


def test_a_pipeline_with_spacy_transformers_names_loads_and_predicts_the_same(tmp_path, tiny_sample):
    """What `package` ships: a trained pipeline's config with spacy-transformers' names in place of this
    project's (`without_speedups`) loads with spacy-transformers' own classes, on the same weights, and
    gives the same token vectors and entities. spacy-transformers' classes are left unchanged."""
    import numpy
    from thinc.api import Config

    from iob_ner.pipeline.layers.speedups import without_speedups
    from iob_ner.util.tiny import tiny_training_setup

    corpus, model = tiny_sample
    nlp, examples, optimizer, dropout, _ = tiny_training_setup(ROOT / "configs" / "config.cfg", corpus, model)
    optimizer.learn_rate = 0.001
    for _ in range(2):  # the head starts at zeros: move it
        nlp.update(examples[:8], drop=dropout, sgd=optimizer)
    nlp.to_disk(tmp_path / "ours")
    nlp.to_disk(tmp_path / "plain")
    config = Config().from_disk(tmp_path / "plain" / "config.cfg", interpolate=False)
    plain_config = without_speedups(config)
    assert config["initialize"]["after_init"]["@callbacks"] == "iob_ner.training_speedups.v1"  # not changed
    plain_config.to_disk(tmp_path / "plain" / "config.cfg")
    text = (tmp_path / "plain" / "config.cfg").read_text(encoding="utf8")
    assert "iob_ner.TransformerModel" not in text and "iob_ner.TransformerListener" not in text
    assert "iob_ner.training_speedups" not in text
    ours, plain = spacy.load(tmp_path / "ours"), spacy.load(tmp_path / "plain")
    assert type(ours.get_pipe("transformer").model) is TransformerModel
    assert type(plain.get_pipe("transformer").model) is SpacyTransformerModel
    assert not any(isinstance(node, Listener) for node in plain.get_pipe("ner").model.walk())
    texts = [eg.reference.text for eg in examples[:6]] + ["LiFePO4 cathodes were coated with carbon ."]
    TransformerShim.group_rows = False  # each batch whole, as spacy-transformers runs it: the same to the bit
    try:
        whole = list(ours.pipe(texts))
    finally:
        TransformerShim.group_rows = True
    for a, b, c in zip(whole, plain.pipe(texts), ours.pipe(texts)):
        numpy.testing.assert_array_equal(
            a._.trf_data.model_output.last_hidden_state, b._.trf_data.model_output.last_hidden_state
        )
        real = b._.trf_data.wordpieces.attention_mask.astype(bool)  # grouped: the real positions, to rounding
        numpy.testing.assert_allclose(
            c._.trf_data.model_output.last_hidden_state[real],
            b._.trf_data.model_output.last_hidden_state[real],
            atol=1e-5,
        )
        assert [(e.start_char, e.end_char, e.label_) for e in a.ents] == [
            (e.start_char, e.end_char, e.label_) for e in b.ents
        ]
        assert [(e.start_char, e.end_char, e.label_) for e in c.ents] == [
            (e.start_char, e.end_char, e.label_) for e in b.ents
        ]
    assert TransformerListener.get_batch_id.__func__.__module__ == "spacy_transformers.layers.listener"
    assert "get_batch_id" in vars(TransformerListener)


def test_a_config_without_the_names_is_said_to_lack_them(tmp_path):
    """`lacking`: what train (for a config without the callback) and the callback warn about."""
    from thinc.api import Config

    from iob_ner.pipeline.layers.speedups import lacking, lacking_message, without_speedups

    ours = Config().from_disk(ROOT / "configs" / "config.cfg", interpolate=False)
    assert lacking(ours) == []
    missing = lacking(without_speedups(ours))
    assert missing == ["iob_ner.TransformerModel.v1", "iob_ner.TransformerListener.v1", "iob_ner.training_speedups.v1"]
    assert "regenerate it with `spacy project run create-config`" in lacking_message(missing)


def test_a_bad_precision_is_refused_by_spacys_config_check():
    """Plain `spacy train` shows spaCy's config error table for it, not a traceback."""
    from thinc.api import ConfigValidationError

    section = {"after_init": {"@callbacks": "iob_ner.training_speedups.v1", "precision": "bf16x"}}
    with pytest.raises(ConfigValidationError, match="precision"):
        registry.resolve(section)
    assert callable(registry.resolve({"a": {**section["after_init"], "precision": "bf16"}})["a"])
