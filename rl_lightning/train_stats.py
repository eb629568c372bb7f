"""Training statistics without per-update host syncs, and the divergence watch built on them.

Each update leaves (loss, Q(s_tm1, a_tm1) (B,), target (B,), gradient norm), detached, in
``pending``: no arithmetic per update. Every ``STATS_FOLD`` updates (and before logging) they are
folded into running sums of (loss, mean Q, mean |TD error|, gradient norm) and a running
max |Q(s_tm1, a_tm1)| in one vectorised reduction; the fold also records, on the device, the
first update whose values are non-finite. Logging reads the means (one host sync);
``check_finite`` (before every checkpoint, and at the end) raises ``TrainingDiverged`` naming
that first update and the env step of its training step. ``ValueWatchdog`` compares the logged
max |Q| with the largest achievable |return| (``value_bound``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

#: pending per-update statistics are folded into running sums every this many updates
STATS_FOLD = 256
#: "no non-finite update seen" in the device-side record of the first one
_NO_UPDATE = torch.iinfo(torch.int64).max

log = logging.getLogger("rl_lightning")


class TrainingDiverged(RuntimeError):
    """A loss, Q(s, a) or TD target became non-finite (NaN or infinite).

    Also raised by ``ValueWatchdog`` (``watchdog.on_value_blowup=stop``) when |Q| exceeds the
    value bound by the margin (``reason="value-blowup"``, ``message`` its numbers).

    Attributes:
        update: the first update (1-based optimizer-step count) with a non-finite value.
        env_steps: the env step of the training step that made that update.
        reason: ``"non-finite"`` or ``"value-blowup"`` (summary.json's ``reason``).
    """

    def __init__(
        self,
        update: int,
        env_steps: int,
        detected_at_update: int,
        *,
        reason: str = "non-finite",
        message: str | None = None,
    ) -> None:
        super().__init__(
            message
            or f"non-finite loss or Q-value at update {update} (env step {env_steps}; detected "
            f"at update {detected_at_update})"
        )
        self.update = update
        self.env_steps = env_steps
        self.detected_at_update = detected_at_update
        self.reason = reason


class TrainStats:
    """Running sums of (loss, mean Q, mean |TD error|, gradient norm), the running
    max |Q(s_tm1, a_tm1)|, and the record of the first non-finite update since the last check.

    Attributes:
        sums: ``(4,)`` running sums since the last log, or None.
        q_abs_max: device scalar, max |Q(s_tm1, a_tm1)| since the last log, or None.
        count: updates folded into ``sums``.
        pending: per-update (loss, q_sa, target, grad_norm) not yet folded.
        first_nonfinite: device scalar, the first non-finite update found by a fold, or None.
        steps_since_check: (updates, env steps) after each training step since the last
            check, to name the env step of the first non-finite update.
    """

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.q_abs_max: torch.Tensor | None = None
        self.count = 0
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.first_nonfinite: torch.Tensor | None = None
        self.steps_since_check: list[tuple[int, int]] = []

    def add(
        self,
        loss: torch.Tensor,
        q_sa: torch.Tensor,
        target: torch.Tensor,
        grad_norm: torch.Tensor,
        updates: int,
    ) -> None:
        """Keep one update's values (``grad_norm``: the global gradient 2-norm before clipping,
        a scalar tensor; ``updates``: the count including it)."""
        self.pending.append((loss.detach(), q_sa.detach(), target, grad_norm))
        if len(self.pending) >= STATS_FOLD:
            self.fold(updates)

    def unlogged(self) -> int:
        """Updates since the last log, folded or not."""
        return self.count + len(self.pending)

    def fold(self, updates: int) -> None:
        """Add the pending updates' (loss, mean Q, mean |TD error|, gradient norm) to the
        running sums and their max |Q| to the running max; ``updates``: the number of the last
        pending update."""
        if not self.pending:
            return
        with torch.no_grad():
            losses, qs, targets, norms = zip(*self.pending, strict=True)
            loss = torch.stack(losses)
            if len({q.shape for q in qs}) == 1:  # equal minibatch sizes: one reduction each
                q = torch.stack(qs)
                q_mean = q.mean(dim=1)
                td_abs = (q - torch.stack(targets)).abs().mean(dim=1)
                q_abs_max = q.abs().amax()
            else:  # online minibatches differ in size
                q_mean = torch.stack([q.mean() for q in qs])
                td_abs = torch.stack(
                    [(q - t).abs().mean() for q, t in zip(qs, targets, strict=True)]
                )
                q_abs_max = torch.stack([q.abs().amax() for q in qs]).amax()
            norm = torch.stack([n.to(loss.device, loss.dtype) for n in norms])
            sums = torch.stack([loss.sum(), q_mean.sum(), td_abs.sum(), norm.sum()])
            self.sums = sums if self.sums is None else self.sums + sums
            # NaN propagates through maximum (a non-finite Q shows in train/q_max too)
            self.q_abs_max = (
                q_abs_max if self.q_abs_max is None else self.q_abs_max.maximum(q_abs_max)
            )
            # the first non-finite update of this fold, on the device (no host sync)
            finite = torch.isfinite(loss) & torch.isfinite(q_mean) & torch.isfinite(td_abs)
            numbers = torch.arange(1, len(losses) + 1, device=loss.device)
            numbers += updates - len(losses)
            first = torch.where(finite, _NO_UPDATE, numbers).min()
            self.first_nonfinite = (
                first if self.first_nonfinite is None else self.first_nonfinite.minimum(first)
            )
        self.count += len(self.pending)
        self.pending = []

    def take_means(self, updates: int) -> tuple[float, float, float, float, float]:
        """Fold, return the means of (loss, Q, |TD error|, gradient norm) and the max |Q| since
        the last log (one host sync), and start new sums."""
        self.fold(updates)
        assert self.sums is not None and self.q_abs_max is not None
        means = torch.cat([self.sums / self.count, self.q_abs_max.reshape(1)])
        loss, q_mean, td_abs, grad_norm, q_abs_max = means.tolist()
        self.sums, self.q_abs_max, self.count = None, None, 0
        return loss, q_mean, td_abs, grad_norm, q_abs_max

    def after_log(self, means: Iterable[float], updates: int, env_steps: int) -> None:
        """Raise ``TrainingDiverged`` if the logged means are non-finite (after logging: the
        curve shows where it went), else forget the checked updates."""
        if not all(map(math.isfinite, means)):
            self.raise_diverged(updates, env_steps)
        self.first_nonfinite, self.steps_since_check = None, []

    def check_finite(
        self, parameters: Iterable[nn.Parameter], updates: int, env_steps: int
    ) -> None:
        """Raise ``TrainingDiverged`` if an update since the last check had a non-finite loss,
        Q(s, a) or TD target, or a parameter is non-finite: one host sync. The pending values
        are checked where they are, not folded: folding early would change the order of the
        sums, and so the logged means, with the checkpoint schedule."""
        checks = [torch.isfinite(p).all() for p in parameters]
        checks += [torch.isfinite(x).all() for entry in self.pending for x in entry]
        if self.sums is not None:
            checks.append(torch.isfinite(self.sums[:3]).all())  # not the gradient norm
        if not bool(torch.stack(checks).all()):
            self.raise_diverged(updates, env_steps)
        self.first_nonfinite, self.steps_since_check = None, []

    def raise_diverged(self, updates: int, env_steps: int) -> None:
        """The first non-finite update: from the folds' device-side record, else among the
        pending ones, else (only the parameters went non-finite) the latest."""
        first = updates if self.first_nonfinite is None else int(self.first_nonfinite)
        base = updates - len(self.pending) + 1
        for number, entry in enumerate(self.pending, start=base):
            if number < first and not all(bool(torch.isfinite(x).all()) for x in entry):
                first = number
                break
        first = min(first, updates)
        at = next((e for u, e in self.steps_since_check if u >= first), env_steps)
        raise TrainingDiverged(first, at, updates)

    def to(self, device: torch.device) -> None:
        """Move the sums and pending values (restored from a checkpoint on the CPU)."""
        self.pending = [tuple(x.to(device) for x in p) for p in self.pending]  # type: ignore[misc]
        if self.sums is not None:
            self.sums = self.sums.to(device)
        if self.q_abs_max is not None:
            self.q_abs_max = self.q_abs_max.to(device)

    def state_dict(self) -> dict[str, Any]:
        """Exactly as they are (folding now would change the order of the sums and so the
        logged means); the keys of the checkpoint's ``rl_lightning`` entry."""
        return {
            "stats": self.sums,
            "stats_count": self.count,
            "q_abs_max": self.q_abs_max,
            "pending": list(self.pending),
            "first_nonfinite": self.first_nonfinite,
            "steps_since_check": list(self.steps_since_check),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = state.get("stats")
        self.q_abs_max = state.get("q_abs_max")
        self.count = int(state.get("stats_count", 0))
        self.pending = [tuple(p) for p in state.get("pending", [])]  # type: ignore[misc]
        # checkpoints from before train/grad_norm and train/q_max: no gradient norm recorded
        if self.sums is not None and self.sums.numel() == 3:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(1)])
        self.pending = [p if len(p) == 4 else (*p, torch.zeros(())) for p in self.pending]  # type: ignore[misc]
        if self.q_abs_max is None and self.sums is not None:
            self.q_abs_max = self.sums.new_zeros(())
        self.first_nonfinite = state.get("first_nonfinite")
        self.steps_since_check = [tuple(s) for s in state.get("steps_since_check", [])]  # type: ignore[misc]


