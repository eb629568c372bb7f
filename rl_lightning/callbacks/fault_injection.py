"""Fault injection for tests of the failure path: raise once training reaches an env step."""

from __future__ import annotations

import pytorch_lightning as pl

from rl_lightning.module import QLearningModule


class InjectedFault(RuntimeError):
    """The deliberate failure of ``fault_injection.fail_at_env_steps``."""


class FaultInjectionCallback(pl.Callback):
    """Raises ``InjectedFault`` after the first update burst that reaches ``fail_at_env_steps``.

    For tests of what a failed run leaves behind (``status: failed`` in summary.json) and of a
    sweep that carries on past a failed job: ``rl-train -m ... fault_injection.fail_at_env_steps=N``.
    """

    def __init__(self, *, fail_at_env_steps: int | None) -> None:
        if fail_at_env_steps is not None and fail_at_env_steps < 0:
            raise ValueError(f"fail_at_env_steps must be >= 0, got {fail_at_env_steps}")
        self.fail_at_env_steps = fail_at_env_steps

    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: QLearningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.fail_at_env_steps is not None and pl_module.env_steps >= self.fail_at_env_steps:
            raise InjectedFault(
                f"fault_injection.fail_at_env_steps={self.fail_at_env_steps} reached at env "
                f"step {pl_module.env_steps}"
            )
