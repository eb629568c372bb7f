"""Steps a gymnasium vector env with a behaviour policy and writes every step to the buffer.

The collector knows nothing of Lightning: give it a vector env, a policy
``(obs (N, *obs_shape), env_step) -> actions (N,)`` and a buffer, and call ``collect``.

With a frame stack (``StackObservations`` in the env's wrappers) the policy acts on the stacks
and the buffer receives only each stack's newest observation: the buffer rebuilds the stacks
when it samples (``rl_lightning.data.stacking``).

The buffer gets the learner's reward and terminal flag (``info["learn_reward"]``,
``info["learn_terminated"]`` where ``rl_lightning.envs.signals.LearningSignals`` sets them:
clipped rewards, life-loss terminals); episode returns and lengths count the env's own reward
and episode ends (a whole game, its real score).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.envs.signals import LEARN_REWARD, LEARN_TERMINATED
from rl_lightning.envs.wrappers import find_stack

Policy = Callable[[np.ndarray, int], np.ndarray]


class VectorCollector:
    """Collects experience from ``env.num_envs`` lanes with one batched policy call per step.

    ``env_steps`` counts real transitions only: gymnasium's auto-reset steps (the step after
    an episode ended, which ignores the action) are stored but not counted. ``max_abs_reward``
    is the largest |r| observed so far (the value-bound watchdog's), updated once per
    ``collect`` from the buffer rows it wrote. The policy is called with ``env_steps`` times
    ``env_step_scale``: under DDP (set by the stream to the number of ranks, which collect in
    step) the exploration schedule reads the env steps of all ranks, as its config counts them.
    """

    def __init__(
        self, env: gym.vector.VectorEnv, policy: Policy, buffer: ReplayBuffer, *, seed: int
    ) -> None:
        autoreset = env.metadata.get("autoreset_mode")
        if autoreset is not None and getattr(autoreset, "name", str(autoreset)) != "NEXT_STEP":
            raise ValueError(f"VectorCollector needs AutoresetMode.NEXT_STEP, got {autoreset}")
        self.env = env
        self.policy = policy
        #: ``episode_starts(lanes)`` of a policy with a state per lane (a recurrent network's
        #: ``Actor``): told which lanes' next observation starts an episode; None otherwise
        self._episode_starts: Callable[[np.ndarray], None] | None = (
            getattr(policy, "episode_starts", None) if getattr(policy, "recurrent", False) else None
        )
        self.buffer = buffer
        self.seed = seed
        self.num_envs = env.num_envs
        stack = find_stack(env)
        #: the agent's observations -> what the buffer stores (the newest of each stack)
        self._stored: Callable[[np.ndarray], np.ndarray] | None = (
            None if stack is None else stack.layout.newest
        )
        self.env_steps = 0
        self.env_step_scale = 1
        self._obs: np.ndarray | None = None
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        self._any_reset = False  # whether _reset_next has a True lane
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished_returns: list[float] = []
        self._finished_lengths: list[int] = []
        self.last_episode_return: float | None = None
        self.episodes = 0
        self.max_abs_reward = 0.0
        self.collect_time_s = 0.0  # wall time spent acting and stepping the env (perf)

    def reset(self) -> None:
        self._obs, _ = self.env.reset(seed=self.seed)
        if self._episode_starts is not None:
            self._episode_starts(np.ones(self.num_envs, dtype=bool))
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        self._any_reset = False
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0

    def collect(self, num_vector_steps: int) -> None:
        """Advance every lane by ``num_vector_steps`` steps."""
        start = time.perf_counter()
        if self._obs is None:
            self.reset()
        first_row = self.buffer.rows_written
        for _ in range(num_vector_steps):
            self.step()
        self._track_max_abs_reward(first_row)
        self.collect_time_s += time.perf_counter() - start

    def _track_max_abs_reward(self, first_row: int) -> None:
        """Fold the rewards of the buffer rows written since ``first_row`` (not wrapped) into
        ``max_abs_reward``: one reduction per ``collect`` (auto-reset rows hold reward 0)."""
        written, rows = self.buffer.rows_written - first_row, self.buffer.rows
        if written <= 0:
            return
        rewards = self.buffer.rewards
        start, end = first_row % rows, self.buffer.rows_written % rows
        if written >= rows:
            parts = [rewards]
        elif start < end:
            parts = [rewards[start:end]]
        else:
            parts = [rewards[start:], rewards[:end]]
        largest = max(float(np.abs(part).max()) for part in parts if part.size)
        self.max_abs_reward = max(self.max_abs_reward, largest)

    def step(self) -> None:
        """One vector step: act, step the env, store, book-keep episodes."""
        obs = self._obs
        assert obs is not None
        actions = self.policy(obs, self.env_steps * self.env_step_scale)
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        reset_step = self._reset_next  # replaced below, never written in place
        stored = obs if self._stored is None else self._stored(obs)
        self.buffer.add(  # what the learner sees: clipped rewards, life-loss terminals if set
            stored,
            actions,
            info.get(LEARN_REWARD, rewards),
            info.get(LEARN_TERMINATED, terminated),
            truncated,
            reset_step,
        )
        if self._any_reset:  # auto-reset steps are stored but are no transitions
            if self._episode_starts is not None:  # next_obs starts these lanes' episodes
                self._episode_starts(reset_step)
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

    def state_dict(self) -> dict[str, Any]:
        """Everything the next ``collect`` depends on: the environments' own state (pickled, see
        ``env_state``; None when the env cannot be pickled), the current observations, which
        lanes auto-reset next, the episodes in progress and finished since the last
        ``pop_finished_episodes``, the counters and the policy's generator (``policy.state_dict``
        where it has one)."""
        policy_state = getattr(self.policy, "state_dict", None)
        try:
            env_blob: bytes | None = env_state(self.env)
        except (pickle.PicklingError, TypeError, AttributeError):
            env_blob = None
        return {
            "env": env_blob,
            "obs": self._obs,
            "reset_next": self._reset_next,
            "any_reset": self._any_reset,
            "episode_return": self._episode_return,
            "episode_length": self._episode_length,
            "finished_returns": list(self._finished_returns),
            "finished_lengths": list(self._finished_lengths),
            "last_episode_return": self.last_episode_return,
            "episodes": self.episodes,
            "max_abs_reward": self.max_abs_reward,
            "env_steps": self.env_steps,
            "collect_time_s": self.collect_time_s,
            "policy": policy_state() if policy_state is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore ``state_dict()``; returns whether the environments' state came with it.

        Without it (an env that cannot be pickled) the episodes in progress are cut: each lane's
        last stored step is marked truncated and followed by an auto-reset row holding its next
        observation (as gymnasium's NEXT_STEP auto-reset would have stored it), and the next
        ``collect`` resets the environments with a seed derived from the env step. Learning then
        continues correctly, but not bit-identically to an uninterrupted run.
        """
        self._obs = state["obs"]
        self._reset_next = np.asarray(state["reset_next"], dtype=bool)
        self._any_reset = bool(state["any_reset"])
        self._episode_return = np.asarray(state["episode_return"], dtype=np.float64)
        self._episode_length = np.asarray(state["episode_length"], dtype=np.int64)
        self._finished_returns = list(state["finished_returns"])
        self._finished_lengths = list(state["finished_lengths"])
        self.last_episode_return = state["last_episode_return"]
        self.episodes = int(state["episodes"])
        self.max_abs_reward = float(state.get("max_abs_reward", 0.0))
        self.env_steps = int(state["env_steps"])
        self.collect_time_s = float(state["collect_time_s"])
        policy_load = getattr(self.policy, "load_state_dict", None)
        if state["policy"] is not None and policy_load is not None:
            policy_load(state["policy"])
        if state["env"] is not None:
            load_env_state(self.env, state["env"])
            return True
        self.cut_episodes()
        return False

    def cut_episodes(self) -> None:
        """End every lane's episode here by truncation (see ``load_state_dict``); the next
        ``collect`` resets the environments with seed ``seed + env_steps``."""
        if self._obs is not None and self.buffer.rows_written > 0:
            last = (self.buffer.rows_written - 1) % self.buffer.rows
            self.buffer.truncated[last] |= ~self.buffer.reset_step[last]
            lanes = self.num_envs
            self.buffer.add(
                self._obs if self._stored is None else self._stored(self._obs),
                np.zeros(lanes, dtype=np.int64),
                np.zeros(lanes, dtype=np.float32),
                np.zeros(lanes, dtype=bool),
                np.zeros(lanes, dtype=bool),
                np.ones(lanes, dtype=bool),
            )
        self._obs = None
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        self._any_reset = False
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self.seed += self.env_steps

    def pop_finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = (self._finished_returns, self._finished_lengths)
        self._finished_returns, self._finished_lengths = [], []
        return out


