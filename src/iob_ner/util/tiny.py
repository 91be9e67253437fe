"""A tiny random transformer (1 BERT layer of width 64) with a real model's vocabulary and tokenizer, and a
training setup around it: the CPU stand-in for a real transformer in tests and in the host-time benchmark,
where what is measured is everything but the transformer's own arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry, resolve_dot_names
from transformers import AutoTokenizer, BertConfig, BertModel

from ..training.precision import set_precision
from .errors import SetupError

TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}


def make_tiny_bert(source: str, out: Path) -> Path:
    """A random BERT, 1 layer of width 64, with `source`'s vocabulary and tokenizer, saved under `out`."""
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    torch.manual_seed(0)  # same weights every run
    model = BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **TINY_BERT))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_recipe(config: Path, corpus: Path, model: Path, batch_words: Optional[int] = None):
    """`config` (configs/config.cfg: the default recipe), reading `corpus` and the tiny model; `batch_words` replaces its
    constant batch size (800 padded wordpieces, about 500 words)."""
    # dev is never read here (no evaluation), but the reader needs a path
    overrides: Dict[str, Any] = {"paths.train": str(corpus), "paths.dev": str(corpus), "paths.transformer": str(model)}
    if batch_words:
        overrides["training.batcher.size.rate"] = batch_words
    return load_config(config, overrides=overrides, interpolate=False)


def tiny_training_setup(config: Path, corpus: Path, model: Path, batch_words: Optional[int] = None):
    """The initialized fp32 pipeline, its training examples, the optimizer, dropout and the batcher."""
    nlp = init_nlp(load_recipe(config, corpus, model, batch_words), use_gpu=-1)
    set_precision(nlp, "fp32")  # as train would on the CPU ([system] precision = "auto")
    interpolated = nlp.config.interpolate()
    T = registry.resolve(interpolated["training"], schema=ConfigSchemaTraining)
    (train_corpus,) = resolve_dot_names(interpolated, [T["train_corpus"]])
    examples = list(train_corpus(nlp))
    if not examples:
        raise SetupError(f"{corpus} holds no training documents")
    return nlp, examples, T["optimizer"], T["dropout"], T["batcher"]
