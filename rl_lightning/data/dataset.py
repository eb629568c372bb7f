"""An infinite stream of training batches that interleaves acting and sampling."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.collector import VectorCollector
from rl_lightning.data.samplers import Sampler
from rl_lightning.distributed import gather_counts, world_size


class ReplayDataset(IterableDataset):
    """Each item: collect ``updates_per_batch * env_steps_per_update`` env steps, then have
    ``sampler`` choose ``updates_per_batch`` minibatches of ``batch_size`` n-step transitions
    from ``buffer`` (one gather).

    With an online sampler (``sampler.online``, e.g. ``OnlineSampler``) there is no replay:
    each item is one update on exactly the transitions collected since the previous item (all
    lanes, in time order, each used once; ``batch_size`` and ``updates_per_batch`` do not
    apply) -- the lecture's parallel agents for on-policy learning. Warm-up transitions
    (``learning_starts_env_steps``) are then not learned from.

    The stream ends once ``total_env_steps`` real transitions were collected, which ends
    Lightning's single epoch. Warm-up (``learning_starts_env_steps``) happens once, before the
    first batch. The module pulls items itself (``training_step(dataloader_iter)``), so each
    burst is collected with the weights of the latest update (no prefetch lag).

    Batches are ``TransitionBatch`` of tensors shaped ``(K, B, ...)``, K = updates_per_batch.
    Whenever the sampler has nothing to hand out (None), the stream acts one more vector step.

    With ``interleaved=True`` (replay only) an item is an ``InterleavedUpdates``: up to K
    minibatches produced lazily, each after collecting ``env_steps_per_update`` env steps, so
    acting and learning alternate exactly as in CleanRL's loop (act E steps, one update, act E
    steps, ...) while Lightning's per-``training_step`` cost is still paid once per K updates.
    The stream makes one update per E env steps after the warm-up, the last one when the budget
    is reached (the burst schedule always makes K per item, also after a partial last burst).

    Under DDP (``world`` ranks, each with its own stream, collector and buffer) every budget
    counts the env steps of all ranks: each rank collects ``1 / world`` of each burst (of the
    warm-up, of the budget), and ``env_steps`` -- what batches carry, what schedules, logs,
    evaluations and checkpoints read -- is the sum of the ranks' counts, gathered once per item
    (interleaved: once per minibatch); ``env_steps_by_rank`` holds the counts it summed. All ranks
    thus see the same count and end the stream after the same item, as DDP's collectives need.
    """

    def __init__(
        self,
        *,
        collector: VectorCollector,
        buffer: ReplayBuffer,
        sampler: Sampler,
        batch_size: int,
        n_step: int,
        total_env_steps: int,
        learning_starts_env_steps: int,
        env_steps_per_update: float,
        updates_per_batch: int,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        if env_steps_per_update <= 0:
            raise ValueError(f"env_steps_per_update must be > 0, got {env_steps_per_update}")
        self.collector = collector
        self.buffer = buffer
        self.sampler = sampler
        online = sampler.online  # no replay: one update per rollout
        self.batch_size = batch_size
        self.n_step = n_step
        self.total_env_steps = total_env_steps
        self.learning_starts_env_steps = learning_starts_env_steps
        self.env_steps_per_update = env_steps_per_update
        self.updates_per_batch = 1 if online else updates_per_batch
        self.online = online
        self.interleaved = interleaved and not online
        self._collect_target = 0.0  # env steps the collector should have reached
        self._refill = False  # resumed without the buffer's contents (see load_state_dict)
        self.sample_time_s = 0.0  # wall time spent sampling minibatches (perf)
        self.world = 1  # number of DDP ranks (read when iteration starts, inside trainer.fit)
        self._synced_env_steps = 0  # all ranks' env steps at the last gather
        #: every rank's env steps at the last gather (DDP), in rank order
        self.env_steps_by_rank: list[int] = []

    @property
    def env_steps(self) -> int:
        """Real transitions collected so far: by this process's collector, or under DDP by all
        ranks together, as of the last gather (the same number on every rank)."""
        return self.collector.env_steps if self.world == 1 else self._synced_env_steps

    def _sync_env_steps(self) -> int:
        """All ranks' env steps now (a collective under DDP; the collector's count outside)."""
        if self.world > 1:
            self.env_steps_by_rank = gather_counts(self.collector.env_steps)
            self._synced_env_steps = sum(self.env_steps_by_rank)
        return self.env_steps

    def state_dict(self) -> dict[str, float | int]:
        """Where the stream stands: the env-step target of the last item (the collector, the
        buffer and the policy keep their own state)."""
        return {
            "collect_target": self._collect_target,
            "sample_time_s": self.sample_time_s,
            "env_steps": self.env_steps,
        }

    def load_state_dict(
        self, state: dict[str, float | int], *, buffer_restored: bool = True
    ) -> None:
        """Continue the stream after the item that ``state`` was taken after. Without the
        buffer's contents (``buffer_restored=False``) the next ``__iter__`` first refills it
        with ``learning_starts_env_steps`` env steps of the current policy; the schedule then
        shifts by those steps (the run goes on, not bit-identically)."""
        self._collect_target = float(state["collect_target"])
        self.sample_time_s = float(state["sample_time_s"])
        # all ranks' env steps (checkpoints from before DDP support: this rank's)
        self.world = world_size()
        self._synced_env_steps = int(state.get("env_steps", self.collector.env_steps))
        self._refill = not buffer_restored and self._collect_target > 0

    def _collect_until(self, env_steps: float) -> None:
        """Collect until this rank has its share (``1 / world``) of ``env_steps`` (all ranks'
        env steps, capped at the budget)."""
        target = min(env_steps, self.total_env_steps) / self.world
        while self.collector.env_steps < target:
            missing = target - self.collector.env_steps
            self.collector.collect(max(1, math.ceil(missing / self.collector.num_envs)))

    def __iter__(self) -> Iterator[TransitionBatch | InterleavedUpdates]:
        self.world = world_size()
        self.collector.env_step_scale = self.world  # exploration schedules read all ranks' steps
        if self._refill:  # resumed without the buffer's contents: warm up again
            self._refill = False
            refill_start = self.collector.env_steps * self.world
            self._collect_until(refill_start + self.learning_starts_env_steps)
            while self.buffer.num_sampleable_rows(self.n_step) < 1:
                self.collector.collect(1)
            self._collect_target += self.collector.env_steps * self.world - refill_start
        if self._collect_target == 0.0:
            # warm-up: enough real steps for learning to start and for one n-step window per lane
            self._collect_target = float(self.learning_starts_env_steps)
            self._collect_until(self._collect_target)
            if self.online:
                if self.learning_starts_env_steps > 0:  # fresh rollouts only: no warm-up replay
                    self.sampler.skip_to_newest(self.buffer, self.n_step)
            else:
                while self.buffer.num_sampleable_rows(self.n_step) < 1:
                    self.collector.collect(1)
        self._sync_env_steps()
        if self.interleaved:
            while self._collect_target < self.total_env_steps:
                yield InterleavedUpdates(self, self.updates_per_batch)
            return
        while self.env_steps < self.total_env_steps:
            self._collect_target += self.updates_per_batch * self.env_steps_per_update
            self._collect_until(self._collect_target)
            yield self._sample()

    def next_minibatch(self) -> TransitionBatch | None:
        """Interleaved schedule: collect ``env_steps_per_update`` env steps, then sample one
        minibatch ``(B, ...)`` of tensors; None once the budget is spent. One update per
        ``env_steps_per_update`` env steps after the warm-up: ``ceil((total_env_steps -
        learning_starts_env_steps) / env_steps_per_update)`` updates in all."""
        if self._collect_target >= self.total_env_steps:
            return None
        self._collect_target += self.env_steps_per_update
        self._collect_until(self._collect_target)  # nothing if a vector step ran ahead
        start = time.perf_counter()
        flat = self.sampler.sample(self.buffer, self.batch_size, self.n_step)
        while flat is None:  # nothing to hand out yet: act on
            self.collector.collect(1)
            flat = self.sampler.sample(self.buffer, self.batch_size, self.n_step)
        batch = flat.map(torch.from_numpy, self._sync_env_steps())
        self.sample_time_s += time.perf_counter() - start
        return batch

    def _sample(self) -> TransitionBatch:
        start = time.perf_counter()
        batch = self._sample_now()
        self.sample_time_s += time.perf_counter() - start
        return batch

    def _sample_now(self) -> TransitionBatch:
        k, b = self.updates_per_batch, self.batch_size
        flat = self.sampler.sample(self.buffer, k * b, self.n_step)
        while flat is None:  # nothing to hand out yet (online: only auto-reset rows came in)
            self.collector.collect(1)
            flat = self.sampler.sample(self.buffer, k * b, self.n_step)
        env_steps = self._sync_env_steps()
        if self.online:  # one update on however many transitions came in
            return flat.map(
                lambda x: torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0), env_steps
            )
        return flat.map(
            lambda x: torch.from_numpy(np.ascontiguousarray(x)).reshape(k, b, *x.shape[1:]),
            env_steps,
        )


class InterleavedUpdates:
    """Up to K minibatches made lazily by ``ReplayDataset.next_minibatch``: iterating it acts
    ``env_steps_per_update`` env steps before each minibatch, with the weights of the update
    just made. Iterate it once. (A plain class: Lightning and the DataLoader pass it through
    unchanged, where a NamedTuple or dataclass would be converted or moved field by field.)
    """

    def __init__(self, dataset: ReplayDataset, num_updates: int) -> None:
        self.dataset = dataset
        self.num_updates = num_updates

    def __iter__(self) -> Iterator[TransitionBatch]:
        for _ in range(self.num_updates):
            minibatch = self.dataset.next_minibatch()
            if minibatch is None:  # the budget is spent
                return
            yield minibatch
