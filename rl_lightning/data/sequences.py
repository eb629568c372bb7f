"""Sequences of consecutive rows for recurrent Q-networks (DRQN, R2D2).

A recurrent network learns from what it would have seen while acting: runs of ``T`` consecutive
rows of one lane, ``T = burn_in + train_length + n_step``. ``SequenceSampler`` draws them
uniformly (a start row and a lane, as ``UniformSampler`` draws a transition) and gathers them
with one ``take`` per field over the ring (``slot + j * num_envs`` mod capacity: sequences wrap
around the ring's end like n-step windows do).

Episode boundaries. A sequence may hold the end of one episode and the start of the next; it
never lets one reach the other, in two ways that ``starts`` and ``reset_step`` express:

* ``starts[b, j]`` is True where row j of the sequence is an episode's first row (row j - 1 is
  gymnasium's auto-reset row, see ``buffer.py``) and at j = 0: the loss unrolls the network with
  the state zeroed just before those rows (``RecurrentEncoder.unroll(starts=...)``), so the
  hidden state is exactly the acting one for every step of an episode that started inside the
  sequence, and at most ``j`` steps old (the zero state plus the steps since the sequence start,
  the burn-in) for the episode in progress at row 0.
* ``reset_step[b, j]`` marks the auto-reset rows: they hold the previous episode's final
  observation (its state continues that episode: it is the bootstrap of a truncated or
  terminated window) and are no transitions; the loss masks them out of the train steps.
  The n-step window of a train step stops at its episode's end exactly as in
  ``ReplayBuffer.gather_flat``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.data.samplers import Sampler


class SequenceBatch(NamedTuple):
    """Sequences of ``T`` consecutive rows of one lane; leading shape ``S = (B,)`` or ``(K, B)``.

    Row ``j`` of sequence ``b`` holds ``(o_j, a_j, r_{j+1}, terminated_{j+1}, truncated_{j+1})``
    as the buffer's rows do (``rl_lightning.data.buffer``).

    Attributes:
        obs: ``(*S, T, *obs_shape)`` observations (with a frame stack: the stacks).
        actions: ``(*S, T)`` int64 actions.
        rewards: ``(*S, T)`` float32 rewards r_{j+1}.
        terminated: ``(*S, T)`` bool: the step from row j terminated the episode.
        truncated: ``(*S, T)`` bool: the step from row j truncated it.
        reset_step: ``(*S, T)`` bool: row j is an auto-reset row (no transition).
        starts: ``(*S, T)`` bool: row j is where the hidden state is zero (j = 0, and every
            episode's first row).
        env_steps: environment steps collected when the batch was sampled.
        indices, weights: None (no prioritized sequence sampler); kept for the module's hook.
    """

    obs: Any
    actions: Any
    rewards: Any
    terminated: Any
    truncated: Any
    reset_step: Any
    starts: Any
    env_steps: int = 0
    indices: Any = None
    weights: Any = None

    def map(self, fn: Callable[[Any], Any], env_steps: int | None = None) -> SequenceBatch:
        """Apply ``fn`` to every array field; ``env_steps`` kept, or replaced by the one given."""
        obs, actions, rewards, terminated, truncated, reset_step, starts = self[:7]
        return SequenceBatch(
            fn(obs),
            fn(actions),
            fn(rewards),
            fn(terminated),
            fn(truncated),
            fn(reset_step),
            fn(starts),
            self.env_steps if env_steps is None else env_steps,
        )


def gather_sequences(buffer: ReplayBuffer, flat: np.ndarray, length: int) -> SequenceBatch:
    """The ``length``-row sequences starting at flat slots ``flat`` ``(B,)``: row j of a
    sequence is slot ``flat + j * num_envs`` (mod capacity), its lane's row i + j."""
    window = (flat[:, None] + buffer.num_envs * np.arange(length)) % buffer.capacity  # (B, T)
    b = flat.shape[0]
    obs = buffer.observations_at(window.reshape(-1))
    reset_step = buffer.flat_reset_step.take(window)
    starts = np.empty_like(reset_step)
    starts[:, 0] = True
    starts[:, 1:] = reset_step[:, :-1]
    return SequenceBatch(
        obs=obs.reshape(b, length, *obs.shape[1:]),
        actions=buffer.flat_actions.take(window),
        rewards=buffer.rewards.reshape(-1).take(window),
        terminated=buffer.terminated.reshape(-1).take(window),
        truncated=buffer.truncated.reshape(-1).take(window),
        reset_step=reset_step,
        starts=starts,
    )


class SequenceSampler(Sampler):
    """Uniform replay of sequences: each batch is ``batch_size`` draws, with replacement, of a
    start row and a lane over the rows whose whole sequence is stored.

    ``sample(buffer, batch_size, n_step)`` returns sequences of ``T = burn_in + train_length +
    n_step`` rows (``train_length`` train steps, each with its n-step window inside the
    sequence); None until a lane holds T rows. The builder makes it for a recurrent ``arch``
    (``burn_in``, ``train_length`` from there) in place of ``UniformSampler``.

    Start rows may be any stored row: a sequence starting at an auto-reset row begins with the
    final observation of an episode, then the next one (``starts``).

    Args:
        seed: seed of the sampler's own generator.
        burn_in: rows per sequence before the train steps.
        train_length: train steps per sequence.
    """

    def __init__(self, *, seed: int = 0, burn_in: int, train_length: int) -> None:
        if burn_in < 0 or train_length < 1:
            raise ValueError(f"burn_in={burn_in} must be >= 0 and train_length={train_length} >= 1")
        self.rng = np.random.default_rng(seed)
        self.burn_in = int(burn_in)
        self.train_length = int(train_length)

    def length(self, n_step: int) -> int:
        """Rows per sequence, ``burn_in + train_length + n_step``."""
        return self.burn_in + self.train_length + n_step

    # sequences, not n-step transitions: the stream and the module take either batch type
    def sample(  # type: ignore[override]
        self, buffer: ReplayBuffer, batch_size: int, n_step: int
    ) -> SequenceBatch | None:
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        length = self.length(n_step)
        span = buffer.num_sampleable_rows(length - 1)  # start rows with all T rows stored
        if span <= 0:
            return None
        slots = self.rng.integers(span, size=batch_size)
        slots += buffer.oldest_row
        np.remainder(slots, buffer.rows, out=slots)
        slots *= buffer.num_envs
        slots += self.rng.integers(buffer.num_envs, size=batch_size)
        return gather_sequences(buffer, slots, length)

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any], *, buffer_restored: bool = True) -> None:
        self.rng.bit_generator.state = state["rng"]
