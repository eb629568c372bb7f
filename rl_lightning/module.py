"""QLearningModule: the online Q-network, its target copy, and the semi-gradient TD update."""

from __future__ import annotations

import copy
import math
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import Estimator
from rl_lightning.exploration import Exploration

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

#: Lightning hooks run around every optimizer step; the direct update path is taken only when
#: neither the module nor any callback overrides one of them
PER_UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
#: pending per-update statistics are folded into running sums every this many updates
STATS_FOLD = 256
#: "no non-finite update seen" in the device-side record of the first one
_NO_UPDATE = torch.iinfo(torch.int64).max


class TrainingDiverged(RuntimeError):
    """A loss, Q(s, a) or TD target became non-finite (NaN or infinite).

    Attributes:
        update: the first update (1-based optimizer-step count) with a non-finite value.
        env_steps: the env step of the training step that made that update.
    """

    def __init__(self, update: int, env_steps: int, detected_at_update: int) -> None:
        super().__init__(
            f"non-finite loss or Q-value at update {update} (env step {env_steps}; detected at "
            f"update {detected_at_update})"
        )
        self.update = update
        self.env_steps = env_steps
        self.detected_at_update = detected_at_update


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
    """Minimises (Q(s_t, a_t) - y_t)^2 (or the Huber loss) with y_t a constant TD target.

    Each batch holds K minibatches (``(K, B, ...)``, or an ``InterleavedUpdates`` that produces
    them one at a time); ``training_step`` does K optimizer steps, one per minibatch, calling the
    target update after each. This keeps the semantics of K separate updates while paying
    Lightning's per-step overhead once per K updates.

    The inner updates go straight to torch (``loss.backward()``, ``clip_grad_norm_``,
    ``optimizer.step()``, Lightning's step counter kept) on a single device at 32-bit precision
    with no profiler and nobody listening to Lightning's per-update hooks (``PER_UPDATE_HOOKS``,
    ``backward``); otherwise, e.g. under DDP or mixed precision, through Lightning's
    ``manual_backward`` / ``clip_gradients`` / ``LightningOptimizer.step``. The maths is the same.

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
        # per-update (loss, Q(s, a), target), detached, not yet folded into _stats: no
        # arithmetic per update, one vectorised reduction every STATS_FOLD updates
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # divergence watch without per-update host syncs: the first update whose loss, mean Q
        # or mean |TD error| is non-finite, found on the device at each fold; (updates, env
        # steps) after each training step since the last check, to name that update's env step
        self._first_nonfinite: torch.Tensor | None = None
        self._steps_since_check: list[tuple[int, int]] = []
        self._last_log = (time.perf_counter(), 0)
        self._direct: bool | None = None  # take the direct update path (decided at train start)
        self._params: list[nn.Parameter] = []
        self._foreach_clip = False  # clip with two foreach kernels (see clip_grad_norm)
        self.learn_time_s = 0.0  # wall time inside learn(): updates, not collection (perf)

    # -- Lightning hooks ---------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.q_network.parameters())

    def train(self, mode: bool = True) -> QLearningModule:
        super().train(mode)
        if self.target_network is not None:
            self.target_network.eval()  # the target is a fixed function: no dropout noise
        return self

    def on_train_start(self) -> None:
        trainer: Any = self.trainer
        listeners = [self, *trainer.callbacks]
        self._direct = (
            type(trainer.strategy) is SingleDeviceStrategy
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
        # statistics restored from a checkpoint come back on the CPU
        self._pending = [tuple(x.to(self.device) for x in p) for p in self._pending]  # type: ignore[misc]
        if self._stats is not None:
            self._stats = self._stats.to(self.device)
        optimizer = cast(LightningOptimizer, self.optimizers()).optimizer
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        # the lean zero_grad below clears exactly the optimizer's parameters
        self._direct = self._direct and trained == {id(p) for p in self._params}

    def training_step(self, dataloader_iter: Iterator) -> None:
        """Fetch the next item *now* -- the collector acts with the current weights -- and learn.

        Taking ``dataloader_iter`` switches off Lightning's one-batch prefetch, which would
        otherwise collect each burst with the weights from before the previous burst's updates.
        The stream's end (StopIteration) ends the epoch.
        """
        batch, _, _ = next(dataloader_iter)
        if isinstance(batch, TransitionBatch):
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
        if isinstance(batch, TransitionBatch):
            start = time.perf_counter()
            if self.lr_end_factor != 1.0:
                self._anneal_lr(opt.optimizer, self.env_steps)  # before this batch's burst
            self.env_steps = batch.env_steps
            for k in range(batch.actions.shape[0]):
                self._update(opt, batch.map(operator.itemgetter(k)))
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
        self._steps_since_check.append((self.updates, self.env_steps))
        if self._stats_count + len(self._pending) >= self.log_every_updates:
            self._log_train_metrics()

    def _update(self, opt: LightningOptimizer, minibatch: TransitionBatch) -> None:
        """One optimizer step on one minibatch ``(B, ...)``, then the target update."""
        loss, q_sa, target = self.compute_loss(minibatch)
        if self._direct:
            for param in self._params:  # optimizer.zero_grad(set_to_none=True), lean
                param.grad = None
            loss.backward()
            if self.max_grad_norm is not None:
                clip_grad_norm(self._params, self.max_grad_norm, self._foreach_clip)
            opt._on_before_step()  # Lightning's optimizer-step counter (trainer.global_step)
            opt.optimizer.step()
            opt._on_after_step()
        else:
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
        self._pending.append((loss.detach(), q_sa.detach(), target))
        if len(self._pending) >= STATS_FOLD:
            self._fold_stats()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Counters and the statistics not yet logged, exactly as they are (folding them now
        would change the order of the sums and so the logged means)."""
        checkpoint["rl_lightning"] = {
            "config": self.config,
            "updates": self.updates,
            "env_steps": self.env_steps,
            "stats": self._stats,
            "stats_count": self._stats_count,
            "pending": list(self._pending),
            "first_nonfinite": self._first_nonfinite,
            "steps_since_check": list(self._steps_since_check),
            "learn_time_s": self.learn_time_s,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rl_lightning", {})
        self.updates = int(state.get("updates", 0))
        self.env_steps = int(state.get("env_steps", 0))
        self._stats = state.get("stats")
        self._stats_count = int(state.get("stats_count", 0))
        self._pending = [tuple(p) for p in state.get("pending", [])]  # type: ignore[misc]
        self._first_nonfinite = state.get("first_nonfinite")
        self._steps_since_check = [tuple(s) for s in state.get("steps_since_check", [])]  # type: ignore[misc]
        self.learn_time_s = float(state.get("learn_time_s", 0.0))

    # -- divergence --------------------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` if an update since the last check had a non-finite loss,
        Q(s, a) or TD target, or a parameter is non-finite: one host sync (called before every
        checkpoint, so that none holds diverged weights, and when training ends). The pending
        statistics are checked where they are, not folded: folding early would change the
        order of the sums, and so the logged means, with the checkpoint schedule."""
        checks = [torch.isfinite(p).all() for p in self.q_network.parameters()]
        checks += [torch.isfinite(x).all() for entry in self._pending for x in entry]
        if self._stats is not None:
            checks.append(torch.isfinite(self._stats).all())
        if not bool(torch.stack(checks).all()):
            self._raise_diverged()
        self._first_nonfinite, self._steps_since_check = None, []

    def _raise_diverged(self) -> None:
        """The first non-finite update: from the folds' device-side record, else among the
        pending ones, else (only the parameters went non-finite) the latest."""
        first = self.updates if self._first_nonfinite is None else int(self._first_nonfinite)
        base = self.updates - len(self._pending) + 1
        for number, entry in enumerate(self._pending, start=base):
            if number < first and not all(bool(torch.isfinite(x).all()) for x in entry):
                first = number
                break
        first = min(first, self.updates)
        env_steps = next((e for u, e in self._steps_since_check if u >= first), self.env_steps)
        raise TrainingDiverged(first, env_steps, self.updates)

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

    def _anneal_lr(self, optimizer: torch.optim.Optimizer, env_steps: int) -> None:
        """lr = lr_0 * (1 - (1 - lr_end_factor) * env_steps / total_env_steps), set once per
        batch from the env steps collected before the batch's burst (so the first burst learns
        at lr_0 and the last one not at the end value); interleaved: before every update, from
        the env steps before its acting."""
        progress = min(1.0, env_steps / max(self.total_env_steps, 1))
        factor = 1.0 - (1.0 - self.lr_end_factor) * progress
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor

    # -- logging -----------------------------------------------------------------------------
    def _fold_stats(self) -> None:
        """Add the pending updates' (loss, mean Q, mean |TD error|) to the running sums."""
        if not self._pending:
            return
        with torch.no_grad():
            losses, qs, targets = zip(*self._pending, strict=True)
            loss = torch.stack(losses)
            if len({q.shape for q in qs}) == 1:  # equal minibatch sizes: one reduction each
                q = torch.stack(qs)
                q_mean = q.mean(dim=1)
                td_abs = (q - torch.stack(targets)).abs().mean(dim=1)
            else:  # online minibatches differ in size
                q_mean = torch.stack([q.mean() for q in qs])
                td_abs = torch.stack(
                    [(q - t).abs().mean() for q, t in zip(qs, targets, strict=True)]
                )
            stats = torch.stack([loss.sum(), q_mean.sum(), td_abs.sum()])
            self._stats = stats if self._stats is None else self._stats + stats
            # the first non-finite update of this fold, on the device (no host sync)
            finite = torch.isfinite(loss) & torch.isfinite(q_mean) & torch.isfinite(td_abs)
            numbers = torch.arange(1, len(losses) + 1, device=loss.device)
            numbers += self.updates - len(losses)
            first = torch.where(finite, _NO_UPDATE, numbers).min()
            self._first_nonfinite = (
                first if self._first_nonfinite is None else self._first_nonfinite.minimum(first)
            )
        self._stats_count += len(self._pending)
        self._pending = []

    def _log_train_metrics(self) -> None:
        self._fold_stats()
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
        if not all(map(math.isfinite, (loss, q_mean, td_abs))):
            self._raise_diverged()  # after logging: the curve shows where it went
        self._first_nonfinite, self._steps_since_check = None, []
