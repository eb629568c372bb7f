"""A small deterministic chain MDP whose optimal Q is known (for learning tests).

States 0 .. n-1 in a row; the agent starts in a uniformly random non-terminal state.
Action 0 moves left (state 0 stays put), action 1 moves right. Entering state n-1 gives
reward 1 and terminates; every other step gives 0. Observations are one-hot vectors, so a
linear Q-network without bias over them is exactly a table. Episodes are truncated by the
time limit, which must bootstrap (the chain goes on), so Q* is the infinite-horizon value.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ChainEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, num_states: int = 6) -> None:
        if num_states < 2:
            raise ValueError("the chain needs at least 2 states")
        self.num_states = num_states
        self.observation_space = gym.spaces.Box(0.0, 1.0, (num_states,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._state = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_states, dtype=np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = int(self.np_random.integers(self.num_states - 1))
        return self._obs(), {}

    def step(self, action):
        move = 1 if int(action) == 1 else -1
        self._state = int(np.clip(self._state + move, 0, self.num_states - 1))
        terminated = self._state == self.num_states - 1
        return self._obs(), float(terminated), terminated, False, {}


def chain_optimal_q(num_states: int, gamma: float, iterations: int = 1000) -> np.ndarray:
    """Q* by value iteration: ``(num_states - 1, 2)`` for the non-terminal states."""
    q = np.zeros((num_states, 2))
    for _ in range(iterations):
        v = q.max(axis=1)
        v[num_states - 1] = 0.0  # terminal
        new = np.zeros_like(q)
        for s in range(num_states - 1):
            for a, move in ((0, -1), (1, 1)):
                s2 = min(max(s + move, 0), num_states - 1)
                reward = 1.0 if s2 == num_states - 1 else 0.0
                new[s, a] = reward + gamma * v[s2]
        q = new
    return q[: num_states - 1]
