"""Replay storage of time steps, one lane per environment.

The buffer stores what each environment lane saw at every vector step -- observation,
action, reward, terminated, truncated -- not ``(s, a, r, s')`` tuples. Row ``t`` of a lane
holds ``(o_t, a_t, r_{t+1}, terminated_{t+1}, truncated_{t+1})``; the next observation is
simply row ``t + 1``. One storage therefore serves every estimator:

* the n-step return and its bootstrap observation are rows ``t .. t + n`` of one lane;
* SARSA's ``a_{t+1}`` is the action stored in row ``t + 1``;
* every observation is stored once (half the memory of ``(s, s')`` tuples).

Gymnasium's vector envs auto-reset on the *next* step (``AutoresetMode.NEXT_STEP``): the step
after an episode ends returns the reset observation, reward 0 and no flags, and ignores the
action. That row's observation is the true final observation of the episode (needed to
bootstrap a truncated episode), but the row itself is not a transition. It is stored with
``reset_step=True`` and never sampled as the start of a transition; a window of n steps stops
at the first ``terminated`` or ``truncated`` flag, so no sample spans two episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

#: the stored per-time-step arrays (what ``state_dict(include_arrays=True)`` holds)
_ARRAYS = ("obs", "actions", "rewards", "terminated", "truncated", "reset_step")


class TransitionBatch(NamedTuple):
    """Sampled n-step transitions; leading shape ``S = (B,)`` or ``(K, B)`` for K minibatches.

    Attributes:
        obs: ``(*S, *obs_shape)`` observation ``s_t``.
        actions: ``(*S,)`` action ``a_t``.
        rewards: ``(*S, n)`` rewards ``r_{t+1} .. r_{t+n}``, zero after the episode ended.
        n_steps: ``(*S,)`` number of real steps k in the window (``k < n`` when it ended inside).
        terminated: ``(*S,)`` 1.0 if the episode terminated inside the window (no bootstrap).
        next_obs: ``(*S, *obs_shape)`` bootstrap observation ``s_{t+k}``.
        next_actions: ``(*S,)`` behaviour action ``a_{t+k}`` taken in ``s_{t+k}`` (SARSA).
        env_steps: environment steps collected when the batch was sampled (a plain int).
    """

    obs: Any
    actions: Any
    rewards: Any
    n_steps: Any
    terminated: Any
    next_obs: Any
    next_actions: Any
    env_steps: int = 0

    def map(self, fn: Callable[[Any], Any]) -> TransitionBatch:
        """Apply ``fn`` to every array field; ``env_steps`` is kept."""
        return TransitionBatch._make([*(fn(x) for x in self[:-1]), self.env_steps])


class ReplayBuffer:
    """Ring buffer of ``capacity`` time steps spread over ``num_envs`` lanes.

    Args:
        capacity: total number of time steps kept (``capacity // num_envs`` rows per lane).
        num_envs: number of parallel environment lanes written at every ``add``.
        obs_shape: shape of one observation.
        obs_dtype: storage dtype of observations (``uint8`` for frames, ``float32`` otherwise).
        seed: seed of the sampling generator.
    """

    def __init__(
        self,
        *,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | type = np.float32,
        seed: int = 0,
    ) -> None:
        if capacity < num_envs:
            raise ValueError(f"buffer capacity {capacity} is smaller than num_envs {num_envs}")
        self.num_envs = num_envs
        self.rows = capacity // num_envs  # rows per lane
        self.capacity = self.rows * num_envs
        self.obs = np.zeros((self.rows, num_envs, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((self.rows, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.rows, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.rows, num_envs), dtype=bool)
        self.truncated = np.zeros((self.rows, num_envs), dtype=bool)
        self.reset_step = np.zeros((self.rows, num_envs), dtype=bool)
        # flat views, slot * num_envs + lane: a sample is one 1-D gather per field
        self._flat_obs = self.obs.reshape(self.capacity, *obs_shape)
        self._flat_actions = self.actions.reshape(-1)
        self._flat_rewards = self.rewards.reshape(-1)
        self._flat_terminated = self.terminated.reshape(-1)
        self._flat_truncated = self.truncated.reshape(-1)
        self._flat_reset_step = self.reset_step.reshape(-1)
        self.rows_written = 0  # total rows ever written per lane (not wrapped)
        self.consumed_until = 0  # online use: first row whose window has not been used yet
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (what a checkpoint with the buffer holds)."""
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        """Counters, the sampler's generator state and (``include_arrays``) the stored time steps
        (the arrays themselves, not copies)."""
        state: dict[str, Any] = {
            "rows": self.rows,
            "num_envs": self.num_envs,
            "rows_written": self.rows_written,
            "consumed_until": self.consumed_until,
            "rng": self.rng.bit_generator.state,
        }
        if include_arrays:
            state["arrays"] = {name: getattr(self, name) for name in _ARRAYS}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore ``state_dict()``; returns whether the stored time steps came with it.

        Arrays are copied into the existing ones (the flat views stay valid). Without them the
        buffer is emptied: the counters restart at 0 and only the generator state is kept.
        """
        if (state["rows"], state["num_envs"]) != (self.rows, self.num_envs):
            raise ValueError(
                f"the checkpoint's buffer has {state['rows']} rows x {state['num_envs']} lanes, "
                f"this one {self.rows} x {self.num_envs}: capacity and env.num_envs must not change"
            )
        self.rng.bit_generator.state = state["rng"]
        arrays = state.get("arrays")
        if arrays is None:
            self.rows_written = self.consumed_until = 0
            return False
        for name in _ARRAYS:
            np.copyto(getattr(self, name), arrays[name])
        self.rows_written = int(state["rows_written"])
        self.consumed_until = int(state["consumed_until"])
        return True

    def __len__(self) -> int:
        """Number of time steps currently stored (all lanes)."""
        return min(self.rows_written, self.rows) * self.num_envs

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        reset_step: np.ndarray,
    ) -> None:
        """Write one vector step: every argument has leading shape ``(num_envs,)``.

        ``obs`` is the observation the actions were taken in; ``reset_step`` marks lanes whose
        step was gymnasium's auto-reset step (their ``obs`` is the previous episode's final
        observation and the action was ignored).
        """
        row = self.rows_written % self.rows
        self.obs[row] = obs
        self.actions[row] = actions
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        self.reset_step[row] = reset_step
        self.rows_written += 1

    def num_sampleable_rows(self, n_step: int) -> int:
        """Rows per lane that can start an n-step window now (rows t .. t+n all stored)."""
        oldest = max(0, self.rows_written - self.rows)
        newest_start = self.rows_written - 1 - n_step
        return max(0, newest_start - oldest + 1)

    def sample(self, batch_size: int, n_step: int = 1) -> TransitionBatch:
        """Sample ``batch_size`` n-step transitions uniformly over stored real time steps.

        A start row and a lane per transition, redrawing the few auto-reset rows (about one per
        episode), then one 1-D gather per field through flat indices: no Python loop over the
        batch. The random draws are always the same for a seed (start rows, then lanes, then
        the same for the redrawn ones), so fixed-seed runs reproduce exactly across versions.
        """
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        span = self.num_sampleable_rows(n_step)
        if span <= 0:
            raise RuntimeError(
                f"the buffer holds {self.rows_written} rows per lane, fewer than the "
                f"{n_step + 1} an n_step={n_step} window needs; collect more steps first"
            )
        oldest = max(0, self.rows_written - self.rows)
        flat = self._draw_slots(oldest, span, batch_size)
        reset = self._flat_reset_step
        todo = np.flatnonzero(reset.take(flat))
        for _ in range(100):  # rejection of auto-reset rows (about 1 in an episode length)
            if todo.size == 0:
                break
            again = self._draw_slots(oldest, span, todo.size)
            flat[todo] = again
            todo = todo[reset.take(again)]
        else:
            raise RuntimeError("could not sample real transitions: the buffer holds only resets")
        return self._gather_flat(flat, n_step)

    def _draw_slots(self, oldest: int, span: int, size: int) -> np.ndarray:
        """``size`` uniform (start row, lane) pairs as flat slots ``(row % rows) * N + lane``:
        start rows ``oldest + integers(span)``, then lanes ``integers(N)``. (With one lane the
        lane draw is skipped: ``integers(1)`` consumes no random bits, so the stream is the same.)
        """
        slots = self.rng.integers(span, size=size)
        slots += oldest
        np.remainder(slots, self.rows, out=slots)
        if self.num_envs > 1:
            slots *= self.num_envs
            slots += self.rng.integers(self.num_envs, size=size)
        return slots

    def skip_to_newest(self, n_step: int = 1) -> None:
        """Online use: mark everything stored so far as used (e.g. warm-up data)."""
        self.consumed_until = max(self.consumed_until, self.rows_written - n_step)

    def take_new(self, n_step: int = 1) -> TransitionBatch | None:
        """Every real transition whose n-step window completed since the last call, once each,
        in time order (row-major: all lanes of a time step, then the next step).

        This is learning without replay -- the parallel agents' latest rollout, used once --
        for on-policy estimators. Returns None when no window completed yet.
        """
        oldest = max(0, self.rows_written - self.rows)
        if self.consumed_until < oldest:
            raise RuntimeError(
                f"online buffer overflow: rows {self.consumed_until}..{oldest - 1} were overwritten "
                f"before they were used; the buffer keeps {self.rows} rows per lane, too few for one "
                "rollout plus the n-step window"
            )
        first = self.consumed_until
        last = self.rows_written - 1 - n_step  # newest row whose window is complete
        if last < first:
            return None
        rows = np.repeat(np.arange(first, last + 1), self.num_envs)
        lanes = np.tile(np.arange(self.num_envs), last + 1 - first)
        keep = ~self.reset_step[rows % self.rows, lanes]
        self.consumed_until = last + 1
        if not keep.any():
            return None
        return self._gather(rows[keep], lanes[keep], n_step)

    def _gather(self, starts: np.ndarray, lanes: np.ndarray, n_step: int) -> TransitionBatch:
        """Build the n-step windows starting at rows ``starts`` (not wrapped) of ``lanes``."""
        return self._gather_flat((starts % self.rows) * self.num_envs + lanes, n_step)

    def _gather_flat(self, flat: np.ndarray, n_step: int) -> TransitionBatch:
        """The n-step windows starting at flat slots ``flat`` (``slot * num_envs + lane``).

        Row ``t + j`` of the same lane is slot ``flat + j * num_envs`` (mod capacity). A window
        stops after the first step that terminated or truncated its episode.
        """
        stride, capacity = self.num_envs, self.capacity
        obs = self._flat_obs.take(flat, axis=0)
        actions = self._flat_actions.take(flat)
        if n_step == 1:  # the common case: one row, never cut short
            boot = flat + stride
            np.remainder(boot, capacity, out=boot)
            return TransitionBatch(
                obs=obs,
                actions=actions,
                rewards=self._flat_rewards.take(flat)[:, None],
                n_steps=np.ones(flat.shape[0], dtype=np.int64),
                terminated=self._flat_terminated.take(flat).astype(np.float32),
                next_obs=self._flat_obs.take(boot, axis=0),
                next_actions=self._flat_actions.take(boot),
            )
        window = (flat[:, None] + stride * np.arange(n_step)) % capacity  # (B, n)
        term: np.ndarray = self._flat_terminated.take(window)
        ended: np.ndarray = term | self._flat_truncated.take(window)
        ends_before = np.cumsum(ended, axis=1) - ended  # episode ends strictly before step j
        inside = ends_before == 0  # step j belongs to the episode of row t
        rewards = np.where(inside, self._flat_rewards.take(window), np.float32(0.0))
        n_steps = inside.sum(axis=1)
        terminated = (term & inside).any(axis=1)
        boot = (flat + stride * n_steps) % capacity
        return TransitionBatch(
            obs=obs,
            actions=actions,
            rewards=rewards.astype(np.float32, copy=False),
            n_steps=n_steps.astype(np.int64, copy=False),
            terminated=terminated.astype(np.float32),
            next_obs=self._flat_obs.take(boot, axis=0),
            next_actions=self._flat_actions.take(boot),
        )
