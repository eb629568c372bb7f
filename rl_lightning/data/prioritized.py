"""Prioritized experience replay, proportional variant (Schaul et al. 2016, "Prioritized
Experience Replay", Sections 3.3-3.4 and Algorithm 1), as used by Rainbow (Hessel et al. 2018)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.samplers import Sampler
from rl_lightning.data.sum_tree import SumTree


class PrioritizedSampler(Sampler):
    """Replay that draws transitions with large TD errors more often, and corrects the bias.

    Transition ``j`` (a flat slot ``(row % rows) * num_envs + lane`` starting an n-step window)
    has priority ``p_j = (|delta_j| + eps)^alpha``, ``delta_j`` its TD error the last time it
    was learnt from, and is drawn with probability ``P(j) = p_j / sum_k p_k``. ``alpha = 0`` is
    uniform replay. Learning from ``P`` instead of the uniform distribution of the data biases
    the expected update; each sample's loss is therefore weighted by

        w_j = (N P(j))^(-beta) / max_i w_i = (p_min / p_j)^beta      (B,) float32, in (0, 1]

    with ``N`` the stored transitions and ``beta`` annealed linearly from ``beta`` to
    ``beta_final`` (full correction at 1) over ``beta_steps`` env steps. ``N`` and
    ``sum_k p_k`` cancel, so neither is counted. The normalisation (``normalize``) is one of
    the two readings of Algorithm 1's ``max_i w_i``:

    * ``batch`` (default; Dopamine, Acme): ``i`` ranges over the drawn batch, ``p_min`` is the
      smallest drawn priority: the largest weight of every batch is 1, so the step size stays
      that of uniform replay. Measured on CartPole with C51's KL priorities: with ``buffer``
      the well-fitted transitions' priorities fall to ~eps^alpha, every weight to ~1e-3 by the
      end (beta -> 1), and learning stalls (experiment=rainbow, seed 0: a final return of 133).
    * ``buffer`` (OpenAI Baselines): ``i`` ranges over the whole buffer, ``p_min`` the smallest
      stored priority, which a min tree keeps at its root (``SumTree.min``): a weight depends
      on its transition alone, not on which others share its batch.

    (A burst of K minibatches is drawn as one batch of ``K * B``, whose maximum is used.)

    The env-step clock of ``beta`` is ``buffer.rows_written * buffer.num_envs``: env steps
    including the auto-reset rows (about one per episode), so it runs slightly ahead of the
    run's real-transition count.

    Mechanics (no per-``add`` hook; everything happens at ``sample``):

    * A ``SumTree`` over the buffer's ``capacity`` flat slots, allocated at the first ``sample``.
    * New rows: the slots of rows written since the previous ``sample`` are set to 0 (they
      overwrote older rows and their windows are incomplete), then those of rows whose n-step
      window completed since (up to row ``rows_written - 1 - n_step``) get ``max_priority``,
      the largest ``p`` seen so far (1.0 at first), so each is drawn soon -- except auto-reset
      rows (``buffer.flat_reset_step``), which stay at 0 and are never drawn.
    * Drawing ``B``: stratified values ``v_b = (b + U_b) total / B`` (one per stratum of the
      cumulative priority, Appendix B.2.1), shuffled, each descended to a slot
      (``SumTree.find``, which never returns a zero-priority slot). The shuffle matters when
      the stream splits one draw of ``K * B`` into K minibatches ``(K, B)``: each minibatch then
      spans the whole buffer rather than one K-th of the ring.
    * ``update_priorities(indices, td_errors)`` after each update sets ``p_j`` of the batch's
      slots and raises ``max_priority``. With ``updates_per_batch = K > 1`` the K minibatches of
      a burst are drawn together, with the priorities from before the burst (``interleaved``
      draws each with the latest ones).

    Args:
        seed: seed of the sampler's own generator.
        alpha: priority exponent (0: uniform replay). Rainbow: 0.5.
        beta: importance-sampling exponent at env step 0 (0: no correction). Rainbow: 0.4.
        beta_final: importance-sampling exponent reached after ``beta_steps`` env steps.
        beta_steps: env steps over which ``beta`` anneals linearly to ``beta_final`` (0: at once).
        eps: added to ``|delta|`` so no transition's priority is 0 once learnt from.
        normalize: ``batch`` | ``buffer``: what the weights are divided by (see above).
    """

    needs_td_errors = True

    def __init__(
        self,
        *,
        seed: int = 0,
        alpha: float = 0.5,
        beta: float = 0.4,
        beta_final: float = 1.0,
        beta_steps: int = 50_000,
        eps: float = 1e-6,
        normalize: str = "batch",
    ) -> None:
        if normalize not in ("batch", "buffer"):
            raise ValueError(f"normalize must be batch or buffer, got {normalize!r}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not (0 <= beta <= 1 and 0 <= beta_final <= 1):
            raise ValueError(f"beta and beta_final must lie in [0, 1], got {beta}, {beta_final}")
        if beta_steps < 0:
            raise ValueError(f"beta_steps must be >= 0, got {beta_steps}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.rng = np.random.default_rng(seed)
        self.normalize = normalize
        self.alpha, self.eps = float(alpha), float(eps)
        self.beta, self.beta_final, self.beta_steps = float(beta), float(beta_final), beta_steps
        self.tree: SumTree | None = None
        self._loaded_leaves: np.ndarray | None = None  # from a checkpoint, until the tree exists
        self.max_priority = 1.0  # the largest p so far: what each new transition starts with
        self.seen_rows = 0  # rows_written at the previous sample: rows below it are accounted
        self.ready_until = 0  # first row (not wrapped) not yet given its initial priority

    def _restart(self) -> None:
        """Forget every priority tied to the buffer's contents (not ``max_priority``)."""
        self.seen_rows = 0
        self.ready_until = 0
        if self.tree is not None:
            self.tree.set_all(np.zeros(self.tree.capacity))

    def beta_at(self, env_steps: int) -> float:
        """``beta + (beta_final - beta) * min(1, env_steps / beta_steps)``."""
        if self.beta_steps == 0:
            return self.beta_final
        frac = min(1.0, env_steps / self.beta_steps)
        return self.beta + (self.beta_final - self.beta) * frac

    def sample(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> TransitionBatch | None:
        """``batch_size`` windows drawn with ``P(j)``, with ``indices`` (the slots, int64) and
        ``weights`` (float32) ``(batch_size,)``; None while no slot has a priority (the stream
        then acts one more vector step)."""
        drawn = self.draw(buffer, batch_size, n_step)
        if drawn is None:
            return None
        slots, weights = drawn
        return buffer.gather_flat(slots, n_step)._replace(indices=slots, weights=weights)

    def draw(
        self, buffer: ReplayBuffer, batch_size: int, n_step: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The slots ``(batch_size,)`` int64 of the next batch and their importance weights
        ``(batch_size,)`` float32, not gathered yet (new rows admitted first); None while no
        slot has a priority."""
        tree = self._tree_for(buffer)
        self._admit_new_rows(buffer, tree, n_step)
        total = tree.total
        if not total > 0:
            return None
        values = np.arange(batch_size, dtype=np.float64)
        values += self.rng.random(batch_size)
        values *= total / batch_size
        self.rng.shuffle(values)
        slots = tree.find(values)
        beta = self.beta_at(buffer.rows_written * buffer.num_envs)
        priorities = tree.get(slots)
        smallest = priorities.min() if self.normalize == "batch" else tree.min
        weights = (smallest / priorities) ** beta
        return slots, weights.astype(np.float32)

    def _tree_for(self, buffer: ReplayBuffer) -> SumTree:
        if self.tree is None:
            self.tree = SumTree(capacity=buffer.capacity)
            if self._loaded_leaves is not None:
                self.tree.set_all(self._loaded_leaves)
                self._loaded_leaves = None
        elif self.tree.capacity != buffer.capacity:
            raise ValueError(
                f"the sampler's tree has {self.tree.capacity} slots, the buffer {buffer.capacity}"
            )
        return self.tree

    def _admit_new_rows(self, buffer: ReplayBuffer, tree: SumTree, n_step: int) -> None:
        """Zero the rows written since the last call, then give ``max_priority`` to the rows
        whose window completed since (auto-reset rows stay 0): one tree update, whose
        last-write-wins rule lets a row be in both lists."""
        written = buffer.rows_written
        if written < self.seen_rows:  # the buffer was emptied under us: start over
            self._restart()
        first_new = max(self.seen_rows, written - buffer.rows)  # older new rows: overwritten
        first_ready = max(self.ready_until, buffer.oldest_row)
        last_ready = written - 1 - n_step  # the newest row whose window is complete
        new = self._slots(buffer, first_new, written)
        ready = self._slots(buffer, first_ready, last_ready + 1)
        if new.size or ready.size:
            initial = np.where(buffer.flat_reset_step.take(ready), 0.0, self.max_priority)
            tree.update(np.concatenate((new, ready)), np.concatenate((np.zeros(new.size), initial)))
        self.seen_rows = written
        self.ready_until = max(self.ready_until, last_ready + 1)

    @staticmethod
    def _slots(buffer: ReplayBuffer, first: int, stop: int) -> np.ndarray:
        """Flat slots of rows ``first .. stop - 1`` (not wrapped; at most ``rows`` of them), all
        lanes, row-major."""
        if stop <= first:
            return np.empty(0, dtype=np.int64)
        rows = np.arange(first, stop, dtype=np.int64) % buffer.rows
        lanes = np.arange(buffer.num_envs, dtype=np.int64)
        return (rows[:, None] * buffer.num_envs + lanes).reshape(-1)

    def update_priorities(self, indices: Any, td_errors: Any) -> None:
        """``p_j = (|td_error_j| + eps)^alpha`` for the slots ``indices`` ``(B,)`` of a batch
        this sampler drew, from ``td_errors`` ``(B,)`` (tensors, possibly on the GPU: copied to
        the host here, the TD errors first -- that copy waits for the update's forward pass).

        A slot named twice in the batch keeps its last priority. A non-finite TD error (a
        diverging run, which the divergence watch ends at its next check) gets
        ``max_priority`` instead of poisoning the tree.
        """
        if self.tree is None:
            raise RuntimeError("update_priorities before the first sample")
        delta = np.abs(_to_numpy(td_errors).astype(np.float64, copy=False))
        slots = _to_numpy(indices).astype(np.int64, copy=False)
        priorities = (delta + self.eps) ** self.alpha
        finite = np.isfinite(priorities)
        if finite.any():
            self.max_priority = max(self.max_priority, float(priorities[finite].max()))
        if not finite.all():
            priorities[~finite] = self.max_priority
        self.tree.update(slots, priorities)

    def state_dict(self, *, include_arrays: bool = True) -> dict[str, Any]:
        """Generator state, row counters, ``max_priority``; with ``include_arrays`` the leaves
        ``(capacity,)`` float64 (the tree is a function of them)."""
        state: dict[str, Any] = {
            "rng": self.rng.bit_generator.state,
            "seen_rows": self.seen_rows,
            "ready_until": self.ready_until,
            "max_priority": self.max_priority,
        }
        if include_arrays:
            leaves = self.tree.leaves.copy() if self.tree is not None else self._loaded_leaves
            if leaves is not None:
                state["leaves"] = leaves
        return state

    def load_state_dict(self, state: dict[str, Any], *, buffer_restored: bool = True) -> None:
        """Restore ``state_dict()``. Without the buffer's contents (``buffer_restored=False``),
        or without the leaves, priorities restart: every slot 0, the counters at 0, so the
        next ``sample`` gives every stored complete window ``max_priority`` (kept, as is the
        generator)."""
        self.rng.bit_generator.state = state["rng"]
        self.max_priority = float(state["max_priority"])
        leaves = state.get("leaves")
        if not buffer_restored or leaves is None:
            self._loaded_leaves = None
            self._restart()
            return
        self.seen_rows = int(state["seen_rows"])
        self.ready_until = int(state["ready_until"])
        leaves = np.asarray(leaves, dtype=np.float64)
        if self.tree is None:
            self._loaded_leaves = leaves
        else:
            self.tree.set_all(leaves)


def _to_numpy(x: Any) -> np.ndarray:
    """A host numpy array of ``x`` (a tensor on any device, or an array); half-precision
    floats (autocast) become float32, which numpy can hold."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()  # no copy when it is float32 already
        return x.cpu().numpy()
    return np.asarray(x)
