"""`iob_ner.TransformerModel.v1`: spacy-transformers' TransformerModel, with what makes it train faster.

A registered architecture, as spacy-transformers' own are: the generated config names it in
`[components.transformer.model]`, so `python -m spacy train` gets the same model as `spacy project run
train`. It takes the arguments of `spacy-transformers.TransformerModel.v3`, builds the same layers, attributes,
initialization and serialization (a saved pipeline's weights and tokenizer are spacy-transformers' own), and
differs in two places, both the same arithmetic:

- its forward reads each span's wordpieces and alignment from `wordpiece_cache` when one is attached
  (`layers.wordpieces`: the training callback attaches it and tokenizes the training documents once);
  without one (a loaded pipeline, predict, serve) it is spacy-transformers' forward;
- its shim (`TransformerShim`, a spacy-transformers HFShim) updates the parameters with thinc's Adam in one
  fused torch call (`layers.fused_adam`) and, while `autocast` is "bf16" (set by the training callback from
  `[system] precision`, never saved), runs the transformer's forward under bf16 autocast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch
from spacy.util import SimpleFrozenDict, registry
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers import TransformerModel as SpacyTransformerModel
from spacy_transformers.layers.hf_shim import HFShim
from spacy_transformers.layers.transformer_model import forward as spacy_transformers_forward
from thinc.api import Model, Optimizer
from thinc.layers.pytorchwrapper import forward as pytorch_wrapper_forward
from thinc.util import convert_recursive

from . import fused_adam
from .wordpieces import Cache, cached_forward

ARCHITECTURE = "iob_ner.TransformerModel.v1"


@registry.architectures(ARCHITECTURE)  # the class itself: its arguments are spacy-transformers.TransformerModel.v3's
class TransformerModel(SpacyTransformerModel):
    """`iob_ner.TransformerModel.v1`: spacy-transformers' TransformerModel with a `TransformerShim` and a forward that can read a
    wordpiece cache. The layers are built from a reference TransformerModel's public parts (its wrapper's
    attrs hold spacy-transformers' input and output conversions), so that what spacy-transformers puts there
    comes along; tests/pipeline/layers/test_layers.py fails with a clear message when their shape changes."""

    wordpiece_cache: Optional[Cache] = None

    def __init__(
        self,
        name: str,
        get_spans: Callable,
        tokenizer_config: dict = SimpleFrozenDict(),
        transformer_config: dict = SimpleFrozenDict(),
        mixed_precision: bool = False,
        grad_scaler_config: dict = SimpleFrozenDict(),
    ) -> None:
        tokenizer_config, transformer_config = dict(tokenizer_config), dict(transformer_config)
        reference = SpacyTransformerModel(
            name, get_spans, tokenizer_config, transformer_config, mixed_precision, dict(grad_scaler_config)
        )
        plain = reference.layers[0]
        shim = TransformerShim(
            HFObjects(None, None, None, tokenizer_config, transformer_config),
            mixed_precision=mixed_precision,
            grad_scaler_config=dict(grad_scaler_config),  # HFShim writes into it
        )
        wrapper = Model(
            plain.name,
            pytorch_wrapper_forward,
            attrs=dict(plain.attrs),
            shims=[shim],
            dims={dim: None for dim in plain.dim_names},
        )
        Model.__init__(
            self,
            reference.name,
            forward,
            init=reference.init,
            layers=[wrapper],
            dims={dim: None for dim in reference.dim_names},
            attrs=dict(reference.attrs),
        )


def forward(model: TransformerModel, docs: List[Any], is_train: bool):
    """spacy-transformers' forward, the wordpieces read from the model's cache when it has one; a training
    batch is counted in its shim's padding from the batch's lengths, which live on the host (the mask's sum
    would wait for the GPU at every step)."""
    if model.wordpiece_cache is None:
        output, backprop = spacy_transformers_forward(model, docs, is_train)
    else:
        output, backprop = cached_forward(model, docs, is_train, cache=model.wordpiece_cache)
    if is_train:
        for shim in model.layers[0].shims:
            shim.padding["train"].add(output.wordpieces.lengths, output.wordpieces.input_ids.shape)
    return output, backprop


@dataclass
class Padding:
    """The rows of wordpieces a transformer ran: every row of a batch is padded to its longest, and a padded
    position costs the arithmetic of a real one. From the rows' lengths (host integers: no device sync).
    The sums of squares are for attention, whose cost grows with the row's width."""

    rows: int = 0
    positions: int = 0  # rows x padded width, summed over the batches
    real: int = 0  # the wordpieces among them
    positions_squared: int = 0  # rows x width², summed
    real_squared: int = 0  # each row's length², summed

    def add(self, lengths: List[int], shape: Any) -> None:
        rows, width = int(shape[0]), int(shape[1])
        self.rows += rows
        self.positions += rows * width
        self.positions_squared += rows * width * width
        self.real += sum(lengths)
        self.real_squared += sum(length * length for length in lengths)

    @property
    def share(self) -> float:
        """The share of positions that were padding (0 before any batch)."""
        return 1 - self.real / self.positions if self.positions else 0.0

    def since(self, before: "Padding") -> "Padding":
        """What was added after `before` (a copy taken earlier)."""
        return Padding(*(now - then for now, then in zip(self.astuple(), before.astuple())))

    def astuple(self) -> tuple:
        return (self.rows, self.positions, self.real, self.positions_squared, self.real_squared)


