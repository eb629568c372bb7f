"""Frame stacks rebuilt at sampling time from single stored observations.

The replay buffer stores every observation once (row ``i`` of a lane holds ``o_i``). The stack
the agent saw at row ``i`` -- ``o_{i-N+1} .. o_i`` of the same lane, never reaching across an
episode start -- is rebuilt when a batch is gathered, with the ``StackLayout`` the acting
wrapper (``rl_lightning.envs.wrappers.StackObservations``) used, so both give exactly the same
array. Memory: ``N`` times less than storing stacks (for 84x84 frames and N = 4, 7 GB instead
of 28 GB per million observations).

Episode starts, with gymnasium's NEXT_STEP auto-reset: row ``j`` starts an episode when row
``j - 1`` is an auto-reset row (``reset_step``: it holds the previous episode's true final
observation and belongs to that episode), when it is the first row ever written, and when it is
the oldest row still stored (older rows were overwritten by the newest: the stack is cut there,
for at most N - 1 rows per lane, where the acting stack still held older observations). So
row ``i - k`` belongs to the episode of row ``i`` exactly when ``k <= i - oldest_row`` and none
of the rows ``i - k .. i - 1`` is an auto-reset row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rl_lightning.envs.wrappers import StackLayout

if TYPE_CHECKING:
    from rl_lightning.data.buffer import ReplayBuffer


class StackedObservations:
    """``(B,)`` flat slots -> the stacked observations ``(B, *stacked_shape)`` the agent saw
    there (``ReplayBuffer.observations_at`` when the buffer has a ``stack``).

    For a start slot of row ``i``: the slots of rows ``i, i-1, .., i-N`` of its lane
    (``slot - k * num_envs`` mod capacity, wrapping around the ring), which of them belong to
    row ``i``'s episode (a running AND over the rows in between: see the module docstring),
    then one ``take`` of the N frames, padding where a row is outside the episode, and (with
    actions) one ``take`` of the actions before each frame: the action stored in row ``j - 1``
    precedes ``o_j``, none precedes an episode's first observation. No Python loop over the
    batch.

    Args:
        buffer: the buffer whose rows are read (its current ``oldest_row`` is used).
        layout: N, the padding and the number of actions (None: no actions).
    """

    def __init__(self, buffer: ReplayBuffer, layout: StackLayout) -> None:
        self.buffer = buffer
        self.layout = layout
        self._back = np.arange(layout.frames + 1, dtype=np.int64)  # k = 0 .. N
        self._older = self._back[1:]  # k = 1 .. N

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        buffer, layout, n = self.buffer, self.layout, self.layout.frames
        lanes = buffer.num_envs
        slots = flat[:, None] - lanes * self._back  # (B, N + 1): rows i, i-1, .., i-N
        np.remainder(slots, buffer.capacity, out=slots)
        age = (flat // lanes - buffer.oldest_row) % buffer.rows  # i - oldest_row, (B,)
        # row i-k+1 is no episode start: row i-k is stored and no auto-reset row, k = 1 .. N
        linked = ~buffer.flat_reset_step.take(slots[:, 1:]) & (self._older <= age[:, None])
        in_episode = np.ones(slots.shape, dtype=bool)  # (B, N + 1): row i-k in row i's episode
        np.logical_and.accumulate(linked, axis=1, out=in_episode[:, 1:])
        frame_slots = slots[:, n - 1 :: -1]  # (B, N): rows i-N+1 .. i, oldest first
        seen = in_episode[:, n - 1 :: -1]
        flat_obs = buffer.flat_obs
        if layout.padding == "first":  # the episode's first row in every slot before it
            first = slots[np.arange(slots.shape[0]), in_episode[:, :n].sum(axis=1) - 1]
            frames = flat_obs.take(np.where(seen, frame_slots, first[:, None]), axis=0)
        else:
            frames = flat_obs.take(frame_slots, axis=0)
            frames[~seen] = 0
        prev_actions = None
        if layout.num_actions is not None:  # a_{j-1} before o_j: rows i-N .. i-1
            before = slots[:, n:0:-1]
            prev_actions = np.where(
                in_episode[:, n:0:-1], buffer.flat_actions.take(before), np.int64(-1)
            )
        return layout.assemble(frames, prev_actions)
