"""Wordpieces and their alignment, computed once per span of text for a whole training run.

Every training step, spacy-transformers tokenizes each span of the batch with the Hugging Face tokenizer
(a Python call per batch, then `convert_ids_to_tokens` per span) and aligns the wordpieces to spaCy's tokens
token by token in Python: ~12 ms of host time per 500-word step on one CPU core, repeated every epoch for
the same texts (benchmarks/host_time). The Hugging Face Trainer tokenizes its dataset once, before
training; this module does the same for spaCy's loop:

- a `Cache` attached to the transformer (`iob_ner.TransformerModel.v1`'s `wordpiece_cache`, by the training
  callback `iob_ner.training_speedups.v1`) holds each span's wordpieces, offsets and token alignment, keyed
  by the span's text and token boundaries; `cached_forward` builds the padded batch and the alignment from
  them (spacy-transformers' `forward` otherwise, step for step);
- `warm(model, docs)` fills the cache for the training documents in large batches before the first step
  (one tokenizer call per 1,000 spans, ~10x cheaper per span than a step's);
- anything the cache cannot reproduce exactly (a slow tokenizer without offsets, left padding: not
  `cacheable`) gets no cache and takes spacy-transformers' own forward. Only the running process holds
  it: nothing is saved with the pipeline, and a loaded pipeline (predict, serve) has none.

The batch it builds is spacy-transformers' to the last index: tests/pipeline/layers/test_wordpieces.py compares both on
every document of a corpus.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Optional

import numpy
import torch
from spacy.attrs import ORTH, SPACY
from spacy_transformers.align import get_span2wp_from_offset_mapping
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData, WordpieceBatch
from spacy_transformers.layers.transformer_model import forward, huggingface_tokenize
from spacy_transformers.truncate import truncate_oversize_splits
from spacy_transformers.util import log_batch_size, log_gpu_memory, maybe_flush_pytorch_cache
from thinc.api import NumpyOps, torch2xp
from thinc.types import Ragged
from transformers.tokenization_utils_fast import PreTrainedTokenizerFast
from transformers.utils import ModelOutput

# Spans kept at most (~2 KB each for a 30-token sentence): bounds the memory on a very large corpus, whose
# spans past the limit are tokenized every step as before.
MAX_SPANS = 500_000
WARM_BATCH = 1000


class Entry(NamedTuple):
    """One span's tokenization: its wordpieces unpadded and, per (spaCy token, wordpiece) pair of the
    alignment, the token's index in the span and the wordpiece's index in the row."""

    input_ids: numpy.ndarray
    token_type_ids: Optional[numpy.ndarray]
    strings: List[str]
    length: int  # spacy-transformers' length: the strings that are not the pad token
    token_index: numpy.ndarray
    wordpiece_index: numpy.ndarray


class Cache:
    def __init__(self, tokenizer: Any, max_spans: int = MAX_SPANS) -> None:
        self.tokenizer = tokenizer
        self.max_spans = max_spans
        self.entries: Dict[bytes, Entry] = {}

    def entries_for(self, spans: List[Any]) -> List[Entry]:
        """Each span's entry, tokenizing the spans not yet cached in one call."""
        keys = [_key(span) for span in spans]
        missing = {key: span for key, span in zip(keys, spans) if key not in self.entries}
        if missing:
            fresh = dict(zip(missing, _tokenize(self.tokenizer, list(missing.values()))))
            if len(self.entries) + len(fresh) > self.max_spans:  # full: these entries serve this batch only
                return [self.entries.get(key) or fresh[key] for key in keys]
            self.entries.update(fresh)
        return [self.entries[key] for key in keys]


def cacheable(tokenizer: Any) -> bool:
    """A fast tokenizer (offsets) that pads on the right: the cases whose batches this module rebuilds."""

    return isinstance(tokenizer, PreTrainedTokenizerFast) and tokenizer.padding_side == "right"


