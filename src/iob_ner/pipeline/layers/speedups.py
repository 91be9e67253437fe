"""`iob_ner.training_speedups.v1`: the `[initialize] after_init` callback that readies a pipeline to train.

spaCy calls it at the end of `nlp.initialize()`, in `python -m spacy train` as in `spacy project run train`
(the generated config names it, with `precision = ${system.precision}`). On the pipeline's
`iob_ner.TransformerModel.v1` transformers it:

- sets the precision of their forward pass (`[system] precision`: "auto", "bf16" or "fp32", see
  `precision.choose`), a setting of this process that is never saved: a trained pipeline predicts in float32;
- attaches a wordpiece cache where the tokenizer allows one and tokenizes the training corpus into it once
  (`layers.wordpieces`);
- and says in one line what the run gets: the cache, the batched pooling of `iob_ner.TransformerListener.v1`,
  the fused Adam of `layers.fused_adam` (for thinc's plain Adam), the precision.

A config that names spacy-transformers' own architectures still trains, without these; a warning says so
(`lacking`: here, and in `train` for a config without this callback). `release(nlp)` lets the caches go after training.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

import torch
from spacy.util import dict_to_dot, registry, resolve_dot_names
from thinc.api import Config, CupyOps, get_current_ops
from wasabi import msg

from ...training import precision
from ...training.precision import Setting
from .fused_adam import fusable
from .pooling import ARCHITECTURE as LISTENER
from .pooling import Listener
from .transformer import ARCHITECTURE, model_nodes, transformer_models
from .wordpieces import Cache, cacheable, warm

CALLBACK = "iob_ner.training_speedups.v1"


@registry.callbacks(CALLBACK)
def make_training_speedups(precision: Setting = precision.DEFAULT, tokenize_once: bool = True) -> Callable[[Any], Any]:
    """The after_init callback: `install(nlp, precision, tokenize_once)`."""

    def after_init(nlp: Any) -> Any:
        install(nlp, precision, tokenize_once=tokenize_once)
        return nlp

    return after_init


def install(nlp: Any, setting: str, *, tokenize_once: bool = True) -> List[str]:
    """Ready `nlp` to train (see the module's docstring); what it gets, as the line it prints says."""
    precision.check_config("the training config", nlp.config, {precision.KEY: setting})  # one sentence
    gpu = active_gpu()
    chosen = precision.choose(setting, gpu)
    shims = precision.set_precision(nlp, chosen)
    if shims == 0 and chosen == "bf16":
        msg.warn(f"precision bf16: the pipeline has no {ARCHITECTURE} transformer, so it trains in float32")
    got = []
    cached = _attach_caches(nlp, tokenize_once)
    if cached is not None:
        got.append(cached)
    if any(isinstance(node, Listener) for node in model_nodes(nlp)):
        got.append("pooling per batch")
    if shims and fusable(_optimizer(nlp)):
        got.append("Adam in one fused call")
    got.append(precision.describe(chosen, setting, gpu))
    missing = lacking(nlp.config)
    if missing:
        msg.warn(lacking_message(missing))
    msg.info(f"Speed-ups ({CALLBACK}): " + "; ".join(got))
    return got


def _attach_caches(nlp: Any, tokenize_once: bool) -> Optional[str]:
    """A wordpiece cache on each transformer whose tokenizer allows one, the training corpus tokenized into
    it; what was done, in words, or None where no cache fits."""
    start = time.perf_counter()
    models = transformer_models(nlp)
    for model in models:
        model.wordpiece_cache = Cache(model.tokenizer) if cacheable(model.tokenizer) else None
    cached = [model for model in models if model.wordpiece_cache is not None]
    if not cached:
        return None
    spans = 0
    for model in cached if tokenize_once else ():
        docs = training_docs(nlp)  # a generator: read again for each transformer
        if docs is None:
            break
        spans += warm(model, docs)
    if not spans:
        return "wordpieces cached as they come"
    return f"wordpieces of {spans:,} training spans tokenized once ({time.perf_counter() - start:.1f} s)"


def lacking(config: Any) -> List[str]:
    """The speed-up names that `config` (a training config) does not use: an older or hand-written config."""
    names = {value for key, value in dict_to_dot(dict(config)).items() if key.split(".")[-1].startswith("@")}
    return [name for name in (ARCHITECTURE, LISTENER, CALLBACK) if name not in names]


def lacking_message(missing: List[str], config: str = "The config") -> str:
    return (
        f"{config} does not name {', '.join(missing)}: it trains without what they bring (the wordpiece "
        f"cache, pooling per batch, the fused Adam and bf16 come with them; regenerate it with `spacy project "
        f"run create-config`, or copy those sections from configs/base_config.cfg)"
    )


WORDPIECE_COUNT = "iob_ner.wordpiece_count.v1"  # training/batching.py: the batcher's length in wordpieces

# The generated config's names and spacy-transformers' own, for a pipeline that must load without this project
SPACY_TRANSFORMERS_NAMES = {
    ARCHITECTURE: "spacy-transformers.TransformerModel.v3",
    LISTENER: "spacy-transformers.TransformerListener.v1",
}


def without_speedups(config: Config) -> Config:
    """`config` with spacy-transformers' architectures in place of this project's and no training callback:
    the same layers and weights (a saved pipeline's files are spacy-transformers' own), loadable where this
    package is not installed (a packaged pipeline ships token_ner alone); the batcher counts spaCy tokens."""
    config = Config().from_str(config.to_str(), interpolate=False)  # a copy, nested sections included

    def rename(section: Any) -> None:
        if isinstance(section, dict):
            if section.get("@architectures") in SPACY_TRANSFORMERS_NAMES:
                section["@architectures"] = SPACY_TRANSFORMERS_NAMES[section["@architectures"]]
            for value in section.values():
                rename(value)

    rename(config)
    after_init = config.get("initialize", {}).get("after_init")
    if isinstance(after_init, dict) and after_init.get("@callbacks") == CALLBACK:
        config["initialize"]["after_init"] = None
    batcher = config.get("training", {}).get("batcher")
    if isinstance(batcher, dict) and isinstance(batcher.get("get_length"), dict):
        if batcher["get_length"].get("@misc") == WORDPIECE_COUNT:  # spaCy's batcher counts spaCy tokens instead
            batcher["get_length"] = None
    return config


def release(nlp: Any) -> None:
    """Let the pipeline's wordpiece caches go (after training: a loaded pipeline has none)."""
    for model in transformer_models(nlp):
        model.wordpiece_cache = None


def active_gpu() -> int:
    """The GPU spaCy trains on (its id), or -1 for the CPU."""
    if isinstance(get_current_ops(), CupyOps):
        return torch.cuda.current_device()
    return -1


def training_docs(nlp: Any) -> Optional[Any]:
    """The training corpus's documents, as the loop will read them; None where the config names no corpus
    that can be read now (a pipeline initialized outside training) or streams it (max_epochs = -1)."""
    config = nlp.config.interpolate()
    training = config.get("training", {})
    if training.get("max_epochs", 0) < 0 or not training.get("train_corpus"):
        return None
    section = config
    for part in training["train_corpus"].split("."):
        section = section.get(part, {})
    if "path" in section and section["path"] is None:
        return None
    (corpus,) = resolve_dot_names(config, [training["train_corpus"]])
    return (eg.predicted for eg in corpus(nlp))


def _optimizer(nlp: Any) -> Any:
    """The optimizer the config's [training] names (only to say whether its Adam is fused)."""
    section = nlp.config.interpolate().get("training", {}).get("optimizer")
    return registry.resolve({"optimizer": section})["optimizer"] if section else None
