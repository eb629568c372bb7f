"""A hand-built env whose every value is known, shared by the frame-stack and recurrent tests.

Lane ``l``'s observation at vector step (= buffer row) ``j`` is ``j * 10 + l`` (in every entry
of ``shape``): the env counts its reset and step calls, and NEXT_STEP auto-reset makes exactly
one of them per vector step. Episodes last ``length`` steps, terminated (or truncated when
``truncate``); every reward is 1.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation ``calls * 10 + lane``; episodes of ``length`` steps, reward 1."""

    def __init__(
        self, lane: int, length: int, truncate: bool = False, shape=(1,), num_actions: int = 2
    ) -> None:
        self.lane, self.length, self.truncate, self.shape = lane, length, truncate, shape
        self.observation_space = gym.spaces.Box(-1e6, 1e6, shape, np.float32)
        self.action_space = gym.spaces.Discrete(num_actions)
        self.calls = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.full(self.shape, self.calls * 10 + self.lane, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.calls += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.calls += 1
        self.t += 1
        end = self.t == self.length
        return self._obs(), 1.0, end and not self.truncate, end and self.truncate, {}


def counting_env(
    lengths=(2, 3), truncate=(False, True), shape=(1,), num_actions: int = 2
) -> gym.vector.VectorEnv:
    """A NEXT_STEP sync vector env of ``CountingEnv`` lanes, one per entry of ``lengths``."""
    fns = [
        partial(CountingEnv, lane, length, trunc, shape, num_actions)
        for lane, (length, trunc) in enumerate(zip(lengths, truncate, strict=True))
    ]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
