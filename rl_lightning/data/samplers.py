"""Samplers: which stored transitions each update learns from.

The replay buffer (``ReplayBuffer``) only stores time steps; a sampler chooses the flat slots
(``(row % rows) * num_envs + lane``) that start the n-step windows of a batch and has the
buffer gather them, as Dopamine's replay buffer delegates to its ``sampling_distribution``.
The run's sampler is the ``_target_`` of ``buffer.sampler`` (``conf/buffer/*.yaml``):

* ``UniformSampler`` -- experience replay: every stored real transition equally likely;
* ``OnlineSampler`` -- no replay: every new transition once, in time order (on-policy
  learning with parallel agents).

``ReplayDataset`` asks ``sampler.sample(buffer, batch_size, n_step)`` for every batch and acts
one more vector step whenever it answers None; whether the run is online (one update per
rollout, no warm-up data, the buffer sized to one rollout) is ``sampler.online``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch


class Sampler(ABC):
    """Chooses the transitions of every batch; ``state_dict`` holds all it needs to continue.

    Every sampler is built as ``cls(seed=..., **config)`` (the seed of its own generator; a
    deterministic sampler ignores it) and is handed the buffer at every call, so one class
    serves any buffer and the config never names runtime facts.

    Interface:

    * ``sample(buffer, batch_size, n_step)``: a ``TransitionBatch`` of numpy arrays, leading
      shape ``(batch_size,)`` (an online sampler: however many are new), built by
      ``buffer.gather_flat(slots, n_step)``; or None when there is nothing to hand out yet
      (the stream then acts one more vector step and asks again).
    * ``online``: True for samplers that consume each transition once as it arrives (no
      replay): the stream then makes one update per rollout and skips the warm-up data
      (``skip_to_newest``), and the buffer is sized to one rollout.
    * ``needs_td_errors``: True for samplers that learn from the loss. The batch then carries
      ``indices`` (the flat slots) and ``weights`` (importance weights for the loss), and after
      each update the module calls ``update_priorities(minibatch.indices, td_errors)`` with
      the minibatch's per-sample TD errors ``target - q(s, a)`` (``td_errors_hook`` is that
      call, the module's ``on_td_errors``). When False (uniform, online) the hook is None: the
      module computes and transfers nothing of the kind, so the default path costs nothing.
    * ``state_dict(include_arrays=...)`` / ``load_state_dict(state, buffer_restored=...)``:
      generator state, counters and per-slot arrays, saved in every checkpoint next to the
      buffer's (``include_arrays`` follows ``checkpoint.save_buffer``); when the buffer was not
      restored, state tied to its contents restarts.

    How a prioritized sampler (Schaul et al. 2016, Rainbow) plugs in, touching no other class
    (``PrioritizedSampler`` in ``rl_lightning/data/prioritized.py`` is this recipe, built)::

        class PrioritizedSampler(Sampler):
            needs_td_errors = True

            def __init__(self, *, seed=0, alpha=0.5, beta=0.4, eps=1e-6): ...

    * A sum tree over the ``buffer.capacity`` flat slots (leaf ``j`` holds the priority
      ``p_j``, every inner node the sum of its children), allocated at the first ``sample``,
      when the buffer is known.
    * New transitions, without a per-``add`` hook (``add`` runs every vector step): at each
      ``sample``, the slots of the rows written since the previous call (``buffer.rows_written``
      against its own counter) are set to 0 (they overwrote older rows; their windows are not
      complete yet), then the rows whose n-step window completed since the previous call (up
      to row ``rows_written - 1 - n_step``), except auto-reset rows
      (``buffer.flat_reset_step``), get the largest priority so far, so each is drawn soon.
    * Drawing: ``batch_size`` stratified uniforms over ``[0, total)``, each descended through
      the tree to a slot ``j`` with probability ``P(j) = p_j / sum_k p_k``; importance weights
      ``w_j = (N P(j))^(-beta) / max_k w_k`` (N stored transitions, beta annealed to 1)::

          edges = np.linspace(0.0, tree.total, batch_size + 1)
          slots = tree.find(self.rng.uniform(edges[:-1], edges[1:]))
          return buffer.gather_flat(slots, n_step)._replace(indices=slots, weights=w)

    * ``update_priorities(indices, td_errors)``: ``p_j = (|td_error_j| + eps)^alpha`` for the
      slots of the batch (``td_errors`` a tensor on the module's device: one host transfer per
      update, paid only by this sampler), and the running maximum.
    * The loss multiplies each sample's loss by ``batch.weights``; ``state_dict`` adds the
      tree and the maximum (with ``include_arrays``) to the generator state.

    The worked example, with every file touched: ``docs/extending.md`` (samplers).
    """

    #: consumes every transition once as it arrives (no replay)
    online: ClassVar[bool] = False
    #: wants ``update_priorities(indices, td_errors)`` after every update
    needs_td_errors: ClassVar[bool] = False

    @abstractmethod
    def sample(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> TransitionBatch | None:
        """The next batch of n-step windows (numpy arrays), or None if none is ready yet."""

    def skip_to_newest(self, buffer: ReplayBuffer, n_step: int) -> None:  # noqa: B027
        """After the warm-up: mark everything stored so far as seen. Replay samplers draw
        from all stored data and do nothing; an online one never learns from warm-up data."""

    def update_priorities(self, indices: Any, td_errors: Any) -> None:  # noqa: B027
        """After the update on a batch this sampler produced: its ``indices`` ``(B,)`` and the
        per-sample TD errors ``(B,)``. Called only when ``needs_td_errors``; no-op here."""

    def td_errors_hook(self) -> Callable[[TransitionBatch, Any], None] | None:
        """What the module calls after each update's loss (``QLearningModule(on_td_errors=)``):
        ``update_priorities(minibatch.indices, td_errors)``; None unless ``needs_td_errors``,
        so that the default path computes no per-sample TD errors at all."""
        if not self.needs_td_errors:
            return None
        update = self.update_priorities
        return lambda minibatch, td_errors: update(minibatch.indices, td_errors)

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly (generator state, counters; per-slot arrays
        only with ``include_arrays``)."""
        return {}

    def load_state_dict(  # noqa: B027
        self, state: dict[str, Any], *, buffer_restored: bool = True
    ) -> None:
        """Restore ``state_dict()``. ``buffer_restored=False``: the buffer was emptied, so
        what refers to its contents restarts (the generator state is kept)."""


