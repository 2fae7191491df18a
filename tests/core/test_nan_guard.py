"""The NaN guard: a finite loss with NaN gradients, a NaN reward value that only ∇r-based methods would miss, and a
step that overflows the parameters all stop training before anything non-finite is stepped or checkpointed."""

import pytest
import torch
from safetensors.torch import load_file

from flowlite.checkpoint import list_checkpoints, load_checkpoint
from flowlite.errors import NonFiniteLossError
from flowlite.losses import flow_matching_loss
from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.nets import MLPVelocity
from flowlite.train import train

MIX = GaussianMixture([0.4, 0.6], [[-2.0, 0.0], [2.0, 1.0]], [[[0.3, 0.0], [0.0, 0.3]]] * 2)


class NaNGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward: what a reward with a NaN gradient does."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _net_and_loss(poison_step: int):
    torch.manual_seed(0)
    net = MLPVelocity(2, width=16, depth=2)

    def loss_fn(step):
        loss = flow_matching_loss(net, MIX.sample(32))
        return NaNGradient.apply(loss) if step == poison_step else loss

    return net, loss_fn


@pytest.mark.parametrize("keep_last", [1, 2])
def test_nan_gradient_with_finite_loss_stops_and_the_named_checkpoint_is_finite(tmp_path, keep_last):
    net, loss_fn = _net_and_loss(poison_step=6)  # the 7th step
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    with pytest.raises(NonFiniteLossError, match=r"gradient of .* at step 7.*step_0000005") as err:
        train(net, loss_fn, opt, 20, run_dir=tmp_path, checkpoint_every=5, keep_last=keep_last, grad_clip=1.0,
              progress=False)
    named = str(err.value).split("Last good checkpoint: ")[1].split(" (")[0]
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step_0000005"] and str(kept[-1]) == named  # the good one survived rotation
    assert all(torch.isfinite(v).all() for v in load_file(str(kept[-1] / "model.safetensors")).values())
    assert all(torch.isfinite(p).all() for p in net.parameters()), "the NaN gradient was stepped"
    fresh = MLPVelocity(2, width=16, depth=2)
    load_checkpoint(kept[-1], fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_a_nan_reward_value_stops_adjoint_matching_which_uses_only_its_gradient():
    from flowlite.methods import AdjointMatching
    from flowlite.finetune import finetune
    from flowlite.toy.flow import ExactMixtureVelocity, ToyFlow
    from flowlite.toy.rewards import QuadraticReward

    class NaNValued(QuadraticReward):
        """r(x) is NaN where x₁ > 0; its gradient stays the quadratic's (finite) everywhere."""

        def forward(self, x, cond=None):
            nan = torch.where(x[:, :1] > 0, float("nan"), 0.0).squeeze(1).detach()
            return super().forward(x, cond) + nan

    torch.manual_seed(0)
    flow = ToyFlow(ExactMixtureVelocity(MIX))
    method = AdjointMatching(flow, NaNValued(torch.eye(2), torch.zeros(2)), 1.0, batch_size=16, solver_steps=5)
    with pytest.raises(NonFiniteLossError, match=r"reward is nan at step 1"):
        finetune(method, 3, progress=False)
    assert all(torch.isfinite(p).all() for p in flow.trainable_parameters())


def test_a_step_that_overflows_the_parameters_stops_before_the_checkpoint(tmp_path):
    net, loss_fn = _net_and_loss(poison_step=-1)
    opt = torch.optim.SGD(net.parameters(), lr=1e10)

    def blow_up(step):  # finite loss and gradients (about 1e30), an infinite step in float32 at step 4
        return loss_fn(step) * (1e30 if step == 3 else 1e-12)

    with pytest.raises(NonFiniteLossError, match=r"parameter \S+ is not finite after the optimizer step at step 4"):
        train(net, blow_up, opt, 10, run_dir=tmp_path, checkpoint_every=4, progress=False)
    assert list_checkpoints(tmp_path / "checkpoints") == []