class TransformerShim(HFShim):
    """spacy-transformers' HFShim, its update one fused Adam call, its forward under bf16 autocast while
    `autocast` is "bf16".

    bf16: the matrix products run in bf16 while the weights, their gradients and Adam's state stay float32
    (autocast around the forward only; the backward runs in the dtypes the forward chose). bf16 has
    float32's exponent range, so no loss scaling is needed. The outputs are cast back to float32 before they
    reach thinc, so the NER head, its softmax and its loss run in float32."""

    autocast: Optional[str] = None  # "bf16" while training in bf16; an attribute of the process, not saved
    group_rows: bool = True  # predict in groups of similar length; False: the batch whole, as spacy-transformers

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "train" and "predict": the rows of wordpieces this process ran through the transformer
        self.padding = {"train": Padding(), "predict": Padding()}

    def predict(self, inputs: Any) -> Any:
        """The batch's rows in groups of similar length (`length_groups`), each trimmed to its longest row,
        then put back in place at the batch's width: the padding a batch of mixed lengths carries (half
        its positions on NCBI-disease batches of 64 sentences) is not computed. Each real position's
        output is the one the whole batch gives (attention never reads a masked position), to float
        rounding."""
        mask = inputs.kwargs.get("attention_mask")
        if mask is None or inputs.args:  # not spacy-transformers' inputs: run as they come, uncounted
            return self._predict_rows(inputs)
        lengths = [int(length) for length in mask.sum(dim=1).tolist()]
        groups = length_groups(lengths) if self.group_rows else None
        if groups is not None:
            outputs = [self._predict_rows(trimmed(inputs, rows, width)) for rows, width in groups]
            whole = regrouped(outputs, groups, mask.shape[1])
            if whole is not None:
                for rows, width in groups:
                    self.padding["predict"].add([lengths[i] for i in rows], (len(rows), width))
                return whole
        self.padding["predict"].add(lengths, mask.shape)
        return self._predict_rows(inputs)

    def _predict_rows(self, inputs: Any) -> Any:
        if self.autocast != "bf16":
            return super().predict(inputs)
        self._model.eval()
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            outputs = self._model(*inputs.args, **inputs.kwargs)
        self._model.train()
        return as_float32(outputs)

    def begin_update(self, inputs: Any):
        if self.autocast != "bf16":
            return super().begin_update(inputs)
        self._model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            output = self._model(*inputs.args, **inputs.kwargs)
        output = as_float32(output)  # outside autocast: the casts are in the graph, so gradients flow back

        def backprop(grads: Any) -> Any:
            torch.autograd.backward(*grads.args, **grads.kwargs)
            return convert_recursive(lambda x: hasattr(x, "grad"), lambda x: x.grad, inputs)

        return output, backprop

    def finish_update(self, optimizer: Optimizer) -> None:
        """thinc's PyTorchShim.finish_update: Adam over each parameter; one fused call for all of them
        where the optimizer is thinc's plain Adam (`fused_adam.fusable`), thinc's own loop otherwise."""
        if not fused_adam.fusable(optimizer):
            super().finish_update(optimizer)
            return
        fused_adam.shim_finish_update(self, optimizer)