class UniformSampler(Sampler):
    """Experience replay: each batch is ``batch_size`` draws, uniform and with replacement, over
    the stored real transitions whose n-step window is complete.

    A start row and a lane per transition, redrawing the few auto-reset rows (about one per
    episode), then one gather per field (``ReplayBuffer.gather_flat``): no Python loop over
    the batch. The random draws are always the same for a seed (start rows, then lanes, then
    the same for the redrawn ones), so fixed-seed runs reproduce exactly across versions.

    Args:
        seed: seed of the sampler's own generator.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> TransitionBatch:
        return buffer.gather_flat(self.draw(buffer, batch_size, n_step), n_step)

    def draw(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> np.ndarray:
        """The ``(batch_size,)`` flat start slots of the next batch, not gathered yet."""
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        span = buffer.num_sampleable_rows(n_step)
        if span <= 0:
            raise RuntimeError(
                f"the buffer holds {buffer.rows_written} rows per lane, fewer than the "
                f"{n_step + 1} an n_step={n_step} window needs; collect more steps first"
            )
        oldest = max(0, buffer.rows_written - buffer.rows)
        flat = self._draw_slots(buffer, oldest, span, batch_size)
        reset = buffer.flat_reset_step
        todo = np.flatnonzero(reset.take(flat))
        for _ in range(100):  # rejection of auto-reset rows (about 1 in an episode length)
            if todo.size == 0:
                break
            again = self._draw_slots(buffer, oldest, span, todo.size)
            flat[todo] = again
            todo = todo[reset.take(again)]
        else:
            raise RuntimeError("could not sample real transitions: the buffer holds only resets")
        return flat

    def _draw_slots(self, buffer: ReplayBuffer, oldest: int, span: int, size: int) -> np.ndarray:
        """``size`` uniform (start row, lane) pairs as flat slots ``(row % rows) * N + lane``:
        start rows ``oldest + integers(span)``, then lanes ``integers(N)``. (With one lane the
        lane draw is skipped: ``integers(1)`` consumes no random bits, so the stream is the same.)
        """
        slots = self.rng.integers(span, size=size)
        slots += oldest
        np.remainder(slots, buffer.rows, out=slots)
        if buffer.num_envs > 1:
            slots *= buffer.num_envs
            slots += self.rng.integers(buffer.num_envs, size=size)
        return slots

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any], *, buffer_restored: bool = True) -> None:
        self.rng.bit_generator.state = state["rng"]


class OnlineSampler(Sampler):
    """Learning without replay -- the parallel agents' latest rollout, used once -- for
    on-policy estimators: each batch is every real transition whose n-step window completed
    since the previous batch, once each, in time order (row-major: all lanes of a time step,
    then the next step). ``batch_size`` does not apply; None when no window completed yet.

    ``consumed_until`` is the first row (not wrapped) whose window has not been handed out.

    Args:
        seed: unused (the order is deterministic); accepted like every sampler's.
    """

    online = True

    def __init__(self, *, seed: int = 0) -> None:
        self.consumed_until = 0

    def skip_to_newest(self, buffer: ReplayBuffer, n_step: int) -> None:
        self.consumed_until = max(self.consumed_until, buffer.rows_written - n_step)

    def sample(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> TransitionBatch | None:
        oldest = buffer.oldest_row
        if self.consumed_until < oldest:
            raise RuntimeError(
                f"online buffer overflow: rows {self.consumed_until}..{oldest - 1} were overwritten "
                f"before they were used; the buffer keeps {buffer.rows} rows per lane, too few for "
                "one rollout plus the n-step window"
            )
        first = self.consumed_until
        last = buffer.rows_written - 1 - n_step  # newest row whose window is complete
        if last < first:
            return None
        rows = np.repeat(np.arange(first, last + 1), buffer.num_envs)
        lanes = np.tile(np.arange(buffer.num_envs), last + 1 - first)
        keep = ~buffer.reset_step[rows % buffer.rows, lanes]
        self.consumed_until = last + 1
        if not keep.any():
            return None
        return buffer.gather(rows[keep], lanes[keep], n_step)

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        return {"consumed_until": self.consumed_until}

    def load_state_dict(self, state: dict[str, Any], *, buffer_restored: bool = True) -> None:
        self.consumed_until = int(state["consumed_until"]) if buffer_restored else 0


def sampler_class(target: str) -> type[Sampler]:
    """The ``Sampler`` subclass a config's ``_target_`` names, imported but not built: tells
    whether a run is online (``sampler_class(cfg.buffer.sampler._target_).online``) before
    anything exists. ValueError if ``target`` is not an importable sampler class."""
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{target!r} is not an importable class ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise ValueError(f"{target!r} is not a sampler (a subclass of rl_lightning.data.Sampler)")
    return cls
