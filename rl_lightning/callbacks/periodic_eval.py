"""Greedy evaluation every ``every_env_steps`` environment steps, and once at the end, on
separate envs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl

from rl_lightning.context import RunContext
from rl_lightning.greedy import evaluate_greedy
from rl_lightning.module import QLearningModule


class GreedyEvaluationCallback(pl.Callback):
    """Logs ``eval/return_mean`` and ``eval/return_std`` against environment steps.

    Args:
        context: the run's facts: ``make_env`` builds the evaluation envs (once, lazily) and
            ``eval_seed`` seeds them (each evaluation uses the same start states, so curves
            compare policies, not start-state luck).
        every_env_steps: evaluation period in environment steps (0 disables).
        episodes: episodes per periodic evaluation (one env lane each).
        final_episodes: episodes of the final evaluation (``evaluate_final``, summary.json).
    """

    def __init__(
        self,
        *,
        context: RunContext,
        every_env_steps: int,
        episodes: int,
        final_episodes: int,
    ) -> None:
        self.make_env = context.make_env
        self.every_env_steps = int(every_env_steps)
        self.episodes = int(episodes)
        self.final_episodes = int(final_episodes)
        self.seed = context.eval_seed
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
            self._env = self.make_env(self.episodes)
        returns = evaluate_greedy(
            pl_module.q_network, self._env, episodes=self.episodes, seed=self.seed
        )
        metrics = self._log(trainer, returns, env_steps)
        self.history.append({"env_steps": float(env_steps), **metrics})

    def evaluate_final(self, trainer: pl.Trainer, pl_module: QLearningModule) -> np.ndarray:
        """The final greedy evaluation (``final_episodes`` episodes on fresh envs, same seed),
        logged at the last env step; returns the episodes' returns (not added to history)."""
        env = self.make_env(self.final_episodes)
        try:
            returns = evaluate_greedy(
                pl_module.q_network, env, episodes=self.final_episodes, seed=self.seed
            )
        finally:
            env.close()
        self._log(trainer, returns, pl_module.env_steps)
        for logger in trainer.loggers:
            logger.save()
        return returns

    @staticmethod
    def _log(trainer: pl.Trainer, returns: np.ndarray, env_steps: int) -> dict[str, float]:
        metrics = {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=env_steps)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "next_eval": self._next_eval}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self._next_eval = int(state_dict["next_eval"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