# Rows of a group: at most this many positions (rows x width) in one call, and lengths within this ratio of
# the group's longest, so that a group carries under a fifth of padding.
GROUP_POSITIONS = 8192
GROUP_RATIO = 1.25


def length_groups(lengths: List[int], positions: int = GROUP_POSITIONS, ratio: float = GROUP_RATIO):
    """The rows (indices) in groups of similar length, longest first, each with its width (its longest
    row); None where the batch is one group already (the rows' lengths within `ratio` of each other)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not order or lengths[order[-1]] * ratio >= lengths[order[0]]:
        return None
    groups: List[tuple] = []
    rows: List[int] = []
    width = 0
    for i in order:
        if rows and (lengths[i] * ratio < width or (len(rows) + 1) * width > positions):
            groups.append((rows, width))
            rows = []
        if not rows:
            width = max(int(lengths[i]), 1)
        rows.append(i)
    groups.append((rows, width))
    return groups


def trimmed(inputs: Any, rows: List[int], width: int) -> Any:
    """`inputs` (spacy-transformers' ArgsKwargs of (rows, width) tensors) for `rows`, cut to `width`."""
    index = torch.as_tensor(rows, device=inputs.kwargs["input_ids"].device)
    kwargs = {key: value.index_select(0, index)[:, :width] for key, value in inputs.kwargs.items()}
    return type(inputs)(args=(), kwargs=kwargs)


def regrouped(outputs: List[Any], groups: List[tuple], width: int) -> Any:
    """The groups' model outputs as the whole batch's: rows in their places, sequences padded back to
    `width` with zeros (positions nothing reads: every alignment points at real wordpieces). None where
    an output has a shape this cannot place (e.g. attention maps), and the batch is run whole instead."""
    first = outputs[0]
    if not isinstance(first, dict) or any(not isinstance(v, torch.Tensor) for v in first.values()):
        return None
    order = torch.as_tensor([i for rows, _ in groups for i in rows], device=first[next(iter(first))].device)
    whole = type(first)()
    for key in first.keys():
        parts = []
        for output, (rows, group_width) in zip(outputs, groups):
            value = output[key]
            if value.dim() >= 3 and value.shape[1] == group_width:  # (rows, positions, ...): a sequence
                value = torch.nn.functional.pad(value, (0, 0) * (value.dim() - 2) + (0, width - group_width))
            elif value.dim() != 2:  # (rows, hidden) is a pooled output: nothing to pad
                return None
            parts.append(value)
        stacked = torch.cat(parts)
        whole[key] = torch.empty_like(stacked).index_copy_(0, order, stacked)
    return whole


def as_float32(value: Any) -> Any:
    """`value` (a tensor, or a transformers ModelOutput, dict, tuple or list of them) with bf16/fp16 tensors
    cast to float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict; setting a key sets the attribute
        for key in list(value.keys()):
            value[key] = as_float32(value[key])
        return value
    if type(value) in (tuple, list):
        return type(value)(as_float32(item) for item in value)
    return value


def transformer_models(nlp: Any) -> List[TransformerModel]:
    """The pipeline's transformers of this architecture."""
    return [node for node in model_nodes(nlp) if isinstance(node, TransformerModel)]


def transformer_shims(nlp: Any) -> List[TransformerShim]:
    """The pipeline's shims of this architecture, each once."""
    shims = {id(shim): shim for node in model_nodes(nlp) for shim in node.shims if isinstance(shim, TransformerShim)}
    return list(shims.values())


def padding_share(nlp: Any, kind: str = "train") -> Optional[float]:
    """The share of the wordpiece positions the pipeline's transformers ran in `kind` ("train" or
    "predict") that were padding, in this process; None where none was counted."""
    counts = [shim.padding[kind] for shim in transformer_shims(nlp)]
    positions = sum(count.positions for count in counts)
    return 1 - sum(count.real for count in counts) / positions if positions else None


def model_nodes(nlp: Any) -> List[Any]:
    """Every thinc model node of `nlp`'s pipes, in pipeline order."""
    return [
        node
        for _, pipe in nlp.pipeline
        if hasattr(pipe, "model") and hasattr(pipe.model, "walk")
        for node in pipe.model.walk()
    ]
