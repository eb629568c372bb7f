"""QLearningModule: the online Q-network, its target copy, and the semi-gradient TD update."""

from __future__ import annotations

import copy
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import Estimator
from rl_lightning.exploration import Exploration

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class QLearningModule(pl.LightningModule):
    """Minimises (Q(s_t, a_t) - y_t)^2 (or the Huber loss) with y_t a constant TD target.

    Each batch holds K minibatches (``(K, B, ...)``); ``training_step`` does K optimizer steps,
    one per minibatch, calling the target update after each. This keeps the semantics of K
    separate updates while paying Lightning's per-step overhead once per K updates.

    Args:
        q_network: the online network ``(B, *obs_shape) -> (B, A)``.
        estimator: which TD target and n-step window.
        target_update: ``NoTargetUpdate`` / ``HardTargetUpdate`` / ``PolyakTargetUpdate``.
        loss: elementwise-mean regression loss ``loss(q_sa, target)``.
        optimizer: a partial ``params -> torch.optim.Optimizer`` (Hydra ``_partial_: true``).
        exploration: the behaviour policy's exploration (Expected SARSA reads its probabilities).
        gamma: discount per environment step.
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
        log_every_updates: log ``train/*`` every this many updates (one host sync each time).
        total_env_steps: the training budget, for the learning-rate schedule.
        lr_end_factor: the learning rate decays linearly in env steps from its initial value
            to ``lr_end_factor`` times it at ``total_env_steps`` (1.0: constant).
        config: the resolved run config, stored in checkpoints so they can be rebuilt.
    """

    def __init__(
        self,
        *,
        q_network: nn.Module,
        estimator: Estimator,
        target_update: Any,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        exploration: Exploration,
        gamma: float,
        max_grad_norm: float | None = None,
        log_every_updates: int = 100,
        total_env_steps: int = 0,
        lr_end_factor: float = 1.0,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.q_network = q_network
        self.target_network: nn.Module | None = None
        if target_update.uses_target_network:
            self.target_network = copy.deepcopy(q_network).requires_grad_(False)
        self.estimator = estimator
        self.target_update = target_update
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.exploration = exploration
        self.gamma = float(gamma)
        self.max_grad_norm = max_grad_norm
        self.log_every_updates = int(log_every_updates)
        self.total_env_steps = int(total_env_steps)
        self.lr_end_factor = float(lr_end_factor)
        self.config = config or {}
        self.updates = 0
        self.env_steps = 0
        self._stats: torch.Tensor | None = None  # running sums of loss, q, |td error|
        self._stats_count = 0
        self._last_log = (time.perf_counter(), 0)

    # -- Lightning hooks ---------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.q_network.parameters())

    def train(self, mode: bool = True) -> QLearningModule:
        super().train(mode)
        if self.target_network is not None:
            self.target_network.eval()  # the target is a fixed function: no dropout noise
        return self

    def training_step(self, dataloader_iter: Iterator) -> None:
        """Fetch the next item *now* -- the collector acts with the current weights -- and learn.

        Taking ``dataloader_iter`` switches off Lightning's one-batch prefetch, which would
        otherwise collect each burst with the weights from before the previous burst's updates.
        The stream's end (StopIteration) ends the epoch.
        """
        batch, _, _ = next(dataloader_iter)
        self.learn(self.trainer.strategy.batch_to_device(batch))

    def learn(self, batch: TransitionBatch) -> None:
        """K optimizer steps on the K minibatches of ``batch`` (shapes ``(K, B, ...)``)."""
        opt = cast(LightningOptimizer, self.optimizers())
        if self.lr_end_factor != 1.0:
            self._anneal_lr(opt.optimizer)  # at the env steps before this batch's burst
        self.env_steps = batch.env_steps
        for k in range(batch.actions.shape[0]):
            minibatch = batch.map(operator.itemgetter(k))
            loss, q_sa, target = self.compute_loss(minibatch)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.max_grad_norm is not None:
                self.clip_gradients(
                    opt.optimizer,
                    gradient_clip_val=self.max_grad_norm,
                    gradient_clip_algorithm="norm",
                )
            opt.step()
            self.updates += 1
            self.target_update(self.q_network, self.target_network, self.updates)
            self._accumulate(loss, q_sa, target)
        if self._stats_count >= self.log_every_updates:
            self._log_train_metrics()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rl_lightning"] = {
            "config": self.config,
            "updates": self.updates,
            "env_steps": self.env_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rl_lightning", {})
        self.updates = int(state.get("updates", 0))
        self.env_steps = int(state.get("env_steps", 0))

    # -- the maths ---------------------------------------------------------------------------
    @torch.no_grad()
    def td_target(self, batch: TransitionBatch) -> torch.Tensor:
        """y_t for a minibatch (B,), computed without gradient (the semi-gradient target)."""
        bootstrap_net = self.target_network if self.target_network is not None else self.q_network
        q_t = bootstrap_net(batch.next_obs)
        q_t_online = None
        if self.estimator.needs_online_bootstrap or self.estimator.name == "expected_sarsa":
            q_t_online = q_t if self.target_network is None else self.q_network(batch.next_obs)
        probs_t = None
        if self.estimator.name == "expected_sarsa":
            # the behaviour policy acts on the online network's Q-values
            probs_t = self.exploration.probs(cast(torch.Tensor, q_t_online), batch.env_steps)
        return self.estimator.target(
            rewards=batch.rewards,
            n_steps=batch.n_steps,
            terminated=batch.terminated,
            gamma=self.gamma,
            q_t=q_t,
            q_t_online=q_t_online,
            a_t=batch.next_actions,
            probs_t=probs_t,
        )

    def compute_loss(
        self, batch: TransitionBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss, Q(s_t, a_t) (B,), target (B,))."""
        target = self.td_target(batch)
        q_sa = cast(Any, self.q_network).q_values(batch.obs, batch.actions)
        return self.loss_fn(q_sa, target), q_sa, target

    def _anneal_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """lr = lr_0 * (1 - (1 - lr_end_factor) * env_steps / total_env_steps), set once per
        batch from the env steps collected before the batch's burst (so the first burst learns
        at lr_0 and the last one not at the end value)."""
        progress = min(1.0, self.env_steps / max(self.total_env_steps, 1))
        factor = 1.0 - (1.0 - self.lr_end_factor) * progress
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor

    # -- logging -----------------------------------------------------------------------------
    def _accumulate(self, loss: torch.Tensor, q_sa: torch.Tensor, target: torch.Tensor) -> None:
        with torch.no_grad():
            stats = torch.stack([loss, q_sa.mean(), (q_sa - target).abs().mean()])
            self._stats = stats if self._stats is None else self._stats + stats
        self._stats_count += 1

    def _log_train_metrics(self) -> None:
        assert self._stats is not None
        loss, q_mean, td_abs = (self._stats / self._stats_count).tolist()  # one host sync
        now = time.perf_counter()
        last_time, last_updates = self._last_log
        metrics = {
            "train/loss": loss,
            "train/q_mean": q_mean,
            "train/td_error_abs": td_abs,
            "train/updates": float(self.updates),
            "perf/updates_per_s": (self.updates - last_updates) / max(now - last_time, 1e-9),
        }
        self._last_log = (now, self.updates)
        self._stats, self._stats_count = None, 0
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.env_steps)
