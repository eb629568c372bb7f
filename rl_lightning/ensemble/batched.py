"""Hand-batched forward passes of the members' stacked networks: ``baddbmm`` instead of vmap.

``BatchedNetwork`` runs the template member's network on all members' minibatches at once, with
each member's own parameters: a linear layer is one ``baddbmm`` of the inputs ``(N, B, in)``
with the stacked weights ``(N, in, out)``; activations act elementwise; a layer norm normalises
each row and applies each member's affine parameters; the dueling head combines its streams as
the single network does. It takes and returns the members' batches concatenated, member-major:
``(N * B, *obs_shape) -> (N * B, A)``. Every per-sample computation of a ``TDLoss`` (targets,
estimators, ``q_values``, the elementwise loss) is then the single run's maths on a batch of
``N * B`` rows, and each member's loss is the mean over its own ``B`` rows.

Against ``torch.func.vmap`` over ``functional_call`` (which any network supports) this removes
the re-parametrisation and vmap's per-op dispatch: 1.8x faster for 10 members of the default MLP
on this CPU (docs/perf.md). Only the parts listed in ``supports`` have a batched twin (MLP
encoders with any activation and layer norm, linear and dueling heads, under an
``ActionOutQNetwork``); for any other network the ensemble keeps vmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from rl_lightning.losses import TDLoss
from rl_lightning.networks.encoders import MLPEncoder
from rl_lightning.networks.heads import DuelingHead, LinearHead
from rl_lightning.networks.q_network import QNetwork

#: modules that act on each element (so on a leading member dimension as they are)
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU, nn.Identity)
LINEAR = (nn.Linear, LinearHead)


def supports(network: nn.Module, loss: object) -> bool:
    """Whether every part of ``network`` has a batched twin here, and ``loss`` is the plain
    per-sample ``TDLoss`` (subclasses -- distributional, recurrent -- compute their own way)."""
    if type(loss) is not TDLoss or getattr(loss, "_per_sample", None) is None:
        return False
    if not isinstance(network, QNetwork) or type(network).forward is not QNetwork.forward:
        return False
    for module in network.modules():
        if module is network or type(module) in (MLPEncoder, DuelingHead, nn.Flatten):
            continue
        if type(module) in LINEAR or type(module) in ELEMENTWISE:
            continue
        if type(module) is nn.LayerNorm and module.elementwise_affine and module.bias is not None:
            continue
        return False
    return isinstance(network.encoder, MLPEncoder)


class BatchedNetwork:
    """The template network's forward on the members' concatenated minibatches, each member
    with its slice of the stacks (``stacks``, in ``names``' order: the template's parameters).

    Args:
        template: a member's network (its structure; its own parameters are not read).
        names: the template's parameter names.
        stacks: the module whose ``stacked`` parameters hold the members' values ``(N, ...)``;
            read at every call, so in-place updates and reloads are seen.
        size: the number of members N.
    """

    def __init__(
        self, template: nn.Module, names: Sequence[str], stacks: nn.Module, size: int
    ) -> None:
        self.template: Any = template
        self.names = list(names)
        self.stacks = stacks
        self.size = size

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """(N * B, *obs_shape) -> (N * B, num_actions)."""
        if not torch.is_floating_point(obs):
            obs = obs.float()
        params = dict(zip(self.names, cast(Any, self.stacks).stacked, strict=True))
        x = obs.reshape(self.size, -1, *obs.shape[1:])
        encoder = self.template.encoder
        layers = list(encoder.named_children())
        if x.dim() == 3:  # already flat: the encoder's Flatten is the identity
            layers = layers[1:]
        for name, layer in layers:
            x = self._apply(layer, params, f"encoder.{name}.", x)
        q = self._apply(self.template.head, params, "head.", x)
        return q.flatten(0, 1)

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s_b, a_b) for each row: ``QNetwork.q_values`` on this forward."""
        return QNetwork.q_values(cast(Any, self), obs, actions)

    def _apply(
        self, module: nn.Module, params: dict[str, torch.Tensor], prefix: str, x: torch.Tensor
    ) -> torch.Tensor:
        """One part on ``x`` ``(N, B, ...)`` with the parameters named ``prefix + ...``."""
        if type(module) in LINEAR:
            weight = params[prefix + "weight"].transpose(1, 2)
            bias = params.get(prefix + "bias")
            if bias is None:
                return torch.bmm(x, weight)
            return torch.baddbmm(bias.unsqueeze(1), x, weight)
        if type(module) is DuelingHead:
            advantage = self._apply(module.advantage, params, prefix + "advantage.", x)
            value = self._apply(module.value, params, prefix + "value.", x)
            return value + advantage - advantage.mean(dim=-1, keepdim=True)
        if type(module) is nn.LayerNorm:
            normed = F.layer_norm(x, module.normalized_shape, eps=module.eps)
            weight, bias = params[prefix + "weight"], params[prefix + "bias"]
            return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1))
        if type(module) is nn.Flatten:
            return x.flatten(2)
        return module(x)  # elementwise (``supports`` checked)


def batched_loss(template: TDLoss, online: BatchedNetwork, target: BatchedNetwork | None) -> TDLoss:
    """A copy of the template member's loss that computes with the batched networks."""
    loss = TDLoss.__new__(TDLoss)
    loss.__dict__.update(template.__dict__)
    loss.q_network = cast(Any, online)
    loss.target_network = cast(Any, target)
    loss._bootstrap = cast(Any, target if target is not None else online)
    loss._q_values = online.q_values
    return loss
