"""RecurrentTDLoss: the TD regression of ``TDLoss`` on sequences, for recurrent Q-networks.

A batch holds B sequences of ``T = burn_in + L + n`` rows (``data.sequences.SequenceBatch``;
``L = train_length``, ``n`` the estimator's window). For each sequence:

    rows 0 .. burn_in-1            burn-in: the online network's state is warmed up from zero,
                                   under ``no_grad`` (no loss, no gradient reaches these steps)
    rows burn_in .. burn_in+L-1    train steps j: Q(o_{<=j}, a_j) is regressed on its target
    rows burn_in+L .. T-1          only bootstrap rows of the last train steps' windows

Both networks unroll from the zero state at row 0 with the state zeroed again at every episode
start inside the sequence (``starts``), so the state never carries anything across episodes:
the online network over the burn-in (no gradient), then from its state over the rest (with
gradient); the bootstrap network (the target network, else the online one) over all T rows
without gradient. The target of train step j is the estimator's, on the n-step window of rows
j .. j+k-1 (k <= n, cut after the first terminated or truncated flag exactly as
``ReplayBuffer.gather_flat`` cuts it), with ``q_t`` the bootstrap network's Q at row j + k (the
auto-reset row that holds a finished episode's final observation, or a row of the same
episode): the same ``TDInputs`` as ``TDLoss``'s, built for the flattened train steps.

Masked out: train steps on auto-reset rows (``reset_step``: they are no transitions). Every
other train step counts, also those of an episode that started inside the sequence (its state
is exactly the acting one). The loss is the mean of the regression loss over the counted steps
of the whole batch (each step weighs the same); ``q_sa`` and ``target`` are those steps'.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from rl_lightning.data.sequences import SequenceBatch
from rl_lightning.estimators.core import Estimator, window_return
from rl_lightning.losses import TDLoss


def window_flags(
    rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, n: int, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The n-step windows of steps ``0 .. length-1`` of ``(B, length + n)`` rows (``+ n - 1``
    would do; the rows past a window are ignored): rewards ``(B, length, n)`` zeroed after the
    episode's end, the number of real steps k ``(B, length)`` and whether the episode
    terminated inside ``(B, length)`` -- ``gather_flat``'s rule, per train step."""
    r = torch.stack([rewards[:, i : i + length] for i in range(n)], dim=-1)
    term = torch.stack([terminated[:, i : i + length] for i in range(n)], dim=-1).bool()
    trunc = torch.stack([truncated[:, i : i + length] for i in range(n)], dim=-1).bool()
    ended = (term | trunc).to(torch.int64)
    inside = (torch.cumsum(ended, dim=-1) - ended) == 0  # no end strictly before step i
    rewards_w = torch.where(inside, r, torch.zeros_like(r))
    return rewards_w, inside.sum(dim=-1), (term & inside).any(dim=-1)


