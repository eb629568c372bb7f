"""Rollout metrics and an environment-step progress bar."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from tqdm import tqdm

from rl_lightning.module import QLearningModule


def _collector(trainer: pl.Trainer):
    return trainer.datamodule.collector  # type: ignore[attr-defined]


def _env_steps(trainer: pl.Trainer) -> int:
    """The env steps of all ranks (of this process outside DDP): ``ReplayDataset.env_steps``."""
    return int(trainer.datamodule.dataset.env_steps)  # type: ignore[attr-defined]


class RolloutMetricsCallback(pl.Callback):
    """Logs ``rollout/*`` and ``perf/env_steps_per_s`` every ``every_env_steps`` env steps."""

    def __init__(self, *, every_env_steps: int = 1000) -> None:
        self.every_env_steps = int(every_env_steps)
        self._next_log = self.every_env_steps
        self._last = (time.perf_counter(), 0)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = (time.perf_counter(), _env_steps(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {"next_log": self._next_log}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._next_log = int(state_dict["next_log"])

    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: QLearningModule, outputs, batch, batch_idx: int
    ) -> None:
        collector = _collector(trainer)
        env_steps = _env_steps(trainer)
        if env_steps < self._next_log:
            return
        while self._next_log <= env_steps:
            self._next_log += self.every_env_steps
        now = time.perf_counter()
        last_time, last_steps = self._last
        self._last = (now, env_steps)
        metrics = {"perf/env_steps_per_s": (env_steps - last_steps) / max(now - last_time, 1e-9)}
        returns, lengths = collector.pop_finished_episodes()
        if returns:
            metrics["rollout/episode_return"] = float(np.mean(returns))
            metrics["rollout/episode_length"] = float(np.mean(lengths))
        metrics.update(pl_module.exploration.metrics(env_steps))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=env_steps)


class EnvStepProgressBar(ProgressBar):
    """A tqdm bar over environment steps with env-steps/s and the latest episode return."""

    def __init__(self, *, total_env_steps: int, refresh_s: float = 0.5) -> None:
        super().__init__()
        self.total_env_steps = int(total_env_steps)
        self.refresh_s = refresh_s
        self._bar: tqdm | None = None
        self._enabled = True
        self._last_refresh = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            self._bar = tqdm(
                total=self.total_env_steps,
                unit=" env steps",
                unit_scale=True,
                dynamic_ncols=True,
                desc="train",
            )

    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: QLearningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh < self.refresh_s:
            return
        self._last_refresh = now
        self._bar.update(_env_steps(trainer) - self._bar.n)
        last = _collector(trainer).last_episode_return
        self._bar.set_postfix(
            episode_return="-" if last is None else f"{last:.1f}",
            updates=pl_module.updates,
            refresh=False,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.update(_env_steps(trainer) - self._bar.n)
            self._bar.close()
            self._bar = None
