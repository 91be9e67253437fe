"""The transformer's output pooled onto spaCy's tokens for a whole batch at once, while training.

Between the transformer and token_ner, spacy-transformers' `trfs2arrays` layer maps each document's
wordpiece vectors to its tokens: per document, a reshape, an alignment gather (`apply_alignment`), and on
the way back a scatter-add, a fresh ModelOutput and a zero array that is thrown away. With 20 documents a
500-word step that is ~3.4 ms of host time on one CPU core (benchmarks/host_time), paid again on a GPU.
`batched_forward` does the same arithmetic once over the batch: one gather over every document's
alignment (offset by the rows of the documents before it), the configured pooling once (as
spacy-transformers already pools the batch at once), one scatter-add back. The numbers are spacy-
transformers' to the last bit: no two documents share a row, so each row adds the same terms in the same
order (tests/test_pooling.py compares outputs and gradients on real batches).

`install(nlp)` puts it in place of spacy-transformers' forward for the run, `uninstall(nlp)` puts that
back; a batch with an empty document or a document aligned to no wordpiece (the cases spacy-transformers
treats apart) takes spacy-transformers' forward unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import numpy


def install(nlp: Any) -> int:
    """Give each `trfs2arrays` layer of `nlp` the batched forward; the number of layers changed."""
    from spacy_transformers.layers.trfs2arrays import forward

    layers = [node for node in _pooling_layers(nlp) if node._func is forward]
    for node in layers:
        node._func = batched_forward
    return len(layers)


def uninstall(nlp: Any) -> None:
    from spacy_transformers.layers.trfs2arrays import forward

    for node in _pooling_layers(nlp):
        if node._func is batched_forward:
            node._func = forward


def _pooling_layers(nlp: Any) -> List[Any]:
    from .wordpieces import model_nodes

    return [node for node in model_nodes(nlp) if node.name == "trfs2arrays"]


def _batchable(trf_datas: List[Any]) -> bool:
    """Every document has wordpiece vectors and at least one token aligned to a wordpiece."""
    from spacy_transformers.data_classes import TransformerData

    return bool(trf_datas) and all(
        isinstance(data, TransformerData)
        and "last_hidden_state" in data.model_output
        and data.model_output.last_hidden_state.size
        and data.align.dataXd.shape[0]  # the rows the alignment picks: the sum of its lengths
        for data in trf_datas
    )


def batched_forward(model: Any, trf_datas: List[Any], is_train: bool) -> Tuple[List[Any], Callable]:
    """spacy-transformers' `trfs2arrays` forward, the alignment and pooling done once for the batch."""
    from spacy_transformers.layers.trfs2arrays import forward
    from thinc.types import Ragged

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
        from spacy_transformers.data_classes import TransformerData
        from transformers.file_utils import ModelOutput

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
