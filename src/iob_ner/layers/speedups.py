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

A config whose transformer is spacy-transformers' own architecture still trains, without these; the line
says so. `release(nlp)` lets the caches go after training.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

import torch
from spacy.util import registry, resolve_dot_names
from thinc.api import Config, CupyOps, get_current_ops
from wasabi import msg

from .. import precision
from .fused_adam import fusable
from .pooling import ARCHITECTURE as LISTENER
from .pooling import Listener
from .transformer import ARCHITECTURE, TransformerModel, model_nodes, transformer_models, transformer_shims
from .wordpieces import Cache, cacheable, warm

CALLBACK = "iob_ner.training_speedups.v1"


@registry.callbacks(CALLBACK)
def make_training_speedups(precision: str = precision.DEFAULT, tokenize_once: bool = True) -> Callable[[Any], Any]:
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
    shims = transformer_shims(nlp)
    if precision.set_precision(nlp, chosen) == 0 and chosen == "bf16":
        msg.warn(f"precision bf16: the pipeline has no {ARCHITECTURE} transformer, so it trains in float32")
    got = []
    models = transformer_models(nlp)
    for model in models:
        model.wordpiece_cache = Cache(model.tokenizer) if cacheable(model.tokenizer) else None
    cached = [model for model in models if model.wordpiece_cache is not None]
    if cached:
        start = time.perf_counter()
        readable = tokenize_once and training_docs(nlp) is not None
        spans = sum(warm(model, training_docs(nlp)) for model in cached) if readable else 0
        got.append(
            f"wordpieces of {spans:,} training spans tokenized once ({time.perf_counter() - start:.1f} s)"
            if spans
            else "wordpieces cached as they come"
        )
    if any(isinstance(node, Listener) for node in model_nodes(nlp)):
        got.append("pooling per batch")
    if shims and fusable(_optimizer(nlp)):
        got.append("Adam in one fused call")
    got.append(precision.describe(chosen, setting, gpu))
    plain = [node for node in model_nodes(nlp) if node.name == "transformer" and not isinstance(node, TransformerModel)]
    if plain:
        msg.warn(
            f"The transformer is spacy-transformers' own architecture, not {ARCHITECTURE}: it trains without "
            f"the wordpiece cache, the fused Adam and bf16 (regenerate the config with `spacy project run "
            f"create-config` to get them)"
        )
    msg.info(f"Speed-ups ({CALLBACK}): " + "; ".join(got))
    return got


# The generated config's names and spacy-transformers' own, for a pipeline that must load without this project
SPACY_TRANSFORMERS_NAMES = {
    ARCHITECTURE: "spacy-transformers.TransformerModel.v3",
    LISTENER: "spacy-transformers.TransformerListener.v1",
}


def without_speedups(config: Config) -> Config:
    """`config` with spacy-transformers' architectures in place of this project's and no training callback:
    the same layers and weights (a saved pipeline's files are spacy-transformers' own), loadable where this
    package is not installed (a packaged pipeline ships token_ner alone)."""
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
