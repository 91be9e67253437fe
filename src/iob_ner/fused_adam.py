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
w -= lr * L2 * w after the update. The moments stay in the optimizer's own `mom1`/`mom2` arrays (torch
views of them, no copies) and `nr_update` counts as thinc counts, so a checkpoint written from either path
resumes with the other, and results match thinc's to float32 rounding (tests/test_fused_adam.py).

Anything this path does not cover (RAdam, SGD, parameter averages, L2 added to the gradient, an optimizer
that is not thinc's) goes through thinc's own `finish_update` unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Tuple

from thinc.api import Model, Optimizer, PyTorchShim
from thinc.util import get_array_module, torch2xp, xp2torch


def finish_update(pipe: Any, optimizer: Optimizer) -> None:
    """`pipe.finish_update(optimizer)`, with each PyTorch shim of a plain pipe updated in one fused call.

    A pipe with a `finish_update` of its own (token_ner scales its learning rate) keeps it: only pipes
    that inherit spaCy's (`self.model.finish_update(sgd)`), such as spacy-transformers' `transformer`,
    take the fused path."""
    from spacy.pipeline import TrainablePipe

    if type(pipe).finish_update is TrainablePipe.finish_update:
        model_finish_update(pipe.model, optimizer)
    else:
        pipe.finish_update(optimizer)


def fusable(optimizer: Any) -> bool:
    """Whether `optimizer` is thinc's plain Adam, whose arithmetic `_fused_step` reproduces."""
    import torch

    return (
        isinstance(optimizer, Optimizer)
        and hasattr(torch, "_fused_adam_")
        and not optimizer.use_radam
        and optimizer.b1 > 0.0
        and optimizer.b2 > 0.0
        and optimizer.averages is None
        and (optimizer.L2 == 0 or optimizer.L2_is_weight_decay)
    )


def model_finish_update(model: Model, optimizer: Optimizer) -> None:
    """thinc's `Model.finish_update`, each PyTorch shim's parameters updated in one fused step (where the
    optimizer is one `fusable` covers)."""
    fused = fusable(optimizer)
    for node in model.walk():
        for shim in node.shims:
            if fused and isinstance(shim, PyTorchShim):
                _shim_finish_update(shim, optimizer)
            else:
                shim.finish_update(optimizer)
    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                param, _ = optimizer((node.id, name), node.get_param(name), node.get_grad(name))
                node.set_param(name, param)


def _shim_finish_update(shim: PyTorchShim, optimizer: Optimizer) -> None:
    """PyTorchShim.finish_update: skip the update when the loss scaler found an overflow, clear the
    gradients, let the scaler adapt."""
    named = [(name, p) for name, p in shim._model.named_parameters() if p.grad is not None]
    if not shim._grad_scaler.found_inf:
        by_step: Dict[int, List[Tuple[Tuple[int, str], Any]]] = defaultdict(list)
        for name, param in named:
            if param.grad.numel() < 1:  # thinc's optimizer skips an empty gradient (and counts nothing)
                continue
            key = (shim.id, name)
            optimizer.nr_update[key] += 1
            by_step[optimizer.nr_update[key]].append((key, param))
        for step, group in by_step.items():  # one group, unless parameters joined the run at other steps
            _fused_step(optimizer, step, group)
    for _, param in named:  # torch's zero_grad(set_to_none=True): the next backward writes the gradient
        param.grad = None  # afresh, instead of a pass to zero it and another to add to the zeros
    shim._grad_scaler.update()


def _fused_step(optimizer: Optimizer, step: int, group: List[Tuple[Tuple[int, str], Any]]) -> None:
    """One Adam step at update count `step` for parameters `group` ((key, torch parameter) pairs)."""
    import torch

    params = [param.data for _, param in group]
    grads = [param.grad for _, param in group]
    if optimizer.grad_clip:  # thinc clips each parameter's gradient by its own norm
        clip = float(optimizer.grad_clip)
        norms = torch.stack(torch._foreach_norm(grads)).tolist()
        for grad, norm in zip(grads, norms):
            if norm >= clip:
                grad.mul_(clip / norm)
    mom1, mom2 = [], []
    for key, param in group:
        for moments, views in ((optimizer.mom1, mom1), (optimizer.mom2, mom2)):
            if key not in moments:
                xp = get_array_module(torch2xp(param.data))
                moments[key] = xp.zeros((param.numel(),), dtype="float32")
            views.append(xp2torch(moments[key], device=param.device).view(param.shape))
    learn_rate, b2 = float(optimizer.learn_rate), float(optimizer.b2)
    steps = [torch.tensor(float(step), device=param.device) for param in params]
    torch._fused_adam_(
        params,
        grads,
        mom1,
        mom2,
        [],
        steps,
        lr=learn_rate,
        beta1=float(optimizer.b1),
        beta2=b2,
        weight_decay=0.0,
        eps=float(optimizer.eps) / (1.0 - b2**step) ** 0.5,  # thinc's eps sits outside the bias correction
        amsgrad=False,
        maximize=False,
    )
    if optimizer.L2 != 0:  # thinc: w -= lr * L2 * w, after the update
        torch._foreach_mul_(params, 1.0 - learn_rate * float(optimizer.L2))
