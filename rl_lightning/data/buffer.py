"""Replay storage of time steps, one lane per environment; which steps to learn from is the
sampler's business (``rl_lightning.data.samplers``).

The buffer stores what each environment lane saw at every vector step -- observation,
action, reward, terminated, truncated -- not ``(s, a, r, s')`` tuples. Row ``i`` of a lane
holds ``(o_i, a_i, r_{i+1}, terminated_{i+1}, truncated_{i+1})``: the observation, the action
taken in it, and what that step returned. The next observation is simply row ``i + 1``. One
storage therefore serves every estimator:

* the n-step return and its bootstrap observation are rows ``i .. i + n`` of one lane;
* SARSA's next action ``a_{i+1}`` is the action stored in row ``i + 1``;
* every observation is stored once (half the memory of ``(s, s')`` tuples).

(The estimators use rlax's subscripts for a window of k steps: ``s_tm1 = o_i`` and
``a_tm1 = a_i`` start it, ``r_t`` discounts ``r_{i+1} .. r_{i+k}``, ``s_t = o_{i+k}`` and
``a_t = a_{i+k}``, the *next* action, bootstrap it. The buffer indexes rows with a neutral ``i``
so that ``a_t`` means one thing in the code: the next action.)

Gymnasium's vector envs auto-reset on the *next* step (``AutoresetMode.NEXT_STEP``): the step
after an episode ends returns the reset observation, reward 0 and no flags, and ignores the
action. That row's observation is the true final observation of the episode (needed to
bootstrap a truncated episode), but the row itself is not a transition. It is stored with
``reset_step=True`` and a sampler never starts a transition there; a window of n steps stops
at the first ``terminated`` or ``truncated`` flag, so no sample spans two episodes.

Addressing: slot ``(i % rows) * num_envs + lane`` of the flat views is row ``i`` of ``lane``
(``rows`` rows per lane, the oldest overwritten). Samplers draw flat slots and hand them to
``gather_flat``, which builds the n-step windows with one 1-D gather per field.

Frame stacks (``env.frame_stack``, ``env.stack_actions``): the buffer still stores single
observations; given a ``stack`` layout, ``observations_at`` rebuilds the stack of rows
``i-N+1 .. i`` for ``obs`` and for the bootstrap row's ``next_obs``
(``rl_lightning.data.stacking``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from rl_lightning.data.stacking import StackedObservations
from rl_lightning.envs.wrappers import StackLayout

#: the stored per-time-step arrays (what ``state_dict(include_arrays=True)`` holds)
_ARRAYS = ("obs", "actions", "rewards", "terminated", "truncated", "reset_step")


class TransitionBatch(NamedTuple):
    """n-step transitions; leading shape ``S = (B,)`` or ``(K, B)`` for K minibatches.

    A transition starts at row ``i`` of a lane and spans ``k <= n`` real steps (the window
    stops at the episode's end). In rlax's names: ``obs`` is ``s_tm1``, ``actions`` ``a_tm1``,
    ``rewards`` the ``r_t`` of each step, ``next_obs`` ``s_t`` and ``next_actions`` ``a_t``.

    Attributes:
        obs: ``(*S, *obs_shape)`` observation ``o_i`` the transition starts in (with a frame
            stack: ``(*S, *stacked_shape)``, the stack ending at ``o_i``; likewise ``next_obs``).
        actions: ``(*S,)`` action ``a_i`` taken in ``o_i`` (the one whose value is learnt).
        rewards: ``(*S, n)`` rewards ``r_{i+1} .. r_{i+n}``, zero after the episode ended.
        n_steps: ``(*S,)`` number of real steps k in the window (``k < n`` when it ended inside).
        terminated: ``(*S,)`` 1.0 if the episode terminated inside the window (no bootstrap).
        next_obs: ``(*S, *obs_shape)`` bootstrap observation ``o_{i+k}``.
        next_actions: ``(*S,)`` behaviour action ``a_{i+k}`` taken in ``o_{i+k}`` (SARSA's).
        env_steps: environment steps collected when the batch was sampled (a plain int).
        indices: ``(*S,)`` flat buffer slots the transitions start at, or None. Set by samplers
            that learn from the loss (``Sampler.needs_td_errors``), which get them back in
            ``update_priorities``.
        weights: ``(*S,)`` importance-sampling weights for the loss, or None (all 1: uniform).
    """

    obs: Any
    actions: Any
    rewards: Any
    n_steps: Any
    terminated: Any
    next_obs: Any
    next_actions: Any
    env_steps: int = 0
    indices: Any = None
    weights: Any = None

    def map(self, fn: Callable[[Any], Any], env_steps: int | None = None) -> TransitionBatch:
        """Apply ``fn`` to every array field (``indices`` and ``weights`` when set); ``env_steps``
        is kept, or replaced by the one given."""
        obs, actions, rewards, n_steps, terminated, next_obs, next_actions, steps, idx, w = self
        return TransitionBatch(
            fn(obs),
            fn(actions),
            fn(rewards),
            fn(n_steps),
            fn(terminated),
            fn(next_obs),
            fn(next_actions),
            steps if env_steps is None else env_steps,
            None if idx is None else fn(idx),
            None if w is None else fn(w),
        )


class ReplayBuffer:
    """Ring buffer of ``capacity`` time steps spread over ``num_envs`` lanes: storage only.

    Samplers (``rl_lightning.data.samplers``) choose the start slots; this class keeps the
    arrays, says which start rows are complete (``num_sampleable_rows``) and builds the n-step
    windows of given slots (``gather_flat``).

    Args:
        capacity: total number of time steps kept (``capacity // num_envs`` rows per lane).
        num_envs: number of parallel environment lanes written at every ``add``.
        obs_shape: shape of one observation (one frame, with a frame stack).
        obs_dtype: storage dtype of observations (``uint8`` for frames, ``float32`` otherwise).
        stack: the frame-stack layout the agent acts with (``StackObservations.layout``), or
            None (no stack: ``obs`` is the stored observation). The buffer still stores each
            observation once; the batches' ``obs`` and ``next_obs`` are the stacks.
    """

    def __init__(
        self,
        *,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | type = np.float32,
        stack: StackLayout | None = None,
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
        self.flat_obs = self.obs.reshape(self.capacity, *obs_shape)
        self.flat_actions = self.actions.reshape(-1)
        self._flat_rewards = self.rewards.reshape(-1)
        self._flat_terminated = self.terminated.reshape(-1)
        self._flat_truncated = self.truncated.reshape(-1)
        #: ``(capacity,)`` view of ``reset_step``: samplers redraw slots where it is True
        self.flat_reset_step = self.reset_step.reshape(-1)
        self.rows_written = 0  # total rows ever written per lane (not wrapped)
        self.stack = stack
        #: ``(B,)`` flat slots -> the agent's observations there, ``(B, *obs_shape)``: the
        #: stored ones, or (with ``stack``) the stacks rebuilt from them. Chosen once here, so
        #: ``gather_flat`` has no branch on it.
        self.observations_at: Callable[[np.ndarray], np.ndarray] = (
            partial(self.flat_obs.take, axis=0)
            if stack is None
            else StackedObservations(self, stack)
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (what a checkpoint with the buffer holds)."""
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    @property
    def bytes_per_transition(self) -> float:
        """``nbytes / capacity``: the bytes one stored time step costs (observation, action,
        reward, three flags), the same with or without a frame stack."""
        return self.nbytes / self.capacity

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        """Shape, the write counter and (``include_arrays``) the stored time steps (the arrays
        themselves, not copies). The sampler's state is the sampler's (``Sampler.state_dict``)."""
        state: dict[str, Any] = {
            "rows": self.rows,
            "num_envs": self.num_envs,
            "rows_written": self.rows_written,
        }
        if include_arrays:
            state["arrays"] = {name: getattr(self, name) for name in _ARRAYS}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore ``state_dict()``; returns whether the stored time steps came with it.

        Arrays are copied into the existing ones (the flat views stay valid). Without them the
        buffer is emptied: the write counter restarts at 0.
        """
        if (state["rows"], state["num_envs"]) != (self.rows, self.num_envs):
            raise ValueError(
                f"the checkpoint's buffer has {state['rows']} rows x {state['num_envs']} lanes, "
                f"this one {self.rows} x {self.num_envs}: capacity and env.num_envs must not change"
            )
        arrays = state.get("arrays")
        if arrays is None:
            self.rows_written = 0
            return False
        for name in _ARRAYS:
            np.copyto(getattr(self, name), arrays[name])
        self.rows_written = int(state["rows_written"])
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

    @property
    def oldest_row(self) -> int:
        """The oldest row still stored (not wrapped): ``max(0, rows_written - rows)``."""
        return max(0, self.rows_written - self.rows)

    def num_sampleable_rows(self, n_step: int) -> int:
        """Rows per lane that can start an n-step window now (rows i .. i+n all stored): the
        rows ``oldest_row .. oldest_row + num_sampleable_rows(n) - 1``."""
        oldest = max(0, self.rows_written - self.rows)
        newest_start = self.rows_written - 1 - n_step
        return max(0, newest_start - oldest + 1)

    def gather(self, starts: np.ndarray, lanes: np.ndarray, n_step: int) -> TransitionBatch:
        """The n-step windows starting at rows ``starts`` (not wrapped) of ``lanes``."""
        return self.gather_flat((starts % self.rows) * self.num_envs + lanes, n_step)

    def gather_flat(self, flat: np.ndarray, n_step: int) -> TransitionBatch:
        """The n-step windows starting at flat slots ``flat`` (``slot * num_envs + lane``).

        Row ``i + j`` of the same lane is slot ``flat + j * num_envs`` (mod capacity). A window
        stops after the first step that terminated or truncated its episode. The hot path of
        every update: one ``take`` per field, no Python loop over the batch. ``obs`` and
        ``next_obs`` come from ``observations_at`` (with a frame stack: the stacks of the start
        row and of the bootstrap row).
        """
        stride, capacity, observations_at = self.num_envs, self.capacity, self.observations_at
        obs = observations_at(flat)
        actions = self.flat_actions.take(flat)
        if n_step == 1:  # the common case: one row, never cut short
            boot = flat + stride
            np.remainder(boot, capacity, out=boot)
            return TransitionBatch(
                obs=obs,
                actions=actions,
                rewards=self._flat_rewards.take(flat)[:, None],
                n_steps=np.ones(flat.shape[0], dtype=np.int64),
                terminated=self._flat_terminated.take(flat).astype(np.float32),
                next_obs=observations_at(boot),
                next_actions=self.flat_actions.take(boot),
            )
        window = (flat[:, None] + stride * np.arange(n_step)) % capacity  # (B, n)
        term: np.ndarray = self._flat_terminated.take(window)
        ended: np.ndarray = term | self._flat_truncated.take(window)
        ends_before = np.cumsum(ended, axis=1) - ended  # episode ends strictly before step j
        inside = ends_before == 0  # step j belongs to the episode of row i
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
            next_obs=observations_at(boot),
            next_actions=self.flat_actions.take(boot),
        )