def warm(model: Any, docs: Iterable[Any], batch_size: int = WARM_BATCH) -> int:
    """Tokenize the spans of `docs` (as `model`, a transformer, will split them) into its cache, in batches of
    `batch_size` spans; the number of spans cached."""
    cache, get_spans, pending = model.wordpiece_cache, model.attrs["get_spans"], []
    for doc in docs:
        pending.extend(span for span in get_spans([doc])[0])
        if len(pending) >= batch_size:
            cache.entries_for(pending)
            pending = []
            if len(cache.entries) >= cache.max_spans:  # full: the rest is tokenized step by step
                break
    if pending:
        cache.entries_for(pending)
    return len(cache.entries)


def _key(span: Any) -> bytes:
    """The span's tokens' strings and trailing spaces (ORTH, SPACY): they spell its text and place its tokens
    in it, which is all its wordpieces and alignment depend on. One array read, where `span.text` would
    join the tokens one by one in Python."""

    return span.doc.to_array([ORTH, SPACY])[span.start : span.end].tobytes()


def _tokenize(tokenizer: Any, spans: List[Any]) -> List[Entry]:
    """spacy-transformers' tokenization and offset alignment of `spans`, as one entry per span."""

    encoding = huggingface_tokenize(tokenizer, [span.text for span in spans])
    type_ids = encoding.get("token_type_ids")
    entries = []
    for i, span in enumerate(spans):
        length = int(encoding["attention_mask"][i].sum())
        strings = list(encoding["input_texts"][i][:length])
        pairs = [
            (k, j)
            for k, wps in enumerate(get_span2wp_from_offset_mapping(span, encoding["offset_mapping"][i]))
            for j in wps
        ]
        tokens, pieces = (
            (numpy.asarray(side, dtype="int64") for side in zip(*pairs))
            if pairs
            else (numpy.zeros(0, dtype="int64"),) * 2
        )
        entries.append(
            Entry(
                input_ids=encoding["input_ids"][i, :length].copy(),
                token_type_ids=None if type_ids is None else type_ids[i, :length].copy(),
                strings=strings,
                length=length - strings.count(tokenizer.pad_token),
                token_index=tokens,
                wordpiece_index=pieces,
            )
        )
    return entries


def cached_forward(model: Any, docs: List[Any], is_train: bool, *, cache: Cache):
    """spacy_transformers.layers.transformer_model.forward, the wordpieces and alignment from `cache`."""

    nested_spans = model.attrs["get_spans"](docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    if not flat_spans:
        return forward(model, docs, is_train)
    maybe_flush_pytorch_cache(chance=model.attrs.get("flush_cache_chance", 0))
    if "logger" in model.attrs:
        log_gpu_memory(model.attrs["logger"], "begin forward")
    wordpieces, align = padded_batch(model.tokenizer, flat_spans, cache.entries_for(flat_spans))
    if "logger" in model.attrs:
        log_batch_size(model.attrs["logger"], wordpieces, is_train)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, model.tokenizer.model_max_length)
    model_output, bp_tensors = model.layers[0](wordpieces, is_train)
    output = Batch(spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align)

    def backprop_transformer(d_output: Any) -> List[Any]:
        bp_tensors(d_output.model_output)
        return docs

    return output, backprop_transformer


def padded_batch(tokenizer: Any, spans: List[Any], entries: List[Entry]):
    """The WordpieceBatch and token alignment (a Ragged) that spacy-transformers builds for `spans`."""

    sizes = numpy.asarray([len(entry.input_ids) for entry in entries])
    width = int(sizes.max())
    real = numpy.arange(width)[None, :] < sizes[:, None]  # row by row, the order of the entries' pieces
    input_ids = numpy.full(real.shape, tokenizer.pad_token_id, dtype=entries[0].input_ids.dtype)
    input_ids[real] = numpy.concatenate([entry.input_ids for entry in entries])
    type_ids = None
    if entries[0].token_type_ids is not None:
        type_ids = numpy.full(real.shape, tokenizer.pad_token_type_id, dtype=entries[0].token_type_ids.dtype)
        type_ids[real] = numpy.concatenate([entry.token_type_ids for entry in entries])
    pad = tokenizer.pad_token
    ops = NumpyOps()
    batch = WordpieceBatch(
        strings=[entry.strings + [pad] * (width - len(entry.strings)) for entry in entries],
        input_ids=ops.asarray(input_ids, dtype=input_ids.dtype),
        attention_mask=ops.asarray2f(real.astype("float32")),
        lengths=[entry.length for entry in entries],  # spacy-transformers counts the strings that are not pad
        token_type_ids=None if type_ids is None else ops.asarray(type_ids, dtype=type_ids.dtype),
    )
    return batch, _alignment(spans, entries, width)


