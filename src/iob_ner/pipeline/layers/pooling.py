"""`iob_ner.TransformerListener.v1`: the transformer's output pooled onto spaCy's tokens for a whole batch at once.

Between the transformer and token_ner, spacy-transformers' `trfs2arrays` layer maps each document's
wordpiece vectors to its tokens: per document, a reshape, an alignment gather (`apply_alignment`), and on
the way back a scatter-add, a fresh ModelOutput and a zero array that is thrown away. With 20 documents a
500-word step that is ~3.4 ms of host time on one CPU core (benchmarks/host_time), paid again on a GPU.
`batched_forward` does the same arithmetic once over the batch: one gather over every document's
alignment (offset by the rows of the documents before it), the configured pooling once (as
spacy-transformers already pools the batch at once), one scatter-add back. The numbers are spacy-
transformers' to the last bit: no two documents share a row, so each row adds the same terms in the same
order (tests/pipeline/layers/test_pooling.py compares outputs and gradients on real batches).

A registered architecture with spacy-transformers.TransformerListener.v1's arguments, named by the generated
config in `[components.ner.model.tok2vec]`, in training and in prediction alike; a batch with an empty document or a document aligned to no wordpiece (the cases spacy-transformers
treats apart) takes spacy-transformers' forward unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import numpy
from spacy.attrs import ORTH
from spacy.util import registry
from spacy_transformers.data_classes import TransformerData
from spacy_transformers.layers import TransformerListener
from spacy_transformers.layers.trfs2arrays import forward
from thinc.api import Model, chain
from thinc.types import Floats2d, Ragged
from transformers.utils import ModelOutput

ARCHITECTURE = "iob_ner.TransformerListener.v1"


@registry.architectures(ARCHITECTURE)
def create_transformer_listener(
    pooling: Model[Ragged, Floats2d], grad_factor: float = 1.0, upstream: str = "*"
) -> Model[List[Any], List[Floats2d]]:
    """spacy-transformers.TransformerListener.v1 (the same arguments, layers and refs), its pooling done for
    the batch at once (`batched_forward`) and the batch id computed from arrays (`Listener`)."""
    listener = Listener(upstream_name=upstream)
    model: Model = chain(
        listener, Model("trfs2arrays", batched_forward, layers=[pooling], attrs={"grad_factor": grad_factor})
    )
    model.set_ref("listener", listener)
    return model


class Listener(TransformerListener):
    """spacy-transformers' TransformerListener, its batch id computed from arrays."""

    @classmethod
    def get_batch_id(cls, inputs: List[Any]) -> int:
        """TransformerListener.get_batch_id: the sum of every token's ORTH (a 64-bit hash), to the same Python
        integer (the transformer component computes it with spacy-transformers' own, and the two must agree),
        from arrays instead of token by token. The halves are summed apart so that no sum can overflow 64 bits."""
        if not inputs:
            return 0
        orths = numpy.concatenate([doc.to_array(ORTH) for doc in inputs])
        low, high = int((orths & 0xFFFFFFFF).sum(dtype="uint64")), int((orths >> 32).sum(dtype="uint64"))
        return (high << 32) + low


def _batchable(trf_datas: List[Any]) -> bool:
    """Every document has wordpiece vectors and at least one token aligned to a wordpiece."""

    return bool(trf_datas) and all(
        isinstance(data, TransformerData)
        and "last_hidden_state" in data.model_output
        and data.model_output.last_hidden_state.size
        and data.align.dataXd.shape[0]  # the rows the alignment picks: the sum of its lengths
        for data in trf_datas
    )


def batched_forward(model: Any, trf_datas: List[Any], is_train: bool) -> Tuple[List[Any], Callable]:
    """spacy-transformers' `trfs2arrays` forward, the alignment and pooling done once for the batch."""

    if not _batchable(trf_datas):
        return forward(model, trf_datas, is_train)
    ops, xp = model.ops, model.ops.xp
    pooling, grad_factor = model.layers[0], model.attrs["grad_factor"]
    sources = [ops.reshape2f(data.model_output.last_hidden_state, -1, data.width) for data in trf_datas]
    starts = numpy.cumsum([0] + [len(source) for source in sources])
    X = xp.concatenate(sources)
    # the alignments are host arrays: offset and joined there, then one copy to the device (int32: thinc's
    # compiled scatter-add, as spacy-transformers' per-document alignments are)
    indices = ops.asarray(
        numpy.concatenate([ops.to_numpy(data.align.dataXd).ravel() + start for data, start in zip(trf_datas, starts)]),
        dtype="int32",
    )
    lengths = ops.asarray(numpy.concatenate([ops.to_numpy(data.align.lengths) for data in trf_datas]), dtype="int32")
    pooled, backprop_pooling = pooling(Ragged(X[indices], lengths), is_train)
    outputs = xp.split(pooled, numpy.cumsum([len(data.align.lengths) for data in trf_datas])[:-1])

    def backprop(d_outputs: List[Any]) -> List[Any]:

        d_aligned = backprop_pooling(xp.concatenate(d_outputs)).dataXd
        dX = ops.alloc2f(*X.shape)
        ops.scatter_add(dX, indices, d_aligned)
        dX *= grad_factor
        return [
            TransformerData(
                model_output=ModelOutput(
                    last_hidden_state=dX[start:end].reshape(data.model_output.last_hidden_state.shape)
                ),
                wordpieces=data.wordpieces,
                align=data.align,
            )
            for data, start, end in zip(trf_datas, starts[:-1], starts[1:])
        ]

    return outputs, backprop
