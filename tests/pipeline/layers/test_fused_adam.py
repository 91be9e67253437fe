"""The fused Adam step does thinc's Adam: the same weights and moments after the same updates (the tiny_sample
random transformer, the default recipe's optimizer: gradient clipping, decoupled weight decay)."""

import numpy
import pytest
from support.paths import ROOT

from iob_ner.pipeline.layers import fused_adam
from iob_ner.training.loop import finish_updates
from iob_ner.util.tiny import tiny_training_setup

CONFIG = ROOT / "configs" / "config.cfg"


def _torch_model(seed: int):
    """A small PyTorch model in thinc's wrapper, with one parameter whose gradient is clipped."""
    import torch
    from thinc.api import PyTorchWrapper

    torch.manual_seed(seed)
    model = PyTorchWrapper(torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)))
    return model, model.shims[0]._model


def test_fused_step_is_thincs_adam():
    """The same gradients through thinc's optimizer and the fused step: the same weights, moments, counts."""
    import torch
    from thinc.api import Adam

    kwargs = dict(use_averages=False, L2=0.01, L2_is_weight_decay=True, grad_clip=1.0, beta1=0.9, beta2=0.999, eps=1e-8)
    (theirs, their_torch), (ours, our_torch) = _torch_model(0), _torch_model(0)
    their_opt, our_opt = Adam(0.01, **kwargs), Adam(0.01, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        for a, b in zip(their_torch.parameters(), our_torch.parameters()):
            grad = torch.randn(a.shape, generator=generator) * (3.0 if step % 2 else 0.05)  # clipped, or not
            grad[0] = 0.0  # a row that learns nothing this step (an embedding of an absent token)
            a.grad, b.grad = grad.clone(), grad.clone()
        if step == 3:  # as a checkpoint restores them: new moment arrays, which the next steps must update
            for opt in (their_opt, our_opt):
                for store in (opt.mom1, opt.mom2):
                    store.update({key: array.copy() for key, array in store.items()})
        theirs.finish_update(their_opt)
        fused_adam.shim_finish_update(ours.shims[0], our_opt)
        their_opt.step_schedules()
        our_opt.step_schedules()
    shim_ids = theirs.shims[0].id, ours.shims[0].id
    for (name, a), (_, b) in zip(their_torch.named_parameters(), our_torch.named_parameters()):
        numpy.testing.assert_allclose(
            b.detach().numpy(), a.detach().numpy(), rtol=1e-6, atol=1e-6, err_msg=name
        )  # a few float32 ulps
        for moments in ("mom1", "mom2"):
            their_m, our_m = (getattr(opt, moments)[(i, name)] for opt, i in zip((their_opt, our_opt), shim_ids))
            numpy.testing.assert_allclose(our_m, their_m, rtol=1e-5, atol=1e-8, err_msg=f"{name} {moments}")
        assert our_opt.nr_update[(shim_ids[1], name)] == their_opt.nr_update[(shim_ids[0], name)] == 5
        assert b.grad is None  # cleared (thinc zeroes them: the next backward gives the same gradient)
    assert (our_torch[0].weight - _torch_model(0)[1][0].weight).abs().max() > 0.01  # it did learn


def _losses(tiny_sample, update, steps=4):
    """The losses of `steps` updates of the default recipe, `update(nlp, optimizer)` ending each step."""
    import torch
    from thinc.api import fix_random_seed

    corpus, model = tiny_sample
    fix_random_seed(0)
    nlp, examples, optimizer, dropout, _ = tiny_training_setup(CONFIG, corpus, model)
    optimizer.learn_rate = 0.001  # the schedule starts at 0
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same dropout masks in both runs
        losses.append(nlp.update(examples[:8], drop=dropout, sgd=False)["ner"])
        update(nlp, optimizer)
    return losses


def test_training_with_the_fused_step_is_training_with_thincs(tiny_sample):
    """The recipe's transformer (iob_ner.TransformerModel.v1: its shim updates in one fused call), and the
    same steps with thinc's PyTorchShim.finish_update on the same shim."""
    from thinc.api import PyTorchShim

    from iob_ner.pipeline.layers.transformer import TransformerShim

    def thinc_updates(nlp, optimizer):
        for node in nlp.get_pipe("transformer").model.walk():
            for shim in node.shims:
                assert isinstance(shim, TransformerShim)
                PyTorchShim.finish_update(shim, optimizer)
        nlp.get_pipe("ner").finish_update(optimizer)

    ours = _losses(tiny_sample, lambda nlp, optimizer: finish_updates(nlp, optimizer, []))
    theirs = _losses(tiny_sample, thinc_updates)
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert theirs[-1] < theirs[0]  # it learned


def test_other_optimizers_take_thincs_path():
    from thinc.api import SGD, Adam, RAdam

    assert fused_adam.fusable(Adam(0.001, L2=0.01, L2_is_weight_decay=True, grad_clip=1.0, use_averages=False))
    assert not fused_adam.fusable(Adam(0.001, use_averages=True))
    assert not fused_adam.fusable(Adam(0.001, L2=0.01, L2_is_weight_decay=False))
    assert not fused_adam.fusable(RAdam(0.001))
    assert not fused_adam.fusable(SGD(0.001))