def env_state(env: gym.vector.VectorEnv) -> bytes:
    """The pickled state of an in-process vector env: its attributes, those of the envs it
    holds (physics state, step counters, time limits, generators) included.

    Gymnasium's ``SyncVectorEnv`` keeps the factories it was built from (local functions, which
    cannot be pickled); they are left out, and a vector wrapper's inner env is handled the same
    way. Classic-control envs pickle completely. Raises (``PicklingError``, ``TypeError``) for
    envs whose state lives outside Python objects: subprocesses (``AsyncVectorEnv``), emulators
    (ALE), simulators with native handles.
    """
    return pickle.dumps(_env_attributes(env))


def load_env_state(env: gym.vector.VectorEnv, blob: bytes) -> None:
    """Put ``env_state``'s state into ``env`` (built from the same config)."""
    _set_env_attributes(env, pickle.loads(blob))


def _env_attributes(env: Any) -> dict[str, Any]:
    state = {k: v for k, v in vars(env).items() if k != "env_fns"}
    inner = state.get("env")
    if isinstance(inner, gym.vector.VectorEnv):
        state["env"] = _env_attributes(inner)
    return state


def _set_env_attributes(env: Any, state: dict[str, Any]) -> None:
    inner = state.pop("env", None)
    if isinstance(inner, dict):
        _set_env_attributes(env.env, inner)
    elif inner is not None:
        state["env"] = inner
    vars(env).update(state)
