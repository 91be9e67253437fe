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
    comes along; tests/test_layers.py fails with a clear message when their shape changes."""

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
    """spacy-transformers' forward, the wordpieces read from the model's cache when it has one."""
    if model.wordpiece_cache is None:
        return spacy_transformers_forward(model, docs, is_train)
    return cached_forward(model, docs, is_train, cache=model.wordpiece_cache)


class TransformerShim(HFShim):
    """spacy-transformers' HFShim, its update one fused Adam call, its forward under bf16 autocast while
    `autocast` is "bf16".

    bf16: the matrix products run in bf16 while the weights, their gradients and Adam's state stay float32
    (autocast around the forward only; the backward runs in the dtypes the forward chose). bf16 has
    float32's exponent range, so no loss scaling is needed. The outputs are cast back to float32 before they
    reach thinc, so the NER head, its softmax and its loss run in float32."""

    autocast: Optional[str] = None  # "bf16" while training in bf16; an attribute of the process, not saved

    def predict(self, inputs: Any) -> Any:
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


def model_nodes(nlp: Any) -> List[Any]:
    """Every thinc model node of `nlp`'s pipes, in pipeline order."""
    return [
        node
        for _, pipe in nlp.pipeline
        if hasattr(pipe, "model") and hasattr(pipe.model, "walk")
        for node in pipe.model.walk()
    ]
