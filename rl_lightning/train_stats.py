"""Training statistics without per-update host syncs, and the divergence watch built on them.

Each update leaves (loss, Q(s_tm1, a_tm1) (B,), target (B,)), detached, in ``pending``: no
arithmetic per update. Every ``STATS_FOLD`` updates (and before logging) they are folded into
running sums of (loss, mean Q, mean |TD error|) in one vectorised reduction; the fold also
records, on the device, the first update whose values are non-finite. Logging reads the means
(one host sync); ``check_finite`` (before every checkpoint, and at the end) raises
``TrainingDiverged`` naming that first update and the env step of its training step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

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


class TrainStats:
    """Running sums of (loss, mean Q, mean |TD error|) and the record of the first non-finite
    update since the last check.

    Attributes:
        sums: ``(3,)`` running sums since the last log, or None.
        count: updates folded into ``sums``.
        pending: per-update (loss, q_sa, target) not yet folded.
        first_nonfinite: device scalar, the first non-finite update found by a fold, or None.
        steps_since_check: (updates, env steps) after each training step since the last
            check, to name the env step of the first non-finite update.
    """

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.count = 0
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.first_nonfinite: torch.Tensor | None = None
        self.steps_since_check: list[tuple[int, int]] = []

    def add(
        self, loss: torch.Tensor, q_sa: torch.Tensor, target: torch.Tensor, updates: int
    ) -> None:
        """Keep one update's values (``updates``: the count including it)."""
        self.pending.append((loss.detach(), q_sa.detach(), target))
        if len(self.pending) >= STATS_FOLD:
            self.fold(updates)

    def unlogged(self) -> int:
        """Updates since the last log, folded or not."""
        return self.count + len(self.pending)

    def fold(self, updates: int) -> None:
        """Add the pending updates' (loss, mean Q, mean |TD error|) to the running sums;
        ``updates``: the number of the last pending update."""
        if not self.pending:
            return
        with torch.no_grad():
            losses, qs, targets = zip(*self.pending, strict=True)
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
            sums = torch.stack([loss.sum(), q_mean.sum(), td_abs.sum()])
            self.sums = sums if self.sums is None else self.sums + sums
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

    def take_means(self, updates: int) -> tuple[float, float, float]:
        """Fold, return the means of (loss, Q, |TD error|) since the last log (one host sync)
        and start new sums."""
        self.fold(updates)
        assert self.sums is not None
        loss, q_mean, td_abs = (self.sums / self.count).tolist()
        self.sums, self.count = None, 0
        return loss, q_mean, td_abs

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
            checks.append(torch.isfinite(self.sums).all())
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

    def state_dict(self) -> dict[str, Any]:
        """Exactly as they are (folding now would change the order of the sums and so the
        logged means); the keys of the checkpoint's ``rl_lightning`` entry."""
        return {
            "stats": self.sums,
            "stats_count": self.count,
            "pending": list(self.pending),
            "first_nonfinite": self.first_nonfinite,
            "steps_since_check": list(self.steps_since_check),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = state.get("stats")
        self.count = int(state.get("stats_count", 0))
        self.pending = [tuple(p) for p in state.get("pending", [])]  # type: ignore[misc]
        self.first_nonfinite = state.get("first_nonfinite")
        self.steps_since_check = [tuple(s) for s in state.get("steps_since_check", [])]  # type: ignore[misc]
