"""Exploration: schedules over environment steps and the policies that use them.

An exploration object turns Q-values into behaviour actions while acting (``select``) and
exposes its exact action probabilities (``probs``) so that Expected SARSA can average the
bootstrap over the policy that actually collected the data.
"""

from __future__ import annotations

import numpy as np
import torch


class LinearSchedule:
    """``start`` -> ``end`` linearly over ``duration_env_steps``, then constant at ``end``.

    value(t) = start + (end - start) * min(1, max(0, t - begin_env_steps) / duration_env_steps)
    """

    def __init__(
        self, *, start: float, end: float, duration_env_steps: int, begin_env_steps: int = 0
    ) -> None:
        if duration_env_steps < 0:
            raise ValueError(f"duration_env_steps must be >= 0, got {duration_env_steps}")
        self.start, self.end = float(start), float(end)
        self.duration_env_steps = int(duration_env_steps)
        self.begin_env_steps = int(begin_env_steps)

    def __call__(self, env_step: int) -> float:
        if self.duration_env_steps == 0:
            return self.end if env_step >= self.begin_env_steps else self.start
        frac = min(1.0, max(0.0, (env_step - self.begin_env_steps) / self.duration_env_steps))
        return self.start + (self.end - self.start) * frac


class EpsilonGreedy:
    """With probability epsilon(t) a uniformly random action, otherwise argmax_a Q(s, a).

    pi(a|s) = epsilon / |A| + (1 - epsilon) * [a == argmax_a' Q(s, a')]
    """

    #: the Q-network acts in eval mode (dropout off, batchnorm running statistics)
    acting_train_mode = False

    def __init__(self, *, schedule: LinearSchedule) -> None:
        self.schedule = schedule

    def epsilon(self, env_step: int) -> float:
        return self.schedule(env_step)

    def metrics(self, env_step: int) -> dict[str, float]:
        """Values to log under ``rollout/``."""
        return {"rollout/epsilon": self.epsilon(env_step)}

    def select(self, q: torch.Tensor, env_step: int, rng: np.random.Generator) -> np.ndarray:
        """q: (N, A) Q-values -> (N,) int64 actions."""
        actions = q.argmax(dim=1).cpu().numpy()
        eps = self.epsilon(env_step)
        if eps > 0.0:
            explore = np.asarray(rng.random(actions.shape[0]) < eps)
            if explore.any():
                actions[explore] = rng.integers(q.shape[1], size=int(explore.sum()))
        return actions

    def probs(self, q: torch.Tensor, env_step: int) -> torch.Tensor:
        """q: (B, A) -> (B, A) action probabilities of this policy."""
        eps = self.epsilon(env_step)
        num_actions = q.shape[1]
        greedy = torch.nn.functional.one_hot(q.argmax(dim=1), num_actions).to(q.dtype)
        return (1.0 - eps) * greedy + eps / num_actions


class Actor:
    """The behaviour policy: one batched forward pass of the Q-network, then exploration.

    The actor shares the Q-network object with the LightningModule, so it always acts with
    the latest weights, on whatever device Lightning moved them to.
    """

    def __init__(
        self, q_network: torch.nn.Module, exploration: EpsilonGreedy, *, seed: int
    ) -> None:
        self.q_network = q_network
        self.exploration = exploration
        self.rng = np.random.default_rng(seed)
        self._mode_sensitive = any(
            isinstance(
                m, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
            )
            for m in q_network.modules()
        )

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, env_step: int) -> np.ndarray:
        """obs: (N, *obs_shape) -> (N,) actions."""
        device = next(self.q_network.parameters()).device
        obs_t = torch.as_tensor(obs, device=device)
        if not self._mode_sensitive:
            return self.exploration.select(self.q_network(obs_t), env_step, self.rng)
        was_training = self.q_network.training
        self.q_network.train(self.exploration.acting_train_mode)
        try:
            q = self.q_network(obs_t)
        finally:
            self.q_network.train(was_training)
        return self.exploration.select(q, env_step, self.rng)
