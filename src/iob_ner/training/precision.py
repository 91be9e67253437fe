"""The transformer's training precision: bf16 autocast around its forward pass, or fp32.

The config chooses it with `[system] precision`: "auto" (bf16 on a CUDA GPU with native bf16, such as
A100, H100, RTX 30xx and later; fp32 on the CPU and on older GPUs), "bf16" (also on the CPU, where
torch.autocast("cpu", dtype=torch.bfloat16) runs it) or "fp32".

bf16 here: the transformer's forward pass runs under torch.autocast(dtype=torch.bfloat16), so its
matrix products run in bf16 while its weights, their gradients and Adam's state stay float32 (PyTorch's
recommended practice: autocast around the forward only; the backward pass runs in the dtypes the forward
chose). bf16 has float32's exponent range, so no loss scaling is needed. Its outputs are cast back to
float32 before they reach thinc, so the NER head, its softmax and its loss run in float32.

spaCy's own `mixed_precision = true` (thinc's fp16 autocast with a gradient scaler in the shim) stopped
learning on an H100 (dev F 0.02), so training refuses it with one sentence (`check_config`).

A training-time setting only: the generated config's `[initialize] after_init` callback
(`iob_ner.training_speedups.v1`, layers/speedups.py) sets it on the transformer's shim
(`layers.transformer.TransformerShim.autocast`) between the pipeline's initialization and the training loop,
in `spacy train` as in `spacy project run train`; nothing of it is saved, so a trained pipeline predicts in
float32.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, get_args

import torch
from spacy.util import dict_to_dot

from ..pipeline.layers.transformer import transformer_shims
from ..util.errors import SetupError

Setting = Literal["auto", "bf16", "fp32"]  # the training callback's argument: spaCy's config check refuses others
SETTINGS = get_args(Setting)
DEFAULT = "auto"  # where a config has no [system] precision (one written before it existed)
KEY = "system.precision"


def check_config(path: Any, config: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> str:
    """The config's precision setting ("auto", "bf16" or "fp32"), overrides first; one sentence for a bad
    value, or for spaCy's fp16 `mixed_precision = true` anywhere in the config."""
    values = dict_to_dot(dict(config))
    values.update(overrides or {})
    for key, value in values.items():
        if key.split(".")[-1] == "mixed_precision" and str(value).strip().lower() == "true":
            section = key.rsplit(".", 1)[0]
            raise SetupError(
                f"{path} sets mixed_precision = true in [{section}], spaCy's fp16 training, which stops learning "
                f'(dev F 0.02 on an H100): set it to false and use [system] precision = "bf16" instead '
                f'("auto", the default, picks bf16 on GPUs that support it)'
            )
    setting = values.get(KEY, DEFAULT)
    if setting not in SETTINGS:
        raise SetupError(f"[system] precision in {path} must be one of {', '.join(SETTINGS)}, not {setting!r}")
    return setting


def choose(setting: str, gpu: int) -> str:
    """ "bf16" or "fp32" for `setting` on the active device (`gpu`: its id, or -1 for the CPU)."""
    if setting == "fp32" or (setting == "auto" and gpu < 0):
        return "fp32"
    if gpu < 0:
        return "bf16"  # torch.autocast("cpu", dtype=torch.bfloat16)
    if setting == "auto":
        return "bf16" if _gpu_has_bf16(gpu, native=True) else "fp32"
    if not _gpu_has_bf16(gpu, native=False):
        raise SetupError(
            f'[system] precision = "bf16" was asked for, but GPU {gpu} has no bf16 support '
            f'in torch: use "fp32" (or "auto")'
        )
    return "bf16"


def describe(chosen: str, setting: str, gpu: int) -> str:
    """One line for train.py to print."""
    where = "the CPU" if gpu < 0 else f"GPU {gpu}"
    if chosen == "bf16":
        return f'Precision: bf16 autocast around the transformer on {where}, float32 weights ([system] precision = "{setting}")'
    why = ": bf16 only on a GPU that supports it" if setting == "auto" else ""
    return f'Precision: fp32 on {where} ([system] precision = "{setting}"{why})'


def set_precision(nlp: Any, precision: str) -> int:
    """Make the transformers of `nlp` (`iob_ner.TransformerModel.v1`) run their forward pass in `precision`
    ("bf16" or "fp32"); returns how many shims were set."""
    shims = transformer_shims(nlp)
    for shim in shims:
        shim.autocast = "bf16" if precision == "bf16" else None
    return len(shims)


def _gpu_has_bf16(gpu: int, *, native: bool) -> bool:
    with torch.cuda.device(gpu):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=not native)
        except TypeError:  # torch before 2.3: no emulation argument
            return torch.cuda.is_bf16_supported()
