"""QLearningModule: the update engine around a ``TDLoss`` -- K optimizer steps per training
step on a fast direct path or through Lightning -- with logging and checkpoint state.

The maths (estimator, regression loss, target network) is in ``rl_lightning.losses.TDLoss``;
the statistics and the divergence watch in ``rl_lightning.train_stats``.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.data.sequences import SequenceBatch
from rl_lightning.distributed import average_gradients
from rl_lightning.estimators.core import Estimator
from rl_lightning.exploration import Exploration
from rl_lightning.losses import TDLoss
from rl_lightning.train_stats import TrainingDiverged, TrainStats, ValueWatchdog

__all__ = [
    "QLearningModule",
    "TrainingDiverged",
    "clip_grad_norm",
    "foreach_clip_supported",
    "grad_norm",
]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: called after each update's loss with the minibatch and its TD errors target - Q (B,)
TDErrorsHook = Callable[[TransitionBatch, torch.Tensor], None]
#: the whole-batch types (``(K, B, ...)``): n-step transitions, or sequences (recurrent nets)
BATCH_TYPES = (TransitionBatch, SequenceBatch)

#: Lightning hooks run around every optimizer step; the direct update path is taken only when
#: neither the module nor any callback overrides one of them
PER_UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def foreach_clip_supported(params: list[nn.Parameter]) -> bool:
    """All parameters on one CPU or CUDA device with one floating dtype: torch's
    ``clip_grad_norm_`` then takes its single-group foreach path, which ``clip_grad_norm``
    reproduces without the per-call grouping."""
    if not params:
        return False
    device, dtype = params[0].device, params[0].dtype
    return (
        device.type in ("cpu", "cuda")
        and dtype.is_floating_point
        and all(p.device == device and p.dtype == dtype for p in params)
    )


@torch.no_grad()
def grad_norm(params: list[nn.Parameter], foreach: bool) -> torch.Tensor:
    """The global gradient 2-norm sqrt(sum_p ||grad_p||^2), computed as ``clip_grad_norm``
    computes it (the same foreach kernels when ``foreach``), without clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = (
        torch._foreach_norm(grads, 2.0) if foreach else [torch.linalg.vector_norm(g) for g in grads]
    )
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float, foreach: bool) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (2-norm), op for op the same
    computation as its foreach path (bitwise the same gradients), without regrouping the
    tensors by device and dtype on every call when ``foreach_clip_supported(params)``."""
    if not foreach:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    clip_coef = torch.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, clip_coef)
    return total_norm


class QLearningModule(pl.LightningModule):
    """Minimises ``loss`` (a ``TDLoss``: the regression of Q(s_tm1, a_tm1) on a constant TD
    target) by K optimizer steps per training step, calling the target update after each.

    Each batch holds K minibatches (``(K, B, ...)``, or an ``InterleavedUpdates`` that produces
    them one at a time); ``training_step`` does K optimizer steps, one per minibatch. This keeps
    the semantics of K separate updates while paying Lightning's per-step overhead once per K
    updates.

    The inner updates go straight to torch (``loss.backward()``, ``clip_grad_norm_``,
    ``optimizer.step()``, Lightning's step counter kept) on a single device or under DDP (one
    all-reduce of the flattened gradients per update, DDP's own reducer switched off) at 32-bit
    precision with no profiler and nobody listening to Lightning's per-update hooks
    (``PER_UPDATE_HOOKS``, ``backward``); otherwise, e.g. under mixed precision, through
    Lightning's ``manual_backward`` / ``clip_gradients`` / ``LightningOptimizer.step``. The maths
    is the same.

    The loss's networks are registered here as ``q_network`` and ``target_network`` (the keys of
    checkpoints' ``state_dict``); ``estimator`` and ``exploration`` are the loss's.

    Args:
        loss: the TD loss around the online network (and its target network, if any).
        target_update: ``NoTargetUpdate`` / ``HardTargetUpdate`` / ``PolyakTargetUpdate``; it
            must agree with the loss about having a target network.
        optimizer: a partial ``params -> torch.optim.Optimizer`` (Hydra ``_partial_: true``).
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
        log_every_updates: log ``train/*`` every this many updates (one host sync each time).
        total_env_steps: the training budget, for the learning-rate schedule.
        lr_end_factor: the learning rate decays linearly in env steps from its initial value
            to ``lr_end_factor`` times it at ``total_env_steps`` (1.0: constant).
        config: the resolved run config, stored in checkpoints so they can be rebuilt.
        on_td_errors: if set, called after each update's loss with the minibatch and its TD
            errors target - Q(s_tm1, a_tm1) (B,), detached (a prioritized sampler's update).
    """

    def __init__(
        self,
        *,
        loss: TDLoss,
        target_update: Any,
        optimizer: OptimizerFactory,
        max_grad_norm: float | None = None,
        log_every_updates: int = 100,
        total_env_steps: int = 0,
        lr_end_factor: float = 1.0,
        config: dict | None = None,
        on_td_errors: TDErrorsHook | None = None,
    ) -> None:
        super().__init__()
        if bool(target_update.uses_target_network) != (loss.target_network is not None):
            raise ValueError(
                f"{type(target_update).__name__} and the loss disagree about a target network: "
                "build the TDLoss with use_target_network=target_update.uses_target_network"
            )
        self.automatic_optimization = False
        self.loss = loss
        self.q_network = loss.q_network
        self.target_network: nn.Module | None = loss.target_network
        self.target_update = target_update
        self.optimizer_factory = optimizer
        self.max_grad_norm = max_grad_norm
        self.log_every_updates = int(log_every_updates)
        self.total_env_steps = int(total_env_steps)
        self.lr_end_factor = float(lr_end_factor)
        self.config = config or {}
        self.on_td_errors = on_td_errors
        self.updates = 0
        self.env_steps = 0
        self.stats = TrainStats()  # deferred statistics and the divergence watch
        #: compares train/q_max with the value bound at each train-metrics log (None: off)
        self.watchdog: ValueWatchdog | None = None
        self._last_log = (time.perf_counter(), 0)
        self._direct: bool | None = None  # take the direct update path (decided at train start)
        #: False: always update through Lightning's hooks (the benchmark's ablation)
        self.allow_direct_updates = True
        self._params: list[nn.Parameter] = []
        self._foreach_clip = False  # clip with two foreach kernels (see clip_grad_norm)
        self._average_grads = False  # DDP on the direct path: all-reduce the gradients here
        self.learn_time_s = 0.0  # wall time inside learn(): updates, not collection (perf)

    @property
    def estimator(self) -> Estimator:
        """The loss's TD estimator (its ``n_step`` sizes the replay windows)."""
        return self.loss.estimator

    @property
    def exploration(self) -> Exploration:
        """The behaviour policy the loss was given (the rollout metrics read it)."""
        assert self.loss.exploration is not None, "the TDLoss was built without an exploration"
        return self.loss.exploration

    # -- Lightning hooks ---------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.q_network.parameters())

    def train(self, mode: bool = True) -> QLearningModule:
        super().train(mode)
        if self.target_network is not None:
            self.target_network.eval()  # a fixed function (trainer.fit never calls this: TDLoss)
        return self

    def on_train_start(self) -> None:
        trainer: Any = self.trainer
        listeners = [self, *trainer.callbacks]
        strategy = trainer.strategy
        ddp = type(strategy) is DDPStrategy and isinstance(strategy.model, DistributedDataParallel)
        self._direct = (
            self.allow_direct_updates
            and (type(strategy) is SingleDeviceStrategy or ddp)
            and type(trainer.precision_plugin) is Precision
            and isinstance(trainer.profiler, PassThroughProfiler)
            and not is_overridden("backward", self, pl.LightningModule)
            and not any(
                is_overridden(hook, obj, pl.LightningModule if obj is self else pl.Callback)
                for obj in listeners
                for hook in PER_UPDATE_HOOKS
            )
        )
        self._params = list(self.q_network.parameters())
        self._foreach_clip = foreach_clip_supported(self._params)
        self.stats.to(self.device)  # statistics restored from a checkpoint come back on the CPU
        optimizer = cast(LightningOptimizer, self.optimizers()).optimizer
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        # the lean zero_grad below clears exactly the optimizer's parameters
        self._direct = self._direct and trained == {id(p) for p in self._params}
        # DDP on the direct path: one all-reduce of the flattened gradients per update here,
        # instead of DDP's reducer (which Lightning prepares before each manual backward)
        self._average_grads = bool(self._direct and ddp)
        if self._average_grads:
            strategy.model.require_backward_grad_sync = False

    def training_step(self, dataloader_iter: Iterator) -> None:
        """Fetch the next item *now* -- the collector acts with the current weights -- and learn.

        Taking ``dataloader_iter`` switches off Lightning's one-batch prefetch, which would
        otherwise collect each burst with the weights from before the previous burst's updates.
        The stream's end (StopIteration) ends the epoch.
        """
        batch, _, _ = next(dataloader_iter)
        if isinstance(batch, BATCH_TYPES):
            batch = self.trainer.strategy.batch_to_device(batch)
        self.learn(batch)

    def learn(self, batch: TransitionBatch | Iterable[TransitionBatch]) -> None:
        """K optimizer steps: on the K minibatches of ``batch`` (shapes ``(K, B, ...)``), or on
        the minibatches an ``InterleavedUpdates`` produces (acting between them)."""
        opt = cast(LightningOptimizer, self.optimizers())
        if self._direct is None:  # learn() called outside trainer.fit
            self._direct = False
            self._params = list(self.q_network.parameters())
            self._foreach_clip = False
        if isinstance(batch, BATCH_TYPES):
            start = time.perf_counter()
            if self.lr_end_factor != 1.0:
                self._anneal_lr(opt.optimizer, self.env_steps)  # before this batch's burst
            self.env_steps = batch.env_steps
            for k in range(batch.actions.shape[0]):
                # (a SequenceBatch when the loss is a RecurrentTDLoss)
                self._update(opt, batch.map(operator.itemgetter(k)))  # type: ignore[arg-type]
            self.learn_time_s += time.perf_counter() - start
        else:
            device = self._params[0].device
            on_cpu, anneal = device.type == "cpu", self.lr_end_factor != 1.0
            learn_time = 0.0
            try:
                for minibatch in batch:  # acting happens inside the iteration
                    start = time.perf_counter()
                    if not on_cpu:
                        minibatch = minibatch.map(lambda x: x.to(device, non_blocking=True))
                    if anneal:
                        self._anneal_lr(opt.optimizer, self.env_steps)  # before this acting
                    self.env_steps = minibatch.env_steps
                    self._update(opt, minibatch)
                    learn_time += time.perf_counter() - start
            finally:
                self.learn_time_s += learn_time
        self.stats.steps_since_check.append((self.updates, self.env_steps))
        if self.stats.unlogged() >= self.log_every_updates:
            self._log_train_metrics()

    def _update(self, opt: LightningOptimizer, minibatch: TransitionBatch) -> None:
        """One optimizer step on one minibatch ``(B, ...)``, then the target update."""
        loss, q_sa, target = self.loss(minibatch)
        if self._direct:
            for param in self._params:  # optimizer.zero_grad(set_to_none=True), lean
                param.grad = None
            loss.backward()
            if self._average_grads:  # DDP: the mean gradient of all ranks
                average_gradients(self._params)
            if self.max_grad_norm is not None:  # the norm before clipping
                norm = clip_grad_norm(self._params, self.max_grad_norm, self._foreach_clip)
            else:
                norm = grad_norm(self._params, self._foreach_clip)
            opt._on_before_step()  # Lightning's optimizer-step counter (trainer.global_step)
            opt.optimizer.step()
            opt._on_after_step()
        else:
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            norm = grad_norm(self._params, self._foreach_clip)  # before clipping
            if self.max_grad_norm is not None:
                self.clip_gradients(
                    opt.optimizer,
                    gradient_clip_val=self.max_grad_norm,
                    gradient_clip_algorithm="norm",
                )
            opt.step()
        if self.on_td_errors is not None:  # after the step: its host copy waits for no backward
            self.on_td_errors(minibatch, self.loss.td_errors(q_sa, target))
        self.updates += 1
        self.target_update(self.q_network, self.target_network, self.updates)
        self.stats.add(loss, q_sa, target, norm, self.updates)

    def compute_loss(
        self, batch: TransitionBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Q(s_tm1, a_tm1) (B,), target (B,)) of one minibatch: ``self.loss(batch)``."""
        return self.loss(batch)

    def lr_factor(self, env_steps: int) -> float:
        """The learning rate at ``env_steps`` over the initial one: 1 - (1 - lr_end_factor) *
        min(1, env_steps / total_env_steps)."""
        progress = min(1.0, env_steps / max(self.total_env_steps, 1))
        return 1.0 - (1.0 - self.lr_end_factor) * progress

    def _anneal_lr(self, optimizer: torch.optim.Optimizer, env_steps: int) -> None:
        """lr = lr_0 * (1 - (1 - lr_end_factor) * env_steps / total_env_steps), set once per
        batch from the env steps collected before the batch's burst (so the first burst learns
        at lr_0 and the last one not at the end value); interleaved: before every update, from
        the env steps before its acting."""
        factor = self.lr_factor(env_steps)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor

    # -- checkpoint state --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Counters and the statistics not yet logged, exactly as they are (folding them now
        would change the order of the sums and so the logged means)."""
        checkpoint["rl_lightning"] = {
            "config": self.config,
            "updates": self.updates,
            "env_steps": self.env_steps,
            **self.stats.state_dict(),
            "value_warning": self.watchdog.warning if self.watchdog is not None else None,
            "learn_time_s": self.learn_time_s,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rl_lightning", {})
        self.updates = int(state.get("updates", 0))
        self.env_steps = int(state.get("env_steps", 0))
        self.stats.load_state_dict(state)
        if self.watchdog is not None:  # warned before the checkpoint: not again
            self.watchdog.warning = state.get("value_warning")
        self.learn_time_s = float(state.get("learn_time_s", 0.0))

    # -- divergence and logging --------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` if an update since the last check had a non-finite loss,
        Q(s, a) or TD target, or a parameter is non-finite: one host sync (called before every
        checkpoint, so that none holds diverged weights, and when training ends)."""
        self.stats.check_finite(self.q_network.parameters(), self.updates, self.env_steps)

    def _log_train_metrics(self) -> None:
        means = self.stats.take_means(self.updates)  # one host sync
        now = time.perf_counter()
        last_time, last_updates = self._last_log
        metrics = {
            "train/loss": means[0],
            "train/q_mean": means[1],
            "train/td_error_abs": means[2],
            "train/grad_norm": means[3],
            "train/q_max": means[4],
            "train/updates": float(self.updates),
            "perf/updates_per_s": (self.updates - last_updates) / max(now - last_time, 1e-9),
        }
        self._last_log = (now, self.updates)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.env_steps)
        self.stats.after_log(means, self.updates, self.env_steps)
        if self.watchdog is not None:
            self.watchdog.check(means[4], self.updates, self.env_steps)