def value_bound(max_abs_reward: float, gamma: float, horizon: int | None = None) -> float | None:
    """The largest achievable |return|: max|r| / (1 - gamma) for gamma < 1 (truncated episodes
    bootstrap, so the infinite-horizon sum is the right bound), ``horizon * max|r|`` for
    gamma = 1 with a finite time limit, else None (no bound). Units: those of the rewards."""
    if gamma < 1.0:
        return max_abs_reward / (1.0 - gamma)
    if horizon is not None and horizon > 0:
        return max_abs_reward * horizon
    return None


#: the usual causes of a value blow-up, named in the watchdog's warning
BLOWUP_CAUSES = (
    "usual causes: the Huber loss with Adam and frequent hard target copies (try loss=mse or "
    "target=polyak), a learning rate too high, no target network (target=none), a target "
    "period too short (target.every_updates)"
)


class ValueWatchdog:
    """Warns once (or stops the run) when max |Q(s_tm1, a_tm1)| exceeds ``margin`` times the
    value bound of the rewards observed so far (``value_bound``).

    Checked at the existing host sync of the train-metrics log (``QLearningModule``), so it
    costs no sync of its own. No check while no non-zero reward has been observed (the bound
    would be 0) or when there is no bound (gamma = 1 without a time limit).

    Args:
        gamma: the run's discount per env step.
        margin: a factor >= 1: |Q| > margin * bound triggers.
        on_value_blowup: ``"warn"`` (log one warning) or ``"stop"`` (raise ``TrainingDiverged``
            with ``reason="value-blowup"``; the run ends with ``status: diverged``).
        max_abs_reward: returns the largest |r| observed so far (the collector's).
        horizon: the env's time limit in steps (used only with gamma = 1), or None.
    """

    def __init__(
        self,
        *,
        gamma: float,
        margin: float,
        on_value_blowup: str,
        max_abs_reward: Callable[[], float],
        horizon: int | None = None,
    ) -> None:
        if on_value_blowup not in ("warn", "stop"):
            raise ValueError(f"on_value_blowup must be warn or stop, got {on_value_blowup!r}")
        self.gamma = float(gamma)
        self.margin = float(margin)
        self.on_value_blowup = on_value_blowup
        self.max_abs_reward = max_abs_reward
        self.horizon = horizon
        self.warning: str | None = None  # the warning, once logged

    def check(self, q_abs_max: float, updates: int, env_steps: int) -> None:
        """Compare the logged max |Q| with the bound; warn once or raise."""
        if self.warning is not None and self.on_value_blowup == "warn":
            return
        max_r = float(self.max_abs_reward())
        bound = value_bound(max_r, self.gamma, self.horizon)
        if bound is None or max_r <= 0.0 or not q_abs_max > self.margin * bound:
            return  # (a NaN |Q| is the divergence check's)
        self.warning = (
            f"value blow-up: max |Q(s,a)| = {q_abs_max:.4g} exceeds {self.margin:g} x the largest "
            f"achievable |return| {bound:.4g} (max |r| = {max_r:.4g} observed so far, gamma = "
            f"{self.gamma:g}) at env step {env_steps} (update {updates}); {BLOWUP_CAUSES}"
        )
        if self.on_value_blowup == "stop":
            raise TrainingDiverged(
                updates, env_steps, updates, reason="value-blowup", message=self.warning
            )
        log.warning(self.warning)
