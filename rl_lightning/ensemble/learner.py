"""N independent learners in one: the members' networks stacked, one batched TD update for all.

Each member is a ``QLearningModule`` built exactly as a single run with that member's seed
builds it (same initial weights, same loss, estimator and target update). ``EnsembleLearner``
stacks the members' online and target parameters along a new leading dimension and rebinds each
member's own parameters as views of its slice, so a member's network (its actor, its evaluation,
its checkpoint) always sees the stacked values. An update computes every member's loss on its
own minibatch in one pass over the stacks -- with hand-batched layers (``ensemble/batched.py``:
``baddbmm`` over the stacked weights) where the network's parts have a batched twin (MLP
encoders, linear and dueling heads, the plain TD loss), else with ``torch.func.vmap`` over
``functional_call`` of the template member's loss (any network: CNNs, distributional heads) --
backpropagates their sum (member k's gradient depends on member k's loss only), clips each
member's gradient norm on its own, and takes one step of the configured optimizer over the
stacked parameters: Adam, RMSprop and SGD are elementwise, so one optimizer over the stacks is N
independent optimizers. Build it before anything keeps references to the members' parameters (a
numpy acting plan reads them through zero-copy views). The designs against a Python loop over N
modules: docs/perf.md.

Each member keeps its own learning rate (the schedule in env steps, which members count apart):
the optimizer steps at the initial rate and each member's step is scaled by its factor (every
optimizer here -- Adam, RMSprop, SGD with momentum -- moves a parameter by the learning rate
times a term that does not depend on it). Limits: batchnorm (statistics in buffers) and
randomness in the update (dropout, noisy layers) are refused (vmap would need a per-member
random stream that matches the single runs'); constant buffers (a C51 support) are shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.distributional import CategoricalTDLoss
from rl_lightning.ensemble import batched
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule

#: the minibatch fields that are stacked over members (``env_steps`` stays a plain int)
FIELDS = ("obs", "actions", "rewards", "n_steps", "terminated", "next_obs", "next_actions")


class _Stack(nn.Module):
    """The stacked tensors as the parameters of one module (in the networks' order), so that the
    target updates (``target/``), which walk ``parameters()``, move all members at once."""

    def __init__(self, tensors: Sequence[torch.Tensor], requires_grad: bool) -> None:
        super().__init__()
        self.stacked = nn.ParameterList(
            [nn.Parameter(t, requires_grad=requires_grad) for t in tensors]
        )


class _LossCall(nn.Module):
    """The template member's TDLoss as a module call over its two networks (for functional_call)."""

    def __init__(self, module: QLearningModule) -> None:
        super().__init__()
        self.q_network = module.q_network
        if module.target_network is not None:
            self.target_network = module.target_network
        self._loss = module.loss
        self.env_steps = 0  # what an estimator reading the behaviour policy's epsilon sees

    def forward(self, *fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, actions, rewards, n_steps, terminated, next_obs, next_actions = fields
        batch = TransitionBatch(
            obs, actions, rewards, n_steps, terminated, next_obs, next_actions, self.env_steps
        )
        return self._loss(batch)


def join(minibatches: Sequence[TransitionBatch], dim: int = 0) -> TransitionBatch:
    """The members' minibatches ``(B, ...)`` as one batch ``(N * B, ...)``, member-major, at the
    members' mean env-step count (what an estimator reading the behaviour's epsilon sees).
    ``dim=1``: their bursts of K minibatches ``(K, B, ...)`` as ``(K, N * B, ...)``."""
    if any(b.weights is not None for b in minibatches):
        raise ValueError("an ensemble learns from uniform replay (no importance weights)")
    fields = {f: torch.cat([getattr(b, f) for b in minibatches], dim=dim) for f in FIELDS}
    env_steps = int(sum(b.env_steps for b in minibatches) / len(minibatches))
    return TransitionBatch(**fields, env_steps=env_steps)


def _rebind(network: nn.Module, stacks: Sequence[torch.Tensor], member: int) -> None:
    """Make ``network``'s parameters views of slice ``member`` of ``stacks`` (same order)."""
    names = [name for name, _ in network.named_parameters()]
    for name, stack in zip(names, stacks, strict=True):
        owner_name, _, attr = name.rpartition(".")
        owner = network.get_submodule(owner_name) if owner_name else network
        view = nn.Parameter(stack.detach()[member], requires_grad=False)
        setattr(owner, attr, view)


def check_members(members: Sequence[QLearningModule]) -> None:
    """ValueError unless the members can be stacked: one architecture, no buffers, nothing
    random in the update."""
    template = members[0]
    shapes = [(n, p.shape) for n, p in template.q_network.named_parameters()]
    for member in members[1:]:
        if [(n, p.shape) for n, p in member.q_network.named_parameters()] != shapes:
            raise ValueError("ensemble members must share one architecture (parameter shapes)")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in template.q_network.modules()):
        raise ValueError(
            "an ensemble cannot stack networks with buffers (batchnorm statistics): use "
            "arch.encoder.norm=none or layernorm, or single runs"
        )
    buffers = [b for _, b in template.q_network.named_buffers()]
    for member in members[1:]:  # constants (a C51 support) are read from the template
        theirs = [b for _, b in member.q_network.named_buffers()]
        if len(theirs) != len(buffers) or not all(map(torch.equal, buffers, theirs)):
            raise ValueError("ensemble members' networks must hold the same constant buffers")
    if type(template.loss) not in (TDLoss, CategoricalTDLoss):
        raise ValueError(
            f"an ensemble's update is checked against single runs for the TD loss and C51 only, "
            f"not {type(template.loss).__name__} (the quantile loss's first updates agree, but "
            "rounding grows to 1e-3 within 200 updates): use single runs"
        )
    random_parts = [
        type(m).__name__
        for m in template.q_network.modules()
        if isinstance(m, nn.Dropout) and m.p > 0 or "Noisy" in type(m).__name__
    ]
    if random_parts:
        raise ValueError(
            f"an ensemble's vmapped update has no per-member random stream for "
            f"{sorted(set(random_parts))}: use single runs for dropout or noisy networks"
        )


class EnsembleLearner:
    """One optimizer step for every member per ``update``, on the members' own minibatches.

    Args:
        members: the members' modules, each built as the single run with its seed would be.
        design: ``batched`` (hand-batched layers, ``ensemble/batched.py``; networks and losses
            that ``batched.supports``), ``vmap`` (any network), or ``auto``: batched where
            supported, else vmap.
    """

    def __init__(self, members: Sequence[QLearningModule], design: str = "auto") -> None:
        check_members(members)
        self.members = list(members)
        template = self.members[0]
        self.size = len(self.members)
        names = [n for n, _ in template.q_network.named_parameters()]

        def stacked(networks: list[nn.Module], requires_grad: bool) -> _Stack:
            tensors = [
                torch.stack([dict(net.named_parameters())[n].detach() for net in networks])
                for n in names
            ]
            return _Stack(tensors, requires_grad)

        self.online = stacked([m.q_network for m in self.members], True)
        self.target: _Stack | None = None
        if template.target_network is not None:
            targets = [m.target_network for m in self.members]
            self.target = stacked(targets, False)  # type: ignore[arg-type]
        for k, member in enumerate(self.members):
            _rebind(member.q_network, list(self.online.stacked), k)
            if self.target is not None:
                _rebind(member.target_network, list(self.target.stacked), k)  # type: ignore[arg-type]
        self.params = list(self.online.stacked)
        self.keys = [f"q_network.{n}" for n in names]
        self.target_keys = [f"target_network.{n}" for n in names]
        self.optimizer = template.optimizer_factory(self.params)
        self.max_grad_norm = template.max_grad_norm
        self.target_update = template.target_update
        self.updates = 0
        #: members whose parameters no longer change (diverged, failed or done)
        self.frozen = torch.zeros(self.size, dtype=torch.bool)
        #: each member's learning rate over the optimizer's (``anneal_lr``)
        self.lr_factors = torch.ones(self.size)
        #: "batched" (hand-batched layers, ``ensemble/batched.py``) or "vmap"
        supported = batched.supports(template.q_network, template.loss)
        if design not in ("auto", "batched", "vmap"):
            raise ValueError(f"design={design!r} is not one of auto, batched, vmap")
        if design == "batched" and not supported:
            raise ValueError("these members' network or loss has no hand-batched twin: use vmap")
        self.design = "vmap" if design == "vmap" or not supported else "batched"
        if self.design == "batched":
            online_net = batched.BatchedNetwork(template.q_network, names, self.online, self.size)
            target_net = None
            if self.target is not None:
                target_net = batched.BatchedNetwork(
                    template.q_network, names, self.target, self.size
                )
            self._loss = batched.batched_loss(template.loss, online_net, target_net)
            self._losses = self._batched_losses
        else:
            self._call = _LossCall(template)
            self._vmapped = vmap(self._member_loss)
            self._losses = self._vmapped_losses

    def _member_loss(
        self, online: list[torch.Tensor], target: list[torch.Tensor] | None, *fields: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params = dict(zip(self.keys, online, strict=True))
        if target is not None:
            params.update(zip(self.target_keys, target, strict=True))
        return functional_call(self._call, params, fields)

    def update(
        self, minibatches: TransitionBatch | Sequence[TransitionBatch]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step per member on its minibatch of B transitions, then the target
        update. ``minibatches``: the members' own, or (``join``) all of them concatenated
        member-major, ``(N * B, ...)``. Returns (loss (N,), Q(s_tm1, a_tm1) (N, B), target
        (N, B), gradient norm before clipping (N,)); a frozen member's values are computed but
        its parameters stay."""
        batch = minibatches if isinstance(minibatches, TransitionBatch) else join(minibatches)
        if batch.weights is not None:
            raise ValueError("an ensemble learns from uniform replay (no importance weights)")
        loss, q_sa, y = self._losses(batch)
        for param in self.params:
            param.grad = None
        loss.sum().backward()
        norm = self._clip()
        # each member's step scaled by its own learning-rate factor (0: frozen); the optimizer
        # itself runs at the initial learning rate
        scale = self.lr_factors.masked_fill(self.frozen, 0.0)
        scaled = bool((scale != 1.0).any())
        if scaled:
            before = [p.detach().clone() for p in self.params]
        self.optimizer.step()
        if scaled:
            with torch.no_grad():
                for param, old in zip(self.params, before, strict=True):
                    step = (param - old).mul_(scale.view(-1, *[1] * (param.dim() - 1)))
                    param.copy_(old.add_(step))
        self.updates += 1
        self.target_update(self.online, self.target, self.updates)
        return loss.detach(), q_sa.detach(), y, norm

    def _batched_losses(
        self, batch: TransitionBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The members' losses (N,), Q(s_tm1, a_tm1) and targets (N, B) through the batched
        networks: the single run's per-sample maths on N * B rows."""
        loss = self._loss
        target = loss.td_target(batch)
        q_sa = loss._q_values(batch.obs, batch.actions)
        per_sample = loss._per_sample(q_sa, target).view(self.size, -1)
        return per_sample.mean(1), q_sa.view(self.size, -1), target.view(self.size, -1)

    def _vmapped_losses(
        self, batch: TransitionBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same through vmap over ``functional_call`` of the template member's loss."""
        fields = [getattr(batch, f) for f in FIELDS]
        fields = [f.view(self.size, -1, *f.shape[1:]) for f in fields]
        self._call.env_steps = batch.env_steps
        target = list(self.target.stacked) if self.target is not None else None
        return self._vmapped(self.params, target, *fields)  # type: ignore[no-any-return]

    @torch.no_grad()
    def _clip(self) -> torch.Tensor:
        """Each member's global gradient 2-norm, and (``max_grad_norm``) each member's gradient
        scaled as ``clip_grad_norm_`` scales a single run's."""
        grads = [p.grad for p in self.params]
        squares = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads])  # type: ignore[union-attr]
        norm = squares.sum(0).sqrt()
        if self.max_grad_norm is not None:
            coef = torch.clamp(float(self.max_grad_norm) / (norm + 1e-6), max=1.0)
            for g in grads:
                g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))  # type: ignore[union-attr]
        return norm

    def member_optimizer_state(self, member: int) -> dict[str, Any]:
        """Member ``member``'s part of the optimizer's state, as the single run's optimizer
        would hold it: every per-parameter tensor shaped like a stack sliced to the member."""
        state = self.optimizer.state_dict()
        sizes = [tuple(p.shape) for p in self.params]
        per_param = {}
        for index, values in state["state"].items():
            per_param[index] = {
                key: value[member].clone()
                if isinstance(value, torch.Tensor) and tuple(value.shape) == sizes[index]
                else value
                for key, value in values.items()
            }
        return {"state": per_param, "param_groups": state["param_groups"]}

    def load_member_optimizer_states(self, states: Sequence[dict[str, Any]]) -> None:
        """The optimizer's state from the members' slices (``member_optimizer_state``)."""
        sizes = [tuple(p.shape) for p in self.params]
        stacked: dict[int, dict[str, Any]] = {}
        for index in states[0]["state"]:
            values = [s["state"][index] for s in states]
            stacked[int(index)] = {
                key: torch.stack([v[key] for v in values])
                if isinstance(values[0][key], torch.Tensor)
                and (len(self.members),) + tuple(values[0][key].shape) == sizes[int(index)]
                else values[0][key]
                for key in values[0]
            }
        self.optimizer.load_state_dict(
            {"state": stacked, "param_groups": states[0]["param_groups"]}
        )

    def anneal_lr(self, env_steps: Sequence[int]) -> None:
        """Each member's learning rate at its own env steps (``QLearningModule.lr_factor``): the
        factor that scales the member's next steps."""
        template = self.members[0]
        if template.lr_end_factor == 1.0:
            return
        self.lr_factors = torch.tensor([template.lr_factor(s) for s in env_steps])
