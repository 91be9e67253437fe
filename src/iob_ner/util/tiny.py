"""Tiny random transformers and a training setup around them: the CPU stand-ins for real transformers in
tests and in the host-time benchmark, where what is measured is everything but the transformer's own
arithmetic.

- `make_tiny_bert`: 1 BERT layer of width 64 with a real model's vocabulary and tokenizer (the embedded
  MiniLM's);
- `make_tiny(family, folder, texts)`: a model of one of `FAMILIES` (1 layer of width 64), its tokenizer
  trained on `texts` with `tokenizers` or `sentencepiece` as the family's real models were, saved as a
  Hugging Face folder (config, weights, tokenizer) that `--vars.transformer` takes. Nothing is downloaded:
  tests/test_families.py proves each family against spacy-transformers' own path and every command.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

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


# Each family's tokenizer as its public checkpoints have it, and the model class: BERT uncased (bert-base-uncased,
# the embedded MiniLM) and cased (SciBERT, BioBERT) WordPiece, RoBERTa byte-level BPE (roberta-base, spaCy's
# English quickstart), XLM-R SentencePiece with fairseq's id offset (xlm-roberta-base), DeBERTa-v3 SentencePiece
# (relative positions, no absolute ones), ELECTRA (WordPiece, embeddings narrower than the hidden layers).
FAMILIES = ("bert-uncased", "bert-cased", "roberta", "xlm-roberta", "deberta-v3", "electra")
SENTENCEPIECE_FAMILIES = ("xlm-roberta", "deberta-v3")  # building their tokenizer needs `sentencepiece`
VOCAB_SIZE = 1000  # at most: the trainers stop short of it on a small corpus
MAX_LENGTH = 512  # model_max_length and positions, as the base models have


def make_tiny(family: str, out: Path, texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Path:
    """A random `family` model (1 layer of width 64) with a tokenizer trained on `texts`, saved under `out` as
    a Hugging Face folder (config, weights, tokenizer), the same every run."""
    import torch
    import transformers

    if family not in FAMILIES:
        raise SetupError(f"no tiny transformer family {family!r}: choose one of {', '.join(FAMILIES)}")
    # the trainers write their files in `work`; the tokenizer saves its own under `out` (the SentencePiece
    # model copied from `work`, as the public checkpoints ship it beside tokenizer.json)
    with tempfile.TemporaryDirectory() as work:
        tokenizer = _TOKENIZERS[family](Path(work), [text for text in texts if text.strip()], vocab_size)
        tokenizer.model_max_length = MAX_LENGTH
        tokenizer.save_pretrained(out)
    config_class, model_class, settings = _MODELS[family]
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), **{**TINY_BERT, **settings})
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)  # same weights every run
    getattr(transformers, model_class)(config).save_pretrained(out)
    return Path(out)


def _wordpiece(lowercase: bool, tokenizer_class: str) -> Callable[[Path, List[str], int], Any]:
    """BERT's and ELECTRA's tokenizer: WordPiece over BERT's normalizer and pre-tokenizer."""

    def build(out: Path, texts: List[str], vocab_size: int) -> Any:
        import transformers
        from tokenizers import BertWordPieceTokenizer

        trained = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None if lowercase else False)
        trained.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1)
        trained.save_model(str(out))  # vocab.txt, as the public checkpoints ship it
        return getattr(transformers, tokenizer_class)(
            vocab_file=str(out / "vocab.txt"), do_lower_case=lowercase, strip_accents=None if lowercase else False
        )

    return build


def _byte_level_bpe(out: Path, texts: List[str], vocab_size: int) -> Any:
    """RoBERTa's tokenizer: byte-level BPE (GPT-2's), vocab.json and merges.txt."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    trained.save_model(str(out))
    return RobertaTokenizerFast(vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"))


def _sentencepiece_model(out: Path, texts: List[str], vocab_size: int, **special: Any) -> Path:
    """A SentencePiece unigram model trained on `texts` (the trainer of the XLM-R and DeBERTa-v3 models)."""
    try:
        import sentencepiece
    except ImportError:
        raise SetupError(
            "the XLM-R and DeBERTa-v3 tiny tokenizers are trained with sentencepiece: pip install sentencepiece"
        ) from None
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus holds fewer pieces than asked for
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,  # quiet
        **special,
    )
    path = out / "spm.model"
    path.write_bytes(model.getvalue())
    return path


def _xlm_roberta(out: Path, texts: List[str], vocab_size: int) -> Any:
    """XLM-R's tokenizer: SentencePiece's <unk>, <s>, </s> at 0-2, fairseq's <s>, <pad>, </s>, <unk> put at 0-3
    in front, so every other piece's id is SentencePiece's plus 1, and <mask> last."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(vocab_file=str(_sentencepiece_model(out, texts, vocab_size)))


def _deberta_v3(out: Path, texts: List[str], vocab_size: int) -> Any:
    """DeBERTa-v3's tokenizer: SentencePiece with [PAD], [CLS], [SEP], [UNK] at 0-3 (its ids are the model's:
    no offset), [MASK] added after them."""
    from transformers import DebertaV2TokenizerFast

    special = dict(pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]")
    model = _sentencepiece_model(out, texts, vocab_size, unk_id=3, unk_piece="[UNK]", **special)
    return DebertaV2TokenizerFast(vocab_file=str(model))


_TOKENIZERS: Dict[str, Callable[[Path, List[str], int], Any]] = {
    "bert-uncased": _wordpiece(True, "BertTokenizerFast"),
    "bert-cased": _wordpiece(False, "BertTokenizerFast"),
    "roberta": _byte_level_bpe,
    "xlm-roberta": _xlm_roberta,
    "deberta-v3": _deberta_v3,
    "electra": _wordpiece(True, "ElectraTokenizerFast"),
}
# (config class, model class, settings over TINY_BERT) of each family, as its base models are configured
_ROBERTA = {"max_position_embeddings": MAX_LENGTH + 2, "type_vocab_size": 1}  # fairseq: positions start after pad
_MODELS = {
    "bert-uncased": ("BertConfig", "BertModel", {"max_position_embeddings": MAX_LENGTH}),
    "bert-cased": ("BertConfig", "BertModel", {"max_position_embeddings": MAX_LENGTH}),
    "roberta": ("RobertaConfig", "RobertaModel", _ROBERTA),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", _ROBERTA),
    "deberta-v3": (
        "DebertaV2Config",
        "DebertaV2Model",
        {
            "max_position_embeddings": MAX_LENGTH,
            "relative_attention": True,
            "position_buckets": 256,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
            "max_relative_positions": -1,
            "type_vocab_size": 0,
        },
    ),
    "electra": ("ElectraConfig", "ElectraModel", {"max_position_embeddings": MAX_LENGTH, "embedding_size": 32}),
}


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
