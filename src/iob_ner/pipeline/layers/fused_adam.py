"""thinc's Adam, one fused call per step over a transformer's PyTorch parameters.

thinc's optimizer updates a PyTorch model one parameter at a time: a tensor to array conversion, a norm for
the gradient clipping, its Cython Adam loop in blocks of 64 floats, a separate pass for the weight decay,
and the array back into a tensor. With the embedded MiniLM that is 101 calls and ~300 ms a step on one
CPU core (benchmarks/host_time): on a GPU, where the transformer's own arithmetic is nearly free, the
optimizer alone capped training speed. torch's fused Adam kernel (CPU and CUDA) does the same arithmetic
in one vectorised pass over every parameter, about 4x faster on the CPU.

The arithmetic is thinc's, not torch's: per parameter, clip the gradient to `grad_clip` by its own norm;
Adam with thinc's bias correction (step size lr * sqrt(1 - b2^t) / (1 - b1^t) over sqrt(v) + eps, which is
torch's formula with eps scaled by 1 / sqrt(1 - b2^t)); then the decoupled weight decay
w -= lr * L2 * w after the update (folded into torch's AdamW by rescaling its learning rate and decay, `_fused_step`,
through torch's public functional `torch.optim.adamw.adamw(..., fused=True)`). The moments stay in the
optimizer's own `mom1`/`mom2` arrays (torch views of them, no copies) and `nr_update` counts as thinc counts, so a checkpoint written from either path
resumes with the other, and results match thinc's to float32 rounding (tests/pipeline/layers/test_fused_adam.py).

`layers.transformer.TransformerShim.finish_update` calls it: every update of the transformer's parameters,
in `spacy train` and in this project's loop alike. Anything this path does not cover (RAdam, SGD, parameter
averages, L2 added to the gradient, an optimizer that is not thinc's) goes through thinc's own `finish_update` unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Tuple

import torch
from thinc.api import Optimizer
from thinc.util import get_array_module, torch2xp, xp2torch
from torch.optim.adamw import adamw


def fusable(optimizer: Any) -> bool:
    """Whether `optimizer` is thinc's plain Adam, whose arithmetic `_fused_step` reproduces."""
    return (
        isinstance(optimizer, Optimizer)
        and not optimizer.use_radam
        and optimizer.b1 > 0.0
        and optimizer.b2 > 0.0
        and optimizer.averages is None
        and (optimizer.L2 == 0 or optimizer.L2_is_weight_decay)
    )


def shim_finish_update(shim: Any, optimizer: Optimizer) -> None:
    """PyTorchShim.finish_update, fused: skip the update when the loss scaler found an overflow, clear the
    gradients, let the scaler adapt. `shim` is a TransformerShim (it keeps the parameter list and the
    moment views between steps)."""
    named = [(name, p) for name, p in _named_parameters(shim) if p.grad is not None]
    if not shim._grad_scaler.found_inf:
        by_step: Dict[int, List[Tuple[Tuple[int, str], Any]]] = defaultdict(list)
        for name, param in named:
            if param.grad.numel() < 1:  # thinc's optimizer skips an empty gradient (and counts nothing)
                continue
            key = (shim.id, name)
            optimizer.nr_update[key] += 1
            by_step[optimizer.nr_update[key]].append((key, param))
        for step, group in by_step.items():  # one group, unless parameters joined the run at other steps
            _fused_step(shim, optimizer, step, group)
    for _, param in named:  # torch's zero_grad(set_to_none=True): the next backward writes the gradient
        param.grad = None  # afresh, instead of a pass to zero it and another to add to the zeros
    shim._grad_scaler.update()


# why caches: walking the modules for their parameters and wrapping each moment array as a tensor cost
# ~2 ms a step with the tiny BERT of benchmarks/host_time (a fifth of the loop's host time at 500 words).
# Both are kept on the shim: its parameters while its module is the same, the views while the optimizer
# holds the same moment arrays (a restored checkpoint puts new ones).


def _named_parameters(shim: Any) -> List[Tuple[str, Any]]:
    """`shim._model.named_parameters()`, listed once per module (a transformer's parameters are fixed)."""
    listed = shim.__dict__.get("_fused_parameters")
    if listed is None or listed[0] is not shim._model:
        listed = (shim._model, list(shim._model.named_parameters()))
        shim._fused_parameters = listed
    return listed[1]


def _moment_view(shim: Any, optimizer: Optimizer, store: str, key: Tuple[int, str], param: Any) -> Any:
    """A torch view of the optimizer's moment array `store` ("mom1"/"mom2") for `key`, made (zeros) if
    missing."""
    moments = getattr(optimizer, store)
    if key not in moments:
        xp = get_array_module(torch2xp(param.data))
        moments[key] = xp.zeros((param.numel(),), dtype="float32")
    views = shim.__dict__.setdefault("_fused_views", {})
    array, view = views.get((store, key), (None, None))
    if array is not moments[key]:
        array = moments[key]
        view = xp2torch(array, device=param.device).view(param.shape)
        views[(store, key)] = (array, view)
    return view


def _fused_step(shim: Any, optimizer: Optimizer, step: int, group: List[Tuple[Tuple[int, str], Any]]) -> None:
    """One Adam step at update count `step` for parameters `group` ((key, torch parameter) pairs)."""
    params = [param.data for _, param in group]
    grads = [param.grad for _, param in group]
    if optimizer.grad_clip:  # thinc clips each parameter's gradient by its own norm
        clip = float(optimizer.grad_clip)
        norms = torch.stack([torch.linalg.vector_norm(grad) for grad in grads]).tolist()  # one device sync
        for grad, norm in zip(grads, norms):
            if norm >= clip:
                grad.mul_(clip / norm)
    mom1 = [_moment_view(shim, optimizer, "mom1", key, param) for key, param in group]
    mom2 = [_moment_view(shim, optimizer, "mom2", key, param) for key, param in group]
    learn_rate, b2 = float(optimizer.learn_rate), float(optimizer.b2)
    # thinc decays the weights after the update, w' = (w - s) * (1 - a) with a = lr * L2; torch's AdamW
    # decays before it, w' = w * (1 - lr' * wd) - s * lr' / lr: with lr' = lr * (1 - a) and
    # wd = L2 / (1 - a) that is thinc's w', in the one pass over the weights instead of two
    decay = learn_rate * float(optimizer.L2)
    # the functional adds 1 to each parameter's step count before its kernel reads it: one count each (views
    # of one tensor, one allocation), at step - 1
    steps = torch.full((len(params),), float(step - 1), device=params[0].device).unbind()
    adamw(
        params,
        grads,
        mom1,
        mom2,
        [],
        list(steps),
        fused=True,
        amsgrad=False,
        beta1=float(optimizer.b1),
        beta2=b2,
        lr=learn_rate * (1.0 - decay),
        weight_decay=float(optimizer.L2) / (1.0 - decay),
        eps=float(optimizer.eps) / (1.0 - b2**step) ** 0.5,  # thinc's eps sits outside the bias correction
        maximize=False,
    )