class RecurrentTDLoss(TDLoss):
    """``loss(sequences) -> (loss, q_sa (M,), target (M,))`` over the M counted train steps.

    Same arguments as ``TDLoss``; the network must be recurrent (``RecurrentQNetwork``: its
    ``burn_in`` and ``train_length`` split the sequences). Importance weights are refused (no
    prioritized sequence sampler).
    """

    def check(self, q_network: nn.Module, estimator: Estimator) -> None:
        if not getattr(q_network, "recurrent", False):
            raise ValueError("RecurrentTDLoss needs a recurrent network (arch=gru or arch=lstm)")

    @property
    def burn_in(self) -> int:
        """Steps per sequence that only warm up the state (the network's ``burn_in``)."""
        return int(cast(Any, self.q_network).burn_in)

    @property
    def train_length(self) -> int:
        """Steps per sequence learnt from after the burn-in (the network's ``train_length``)."""
        return int(cast(Any, self.q_network).train_length)

    def __call__(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq = cast(SequenceBatch, batch)
        if seq.weights is not None:
            raise ValueError("RecurrentTDLoss has no importance-weighted (prioritized) version")
        online = cast(Any, self.q_network)
        b, length = self.burn_in, self.train_length
        obs, starts = seq.obs, seq.starts
        if b > 0:
            with torch.no_grad():
                _, state = online.unroll(obs[:, :b], None, starts[:, :b])
        else:
            state = None
        q_online, _ = online.unroll(obs[:, b:], state, starts[:, b:])  # (B, T - b, A)
        target, valid = self._targets(seq, q_online.detach())
        a_tm1 = seq.actions[:, b : b + length].long()
        q_sa = q_online[:, :length].gather(2, a_tm1.unsqueeze(2)).squeeze(2)
        q_sa, target = q_sa[valid], target[valid]
        return self.loss_fn(q_sa, target), q_sa, target

    forward = __call__

    @torch.no_grad()
    def _targets(
        self, seq: SequenceBatch, q_online: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``(B, L)`` of the train steps and which of them count ``(B, L)`` bool;
        ``q_online`` ``(B, T - burn_in, A)``: the online network's Q from the burn-in on."""
        b, length = self.burn_in, self.train_length
        boot = cast(Any, self._bootstrap)
        if self.target_network is None:  # the online values, from the same state
            q_boot = q_online
        else:
            q_all, _ = boot.unroll(seq.obs, None, seq.starts)
            q_boot = q_all[:, b:]
        n = q_boot.shape[1] - length
        rewards, k, terminated = window_flags(
            seq.rewards[:, b:], seq.terminated[:, b:], seq.truncated[:, b:], n, length
        )
        valid = ~seq.reset_step[:, b : b + length].bool()
        rows = torch.arange(length, device=k.device) + k  # bootstrap row of each step
        n_actions = q_boot.shape[2]
        at = rows.unsqueeze(2).expand(-1, -1, n_actions)
        flat = valid.nonzero(as_tuple=True)
        q_t = q_boot.gather(1, at)[flat]
        r_t, discount_t = window_return(
            rewards[flat], k[flat], terminated[flat].to(q_t.dtype), self.gamma
        )
        actions = seq.actions[:, b:]
        q_t_online = q_online.gather(1, at)[flat] if self._online_pass else None
        q_tm1_target = q_boot[:, :length][flat] if self._q_tm1_target else None
        inputs = self.assemble_inputs(
            r_t,
            discount_t,
            q_t,
            actions[:, :length][flat],
            actions.gather(1, rows)[flat] if self._next_action else None,
            q_t_online,
            q_tm1_target,
            seq.env_steps,
        )
        target = torch.zeros(valid.shape, dtype=q_t.dtype, device=q_t.device)
        target[flat] = self.estimator.target(inputs)
        return target, valid

    @torch.no_grad()
    def td_target(self, batch: Any) -> torch.Tensor:
        """Targets of the counted train steps ``(M,)`` (what ``__call__`` regresses on)."""
        seq = cast(SequenceBatch, batch)
        online = cast(Any, self.q_network)
        q_online, _ = online.unroll(seq.obs, None, seq.starts)
        target, valid = self._targets(seq, q_online[:, self.burn_in :])
        return target[valid]


def recurrent_config_problems(cfg: Any) -> list[str]:
    """What a recurrent ``arch`` (``arch=gru|lstm``) cannot be combined with, for
    ``validation``: a sampler other than the uniform one (replaced by the sequence sampler; no
    prioritized or online sequences yet), a distributional head, a buffer whose lanes cannot
    hold one sequence of ``burn_in + train_length + n_step`` rows."""
    from hydra.utils import get_object

    from rl_lightning.data.samplers import UniformSampler, sampler_class

    arch: Any = cfg.get("arch")
    try:
        recurrent = bool(getattr(get_object(str(arch.get("_target_"))), "recurrent", False))
    except Exception:  # no arch or not importable: reported elsewhere
        return []
    if not recurrent:
        encoder = arch.get("encoder")
        target = str(encoder.get("_target_", "")) if hasattr(encoder, "get") else ""
        if target.endswith("RecurrentEncoder"):
            return [
                f"arch.encoder={target} under arch._target_={arch.get('_target_')}: a recurrent "
                "encoder needs the recurrent network that carries its state; use arch=gru|lstm"
            ]
        return []
    problems = []
    sampler = str(cfg.buffer.sampler._target_)
    try:
        uniform = sampler_class(sampler) is UniformSampler
    except ValueError:
        uniform = True  # reported by validation
    if not uniform:
        problems.append(
            f"buffer.sampler._target_={sampler}: a recurrent arch learns from uniformly sampled "
            "sequences (rl_lightning.data.SequenceSampler, chosen by the builder); use buffer=replay"
        )
    head = arch.get("head")
    try:
        distributional = bool(getattr(get_object(str(head._target_)), "distributional", False))
    except Exception:
        distributional = False
    if distributional:
        problems.append("a recurrent arch has no distributional loss: use arch/head=linear|dueling")
    try:
        burn_in, train_length = int(arch.get("burn_in", 0)), int(arch.get("train_length", 1))
        length = burn_in + train_length + int(cfg.estimator.get("n_step", 1))
        num_envs, capacity = int(cfg.env.num_envs), int(cfg.buffer.capacity)
    except (TypeError, ValueError, AttributeError):  # missing or wrong values: reported elsewhere
        return problems
    if burn_in < 0 or train_length < 1:
        problems.append(
            f"arch.burn_in={burn_in} must be >= 0 and arch.train_length={train_length} >= 1"
        )
    if uniform and capacity < num_envs * (length + 1):
        problems.append(
            f"buffer.capacity={cfg.buffer.capacity}: must be >= env.num_envs * (arch.burn_in + "
            f"arch.train_length + estimator.n_step + 1) = {num_envs * (length + 1)} (each lane "
            "must hold one sequence)"
        )
    return problems
