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

A training-time setting only: `train` sets it through spaCy's `[initialize] after_init` hook, between the
pipeline's initialization and the training loop, and the saved pipelines' configs keep the plain string and
not the hook, so they load without this module (they predict in float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from .errors import SetupError

SETTINGS = ("auto", "bf16", "fp32")
DEFAULT = "auto"  # where a config has no [system] precision (one written before it existed)
KEY = "system.precision"


def check_config(path: Path, config: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> str:
    """The config's precision setting ("auto", "bf16" or "fp32"), overrides first; one sentence for a bad
    value, or for spaCy's fp16 `mixed_precision = true` anywhere in the config."""
    from spacy.util import dict_to_dot

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
    """Make every PyTorch layer of `nlp`'s pipeline run in `precision` ("bf16" or "fp32"); returns how many.

    bf16 swaps each shim's class for a subclass whose forward runs under bf16 autocast (the weights and the
    shim's state stay as they are); "fp32" swaps it back.
    """
    from thinc.api import PyTorchShim

    shims = {
        id(shim): shim
        for _, pipe in nlp.pipeline
        if hasattr(pipe, "model")
        for node in pipe.model.walk()
        for shim in node.shims
        if isinstance(shim, PyTorchShim)
    }
    for shim in shims.values():
        plain = shim.__class__.__dict__.get("_fp32_class", shim.__class__)
        shim.__class__ = _bf16_class(plain) if precision == "bf16" else plain
    return len(shims)


CALLBACK = "iob_ner.precision.v1"  # the [initialize] after_init callback that sets it


def make_precision_callback(precision: str, then: Optional[Callable[[Any], Any]] = None) -> Callable[[Any], None]:
    """spaCy's `[initialize] after_init` hook: set `precision` on the initialized pipeline, before the training
    loop starts; `then` is the config's own after_init callback, which runs first."""

    def after_init(nlp: Any) -> None:
        if then is not None:
            then(nlp)
        if set_precision(nlp, precision) == 0 and precision == "bf16":
            from wasabi import msg

            msg.warn("precision bf16: the pipeline has no PyTorch layer, so it trains in float32")

    return after_init


def train(
    config_path: Path,
    output_path: Path,
    *,
    use_gpu: int,
    overrides: Dict[str, Any],
    precision: str,
    **resumable: Any,
) -> None:
    """spaCy's own training loop, resumable (`train_loop.train`, which takes `resumable`), with `precision`
    set through the config's `[initialize] after_init` hook. The saved pipelines' configs get the config's
    own hook back: the precision callback is a training-time setting, and a packaged pipeline must load
    without this module."""
    from spacy import util

    from . import train_loop

    _register()
    own_hook = util.load_config(config_path, overrides=overrides, interpolate=False)["initialize"].get("after_init")
    hook: Dict[str, Any] = {"@callbacks": CALLBACK, "precision": precision}
    if own_hook:
        hook["then"] = own_hook
    overrides = {**overrides, "initialize.after_init": hook}
    train_loop.train(config_path, output_path, use_gpu=use_gpu, overrides=overrides, **resumable)
    for name in ("model-best", "model-last"):
        _restore_hook(output_path / name / "config.cfg", own_hook)


def _register() -> None:
    from spacy.util import registry

    if CALLBACK not in registry.callbacks.get_all():
        registry.callbacks.register(CALLBACK, func=make_precision_callback)


def _restore_hook(path: Path, own_hook: Any) -> None:
    """Put the config's own after_init (null, or the user's callback) back into a saved pipeline's config."""
    from thinc.api import Config

    if not path.exists():
        return
    config = Config().from_disk(path, interpolate=False)
    config["initialize"]["after_init"] = own_hook if own_hook else None
    config.to_disk(path)


class BF16Autocast:
    """Mixed into a PyTorchShim class: forward under bf16 autocast, outputs cast to float32, no grad scaler."""

    def predict(self, inputs):
        import torch

        self._model.eval()
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            outputs = self._model(*inputs.args, **inputs.kwargs)
        self._model.train()
        return _as_float32(outputs)

    def begin_update(self, inputs):
        import torch
        from thinc.util import convert_recursive

        self._model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            output = self._model(*inputs.args, **inputs.kwargs)
        output = _as_float32(output)  # outside autocast: the casts are in the graph, so gradients flow back

        def backprop(grads):
            torch.autograd.backward(*grads.args, **grads.kwargs)
            return convert_recursive(lambda x: hasattr(x, "grad"), lambda x: x.grad, inputs)

        return output, backprop


_BF16_CLASSES: Dict[type, type] = {}


def _bf16_class(plain: type) -> type:
    if plain not in _BF16_CLASSES:
        _BF16_CLASSES[plain] = type(f"BF16{plain.__name__}", (BF16Autocast, plain), {"_fp32_class": plain})
    return _BF16_CLASSES[plain]


def _as_float32(value: Any) -> Any:
    """`value` (a tensor, or a transformers ModelOutput, dict, tuple or list of them) with bf16/fp16 tensors
    cast to float32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict; setting a key sets the attribute
        for key in list(value.keys()):
            value[key] = _as_float32(value[key])
        return value
    if type(value) in (tuple, list):
        return type(value)(_as_float32(item) for item in value)
    return value


def _gpu_has_bf16(gpu: int, *, native: bool) -> bool:
    import torch

    with torch.cuda.device(gpu):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=not native)
        except TypeError:  # torch before 2.3: no emulation argument
            return torch.cuda.is_bf16_supported()
