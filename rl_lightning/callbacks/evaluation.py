"""Greedy evaluation every ``every_env_steps`` environment steps, on separate envs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import pytorch_lightning as pl

from rl_lightning.evaluation import evaluate_greedy
from rl_lightning.module import QLearningModule


class GreedyEvaluationCallback(pl.Callback):
    """Logs ``eval/return_mean`` and ``eval/return_std`` against environment steps.

    Args:
        make_env: builds the evaluation vector env (called once, lazily).
        every_env_steps: evaluation period in environment steps (0 disables).
        episodes: episodes per evaluation.
        seed: evaluation seed (each evaluation uses the same start states, so curves
            compare policies, not start-state luck).
    """

    def __init__(
        self,
        *,
        make_env: Callable[[], gym.vector.VectorEnv],
        every_env_steps: int,
        episodes: int,
        seed: int,
    ) -> None:
        self.make_env = make_env
        self.every_env_steps = int(every_env_steps)
        self.episodes = int(episodes)
        self.seed = seed
        self.history: list[dict[str, float]] = []
        self._env: gym.vector.VectorEnv | None = None
        self._next_eval = self.every_env_steps

    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: QLearningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.every_env_steps <= 0:
            return
        env_steps = pl_module.env_steps
        if env_steps < self._next_eval:
            return
        while self._next_eval <= env_steps:
            self._next_eval += self.every_env_steps
        if self._env is None:
            self._env = self.make_env()
        returns = evaluate_greedy(
            pl_module.q_network, self._env, episodes=self.episodes, seed=self.seed
        )
        metrics = {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
        }
        self.history.append({"env_steps": float(env_steps), **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=env_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "next_eval": self._next_eval}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self._next_eval = int(state_dict["next_eval"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
