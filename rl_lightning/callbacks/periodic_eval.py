"""Greedy evaluation every ``every_env_steps`` environment steps, and once at the end, on
separate envs."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl

from rl_lightning.context import RunContext
from rl_lightning.envs import LearningSignals, find_wrapper
from rl_lightning.greedy import GreedyEvaluation, play_greedy
from rl_lightning.module import QLearningModule


class GreedyEvaluationCallback(pl.Callback):
    """Logs ``eval/return_mean``, ``eval/return_std``, ``eval/v_initial`` (mean V(s_0) of the
    episodes' first states) and ``eval/overestimation`` (mean V(s_t) - G_t over the visited
    states, with the run's gamma; ``rl_lightning.greedy.play_greedy``) against env steps.
    The periodic evaluations' values are kept in ``history`` (summary.json's ``eval_history``,
    NaN written as null); those of the final one in ``final_metrics``.

    Args:
        context: the run's facts: ``make_env`` builds the evaluation envs (once, lazily) and
            ``eval_seed`` seeds them (each evaluation uses the same start states, so curves
            compare policies, not start-state luck).
        every_env_steps: evaluation period in environment steps (0 disables).
        episodes: episodes per periodic evaluation (one env lane each).
        final_episodes: episodes of the final evaluation (``evaluate_final``, summary.json).
        epsilon: probability of a random action per step (``eval.epsilon``; 0: greedy; the
            Atari protocols evaluate with 0.001-0.05, so a stuck greedy policy cannot stall a
            game for its whole 108,000 frames).
    """

    def __init__(
        self,
        *,
        context: RunContext,
        every_env_steps: int,
        episodes: int,
        final_episodes: int,
        epsilon: float = 0.0,
    ) -> None:
        self.make_env = context.make_env
        self.epsilon = float(epsilon)
        self.every_env_steps = int(every_env_steps)
        self.episodes = int(episodes)
        self.final_episodes = int(final_episodes)
        self.seed = context.eval_seed
        self.history: list[dict[str, float | None]] = []
        self.final_metrics: dict[str, float | None] = {}
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
        if not trainer.is_global_zero:  # DDP: one evaluation (the weights are the same)
            return
        if self._env is None:
            self._env = self.make_env(self.episodes)
        _, metrics = self._evaluate(trainer, pl_module, self._env, self.episodes)
        self.history.append({"env_steps": float(env_steps), **metrics})

    def evaluate_final(self, trainer: pl.Trainer, pl_module: QLearningModule) -> np.ndarray:
        """The final greedy evaluation (``final_episodes`` episodes on fresh envs, same seed),
        logged at the last env step; returns the episodes' returns (not added to history; the
        metrics are kept in ``final_metrics``). Under DDP only rank 0 plays (others: none)."""
        if not trainer.is_global_zero:
            return np.zeros(0)
        env = self.make_env(self.final_episodes)
        try:
            result, self.final_metrics = self._evaluate(
                trainer, pl_module, env, self.final_episodes
            )
        finally:
            env.close()
        for logger in trainer.loggers:
            logger.save()
        return result.returns

    def _evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: QLearningModule,
        env: gym.vector.VectorEnv,
        episodes: int,
    ) -> tuple[GreedyEvaluation, dict[str, float | None]]:
        """Play ``episodes`` greedy episodes on ``env``, log the metrics at the current env
        step; returns the evaluation and its metrics (NaN as None, for summary.json).

        The overestimation V(s_0) - G compares the learnt values with the env's returns, so it
        is left out (NaN) where the learner sees other rewards or episode ends than the env
        reports (clipped rewards, life-loss terminals: ``LearningSignals``)."""
        same_scale = find_wrapper(env, LearningSignals) is None
        result = play_greedy(
            pl_module.q_network,
            env,
            episodes=episodes,
            seed=self.seed,
            gamma=pl_module.loss.gamma if same_scale else None,
            epsilon=self.epsilon,
        )
        metrics = {
            "eval/return_mean": float(result.returns.mean()),
            "eval/return_std": float(result.returns.std()),
            "eval/v_initial": result.v_initial,
            "eval/overestimation": result.overestimation,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=pl_module.env_steps)
        return result, _json_safe(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "next_eval": self._next_eval}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self._next_eval = int(state_dict["next_eval"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (an overestimation with no state counted) as None: summary.json stays valid JSON."""
    return {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
