"""Steps a gymnasium vector env with a behaviour policy and writes every step to the buffer.

The collector knows nothing of Lightning: give it a vector env, a policy
``(obs (N, *obs_shape), env_step) -> actions (N,)`` and a buffer, and call ``collect``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from rl_lightning.data.buffer import ReplayBuffer

Policy = Callable[[np.ndarray, int], np.ndarray]


class VectorCollector:
    """Collects experience from ``env.num_envs`` lanes with one batched policy call per step.

    ``env_steps`` counts real transitions only: gymnasium's auto-reset steps (the step after
    an episode ended, which ignores the action) are stored but not counted.
    """

    def __init__(
        self, env: gym.vector.VectorEnv, policy: Policy, buffer: ReplayBuffer, *, seed: int
    ) -> None:
        autoreset = env.metadata.get("autoreset_mode")
        if autoreset is not None and getattr(autoreset, "name", str(autoreset)) != "NEXT_STEP":
            raise ValueError(f"VectorCollector needs AutoresetMode.NEXT_STEP, got {autoreset}")
        self.env = env
        self.policy = policy
        self.buffer = buffer
        self.seed = seed
        self.num_envs = env.num_envs
        self.env_steps = 0
        self._obs: np.ndarray | None = None
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        self._any_reset = False  # whether _reset_next has a True lane
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished_returns: list[float] = []
        self._finished_lengths: list[int] = []
        self.last_episode_return: float | None = None
        self.episodes = 0
        self.collect_time_s = 0.0  # wall time spent acting and stepping the env (perf)

    def reset(self) -> None:
        self._obs, _ = self.env.reset(seed=self.seed)
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        self._any_reset = False
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0

    def collect(self, num_vector_steps: int) -> None:
        """Advance every lane by ``num_vector_steps`` steps."""
        start = time.perf_counter()
        if self._obs is None:
            self.reset()
        for _ in range(num_vector_steps):
            self.step()
        self.collect_time_s += time.perf_counter() - start

    def step(self) -> None:
        """One vector step: act, step the env, store, book-keep episodes."""
        obs = self._obs
        assert obs is not None
        actions = self.policy(obs, self.env_steps)
        next_obs, rewards, terminated, truncated, _ = self.env.step(actions)
        reset_step = self._reset_next  # replaced below, never written in place
        self.buffer.add(obs, actions, rewards, terminated, truncated, reset_step)
        if self._any_reset:  # auto-reset steps are stored but are no transitions
            real = ~reset_step
            self.env_steps += int(np.count_nonzero(real))
            self._episode_return += rewards * real
            self._episode_length += real
        else:
            self.env_steps += self.num_envs
            self._episode_return += rewards
            self._episode_length += 1
        ended = terminated | truncated
        self._any_reset = bool(ended.any())
        if self._any_reset:
            lanes = np.flatnonzero(ended)
            self._finished_returns.extend(self._episode_return[lanes].tolist())
            self._finished_lengths.extend(self._episode_length[lanes].tolist())
            self.last_episode_return = self._finished_returns[-1]
            self.episodes += len(lanes)
            self._episode_return[lanes] = 0.0
            self._episode_length[lanes] = 0
        self._reset_next = ended
        self._obs = next_obs

    def pop_finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = (self._finished_returns, self._finished_lengths)
        self._finished_returns, self._finished_lengths = [], []
        return out