def _alignment(spans: List[Any], entries: List[Entry], width: int):
    """Each token of each doc (in order of the docs' first spans) -> its wordpieces' indices in the flat,
    padded batch, sorted, a wordpiece counted once where spans overlap (spacy-transformers' sets)."""

    tokens = _TokenPositions(spans)
    positions = numpy.concatenate(
        [tokens.doc_start[id(span.doc)] + span.start + entry.token_index for span, entry in zip(spans, entries)]
    )
    pieces = numpy.concatenate([i * width + entry.wordpiece_index for i, entry in enumerate(entries)])
    cells = len(entries) * width
    pairs = numpy.unique(positions * cells + pieces)  # sorted by token, then wordpiece; duplicates once
    lengths = numpy.bincount(pairs // cells, minlength=tokens.total)
    return Ragged((pairs % cells).astype("i"), lengths.astype("i"))


class _TokenPositions:
    """spacy_transformers.align.get_token_positions(spans) as arithmetic: every token of each doc, the docs
    in the order of their first span (instead of a dict of every token, built in Python each step)."""

    def __init__(self, spans: List[Any]) -> None:
        self.doc_start: Dict[int, int] = {}
        self.total = 0  # tokens of all the docs
        for span in spans:
            if id(span.doc) not in self.doc_start:
                self.doc_start[id(span.doc)] = self.total
                self.total += len(span.doc)

    def __getitem__(self, token: Any) -> int:
        return self.doc_start[id(token.doc)] + token.i


def _split_by_doc(batch: Any) -> List[Any]:
    """FullTransformerBatch.split_by_doc (spacy-transformers 1.4), with `_TokenPositions`."""

    token_positions = _TokenPositions([span for doc_spans in batch.spans for span in doc_spans])
    xp_model_output = ModelOutput()
    last_hidden_state = batch.model_output.last_hidden_state
    for key, output in batch.model_output.items():
        if isinstance(output, torch.Tensor):
            xp_model_output[key] = torch2xp(output)
        elif (
            isinstance(output, tuple)
            and all(isinstance(t, torch.Tensor) for t in output)
            and all(t.shape[0] == last_hidden_state.shape[0] for t in output)
        ):
            xp_model_output[key] = [torch2xp(t) for t in output]
    outputs, start, prev_tokens = [], 0, 0
    for doc_spans in batch.spans:
        if len(doc_spans) == 0 or len(doc_spans[0]) == 0:
            outputs.append(TransformerData.empty())
            continue
        start_i = token_positions[doc_spans[0][0]]
        end_i = token_positions[doc_spans[-1][-1]] + 1
        end = start + len(doc_spans)
        doc_tokens = batch.wordpieces[start:end]
        doc_align = batch.align[start_i:end_i]
        doc_align.data = doc_align.data - prev_tokens
        model_output = ModelOutput()
        for key, output in xp_model_output.items():
            model_output[key] = output[start:end] if not isinstance(output, list) else [t[start:end] for t in output]
        outputs.append(TransformerData(wordpieces=doc_tokens, model_output=model_output, align=doc_align))
        prev_tokens += doc_tokens.input_ids.size
        start += len(doc_spans)
    return outputs


class Batch(FullTransformerBatch):
    """FullTransformerBatch whose per-doc split finds token positions by arithmetic."""

    def split_by_doc(self) -> List[Any]:
        return _split_by_doc(self)
