"""Partial observability for any vector env: hide entries, flicker, and the N-gram stack.

The lecture's point: when the observation ``o_t`` is not the state, feed the agent the last N
observations (and the actions between them) -- the N-gram heuristic -- so that what ``o_t``
alone misses (a velocity, an object that blinked away) can be read off the history. Three
vector wrappers, applied in this order by ``make_vector_env``:

* ``MaskObservation``: zero fixed entries of every observation (the RL Zoo's
  ``MaskVelocityWrapper``: CartPole without velocities is ``CartPoleNoVel-v1``);
* ``FlickerObservation``: zero the whole observation of a lane with probability p per step;
* ``StackObservations``: the last N observations of each lane (and, with actions, the one-hot
  of the action before each), laid out by a ``StackLayout``.

Each works on the batch of lanes with numpy and assumes gymnasium's NEXT_STEP auto-reset (the
step after an episode ended returns the next episode's first observation). Their state -- the
flicker generator, the stacks -- is plain attributes, so ``collector.env_state`` pickles it with
the env and a resumed run continues bit-identically. The replay buffer stores single
observations and rebuilds the same stacks at sampling time with the same ``StackLayout``
(``rl_lightning/data/stacking.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

W = TypeVar("W", bound=gym.vector.VectorEnv)
#: what fills a stack's slots before the episode's first observation (``env.frame_stack_padding``)
PADDINGS = ("zeros", "first")
#: mixed into the env seed for the flicker generator, so it draws a stream of its own
FLICKER_STREAM = 0x5F11C4E2


def _check_next_step(env: gym.vector.VectorEnv, wrapper: str) -> None:
    mode = env.metadata.get("autoreset_mode")
    if mode is not None and getattr(mode, "name", str(mode)) != "NEXT_STEP":
        raise ValueError(f"{wrapper} needs AutoresetMode.NEXT_STEP, got {mode}")


def _box(env: gym.vector.VectorEnv, wrapper: str) -> gym.spaces.Box:
    space = env.single_observation_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{wrapper} needs Box observations, got {space}")
    return space


@dataclass(frozen=True)
class StackLayout:
    """How the last N observations of a lane (and the actions before them) become the agent's
    observation: one definition shared by the acting wrapper and the replay buffer.

    Slot ``k = 0 .. N-1`` of the stack at time t holds ``o_{t-N+1+k}`` (oldest first, ``o_t``
    last). Slots before the episode's first observation ``o_s`` are padding: zeros
    (``padding="zeros"``; Dopamine, Stable-Baselines3, ale-py) or copies of ``o_s``
    (``padding="first"``; gymnasium's ``FrameStackObservation`` default). A stack never holds an
    observation of an earlier episode.

    Without actions the stacked observation is ``(N, *obs_shape)`` (frames: channels first).
    With actions (``num_actions = A``; 1-D observations of D entries only) each slot also holds
    the one-hot of the action taken just before its observation, ``a_{t-N+k}`` -- all zeros at
    the episode's first observation and in the padding -- and the stack is one flat vector of
    ``N * (D + A)`` entries: the lecture's ``(o_{t-N+1}, a_{t-N+1}, ..., a_{t-1}, o_t)`` as ::

        [o_{t-N+1} (D), onehot(a_{t-N}) (A), ..., o_t (D), onehot(a_{t-1}) (A)]

    Attributes:
        frames: N, the number of observations stacked (``env.frame_stack``).
        padding: ``zeros`` | ``first`` (``env.frame_stack_padding``).
        num_actions: A when the stack holds the actions (``env.stack_actions``), else None.
    """

    frames: int
    padding: str = "zeros"
    num_actions: int | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frames}")
        if self.padding not in PADDINGS:
            raise ValueError(f"frame_stack_padding must be one of {PADDINGS}, got {self.padding!r}")

    def stacked_shape(self, obs_shape: Sequence[int]) -> tuple[int, ...]:
        """``(N, *obs_shape)``; with actions ``(N * (D + A),)``."""
        if self.num_actions is None:
            return (self.frames, *obs_shape)
        if len(obs_shape) != 1:
            raise ValueError(f"stack_actions needs 1-D observations, got shape {tuple(obs_shape)}")
        return (self.frames * (obs_shape[0] + self.num_actions),)

    def start(self, obs: np.ndarray) -> np.ndarray:
        """The stacks ``(B, N, *obs_shape)`` of episodes whose first observations are ``obs``
        ``(B, *obs_shape)``: padding, then ``obs`` in the last slot."""
        if self.padding == "first":
            return np.repeat(obs[:, None], self.frames, axis=1)
        stacks = np.zeros((obs.shape[0], self.frames, *obs.shape[1:]), dtype=obs.dtype)
        stacks[:, -1] = obs
        return stacks

    def assemble(self, frames: np.ndarray, prev_actions: np.ndarray | None) -> np.ndarray:
        """The agent's observations ``(B, *stacked_shape)`` from padded ``frames`` ``(B, N,
        *obs_shape)`` (oldest first) and ``prev_actions`` ``(B, N)`` int64 -- the action taken
        before each slot's observation, -1 where there was none (episode start, padding; an
        all-zero one-hot). Without actions ``frames`` itself is returned."""
        if self.num_actions is None:
            return frames
        assert prev_actions is not None
        b, n = prev_actions.shape
        one_hot = (prev_actions[..., None] == np.arange(self.num_actions)).astype(frames.dtype)
        return np.concatenate([frames.reshape(b, n, -1), one_hot], axis=2).reshape(b, -1)

    def newest(self, stacked: np.ndarray) -> np.ndarray:
        """The newest single observations ``o_t`` ``(B, *obs_shape)`` of stacked observations
        ``(B, *stacked_shape)``: what the replay buffer stores."""
        if self.num_actions is None:
            return stacked[:, -1]
        return stacked.reshape(stacked.shape[0], self.frames, -1)[:, -1, : -self.num_actions]


class MaskObservation(gym.vector.VectorObservationWrapper):
    """Zeroes the entries ``indices`` of every observation, keeping its shape and space (as the
    RL Zoo's ``MaskVelocityWrapper`` does: ``obs * mask``).

    Args:
        env: the vector env.
        indices: positions in the flattened single observation to hide (e.g. ``[1, 3]``:
            CartPole's cart and pole velocities).
    """

    def __init__(self, env: gym.vector.VectorEnv, *, indices: Sequence[int]) -> None:
        super().__init__(env)
        shape = _box(env, "MaskObservation").shape
        size = int(np.prod(shape))
        bad = [i for i in indices if not 0 <= int(i) < size]
        if bad:
            raise ValueError(f"mask_indices {bad} are outside the observation's {size} entries")
        hidden = np.zeros(size, dtype=bool)
        hidden[np.asarray(list(indices), dtype=np.int64)] = True
        self.hidden = hidden.reshape(shape)  # (*obs_shape,) True where zeroed

    def observations(self, observations: Any) -> Any:
        out = np.array(observations, copy=True)
        out[:, self.hidden] = 0
        return out


class FlickerObservation(gym.vector.VectorWrapper):
    """Each observation of each lane (reset observations included) is replaced by zeros with
    probability ``p``, independently per lane and step: the sensor fails now and then.

    The generator is seeded at every seeded ``reset(seed=s)`` from ``(s, FLICKER_STREAM)`` --
    reproducible runs, and a stream apart from the envs' own (lane i's is seeded with s + i) --
    and it is an attribute, so checkpoints hold its state. Before the first seeded reset it
    draws from fresh OS entropy, as gymnasium's envs do.

    Args:
        env: the vector env.
        p: probability in [0, 1) that an observation is blanked.
    """

    def __init__(self, env: gym.vector.VectorEnv, *, p: float) -> None:
        super().__init__(env)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"flicker_p must be in [0, 1), got {p}")
        _box(env, "FlickerObservation")
        self.p = float(p)
        self.rng = np.random.default_rng()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng([seed, FLICKER_STREAM])
        obs, info = self.env.reset(seed=seed, options=options)
        return self._flicker(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        return self._flicker(obs), rewards, terminated, truncated, info

    def _flicker(self, obs: np.ndarray) -> np.ndarray:
        blank = self.rng.random(self.num_envs) < self.p  # (num_envs,): one draw per lane
        if blank.any():
            obs = np.array(obs, copy=True)
            obs[blank] = 0
        return obs


class StackObservations(gym.vector.VectorWrapper):
    """Each lane sees the stack of its last N observations (and actions), per ``layout``.

    A lane's stack restarts (padding + the new observation) at ``reset`` and at the step after
    its episode ended (NEXT_STEP: that step returns the next episode's first observation);
    otherwise each step shifts the stack by one and appends the new observation (and the
    action just passed to ``step``). The stacks are fresh arrays at every step.

    Attributes:
        layout: the ``StackLayout`` (N, padding, A).
        frame_space: the single observation's space (what the replay buffer stores).
        frames: ``(num_envs, N, *obs_shape)`` the current stacks, oldest first.
        prev_actions: ``(num_envs, N)`` int64 the action before each slot (-1: none); None
            without actions.
        autoreset: ``(num_envs,)`` lanes whose episode ended at the last step (their next
            observation starts a new episode).
    """

    def __init__(self, env: gym.vector.VectorEnv, *, layout: StackLayout) -> None:
        super().__init__(env)
        _check_next_step(env, "StackObservations")
        single = _box(env, "StackObservations")
        self.layout = layout
        self.frame_space = single
        shape = layout.stacked_shape(single.shape)
        if layout.num_actions is None:
            low = np.broadcast_to(single.low, shape)
            high = np.broadcast_to(single.high, shape)
        else:
            zeros, ones = np.zeros(layout.num_actions), np.ones(layout.num_actions)
            low = np.tile(np.concatenate([single.low, zeros]), layout.frames)
            high = np.tile(np.concatenate([single.high, ones]), layout.frames)
        self.single_observation_space = gym.spaces.Box(
            low=np.minimum(low, 0).astype(single.dtype),  # zero padding lies inside the space
            high=np.maximum(high, 0).astype(single.dtype),
            shape=shape,
            dtype=single.dtype,  # type: ignore[arg-type]
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        lanes = self.num_envs
        self.frames = np.zeros((lanes, layout.frames, *single.shape), dtype=single.dtype)
        self.prev_actions: np.ndarray | None = (
            None if layout.num_actions is None else np.full((lanes, layout.frames), -1, np.int64)
        )
        self.autoreset = np.zeros(lanes, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.frames = self.layout.start(np.asarray(obs, dtype=self.frames.dtype))
        if self.prev_actions is not None:
            self.prev_actions = np.full_like(self.prev_actions, -1)
        self.autoreset = np.zeros(self.num_envs, dtype=bool)
        return self.layout.assemble(self.frames, self.prev_actions), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        starts = self.autoreset  # lanes whose obs is a new episode's first
        frames = np.empty_like(self.frames)
        frames[:, :-1] = self.frames[:, 1:]
        frames[:, -1] = obs
        prev = self.prev_actions
        if prev is not None:
            prev = np.concatenate([prev[:, 1:], np.asarray(actions).reshape(-1, 1)], axis=1)
        if starts.any():
            frames[starts] = self.layout.start(frames[starts, -1])
            if prev is not None:
                prev[starts] = -1
        self.frames, self.prev_actions = frames, prev
        self.autoreset = np.logical_or(terminated, truncated)
        return self.layout.assemble(frames, prev), rewards, terminated, truncated, info


def find_wrapper(env: gym.vector.VectorEnv, kind: type[W]) -> W | None:
    """The ``kind`` wrapper in ``env``'s chain of vector wrappers, if any."""
    while True:
        if isinstance(env, kind):
            return env
        inner = getattr(env, "env", None)
        if not isinstance(inner, gym.vector.VectorEnv):
            return None
        env = inner


def find_stack(env: gym.vector.VectorEnv) -> StackObservations | None:
    """The ``StackObservations`` wrapper in ``env``'s chain of vector wrappers, if any."""
    return find_wrapper(env, StackObservations)


def wrap_observations(
    env: gym.vector.VectorEnv,
    *,
    mask_indices: Sequence[int] | None = None,
    flicker_p: float = 0.0,
    frame_stack: int = 1,
    frame_stack_padding: str = "zeros",
    stack_actions: bool = False,
) -> gym.vector.VectorEnv:
    """``env`` with the partial-observability options applied, innermost first: mask, flicker,
    stack. With the defaults ``env`` comes back unchanged. The stack wraps when
    ``frame_stack > 1`` or ``stack_actions`` (``frame_stack=1`` with actions is
    ``[o_t, onehot(a_{t-1})]``)."""
    if mask_indices:
        env = MaskObservation(env, indices=mask_indices)
    if flicker_p:
        env = FlickerObservation(env, p=flicker_p)
    actions: Any = env.single_action_space  # Discrete (make_vector_env checks it)
    layout = StackLayout(
        frames=frame_stack,
        padding=frame_stack_padding,
        num_actions=int(actions.n) if stack_actions else None,
    )
    if frame_stack > 1 or stack_actions:
        env = StackObservations(env, layout=layout)
    return env
