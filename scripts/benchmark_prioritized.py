"""Prioritized replay on a full 1,000,000-transition buffer: time to draw a batch and to update
its priorities (issue 14: under 0.5 ms and 0.2 ms for a batch of 32).

    OMP_NUM_THREADS=1 python scripts/benchmark_prioritized.py              # the measurement
    python scripts/benchmark_prioritized.py --capacity 20000 --repeats 5   # a smoke run

The buffer holds CartPole-like data (4 float32 per observation) in ``--num-envs`` lanes, with an
auto-reset row about every 200 rows, and every slot a random priority (``update_priorities``
with exponential |TD errors|). Each figure is the median (and 90th percentile) over
``--repeats`` calls timed one by one with ``time.perf_counter``:

* ``draw + IS weights``: ``PrioritizedSampler.draw`` -- the stratified values, the descent of the
  sum tree, the importance weights (and the admission check for new rows, empty here);
* ``sample (with gather)``: ``PrioritizedSampler.sample`` -- the above plus the gather of the
  n-step windows (``ReplayBuffer.gather_flat``), what the stream calls;
* ``update_priorities``: B new priorities from TD errors given as CPU tensors (what the module
  hands back), i.e. ``(|delta| + eps)^alpha``, the max, the sum- and min-tree updates;
* ``SumTree.update``: the tree update alone, numpy in, for reference.

Not a timed test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from rl_lightning.data import PrioritizedSampler, ReplayBuffer


def fill(capacity: int, num_envs: int, n_step: int, seed: int) -> ReplayBuffer:
    """A full buffer of ``capacity`` random CartPole-like time steps (one more vector step than
    it holds, so the ring has wrapped), written as whole rows rather than step by step."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity=capacity, num_envs=num_envs, obs_shape=(4,))
    buf.obs[:] = rng.standard_normal(buf.obs.shape, dtype=np.float32)
    buf.actions[:] = rng.integers(2, size=buf.actions.shape)
    buf.rewards[:] = 1.0
    ends = rng.random(buf.terminated.shape) < 1 / 200  # an episode ends about every 200 rows
    buf.terminated[:] = ends
    buf.reset_step[:] = np.roll(ends, 1, axis=0)  # the row after an end is the auto-reset row
    buf.rows_written = buf.rows + n_step  # wrapped: every complete window is stored
    return buf


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, 90th percentile) in milliseconds over ``repeats`` calls (after 10 warm-up calls)."""
    for _ in range(min(10, repeats)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * statistics.median(times), 1e3 * times[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="time steps, all lanes")
    parser.add_argument("--num-envs", type=int, default=1, help="lanes")
    parser.add_argument("--batch-size", type=int, default=32, help="transitions per batch")
    parser.add_argument("--n-step", type=int, default=3, help="window of the gather")
    parser.add_argument("--repeats", type=int, default=5_000, help="timed calls per figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    setup = time.perf_counter()
    buf = fill(args.capacity, args.num_envs, args.n_step, args.seed)
    sampler = PrioritizedSampler(seed=args.seed, alpha=0.5, beta=0.4, beta_steps=10**7)
    sampler.draw(buf, 1, args.n_step)  # admits every complete window at the max priority
    tree = sampler.tree
    assert tree is not None
    rng = np.random.default_rng(args.seed + 1)
    stored = np.flatnonzero(tree.leaves > 0)
    sampler.update_priorities(stored, rng.exponential(size=stored.size))
    setup_s = time.perf_counter() - setup

    b = args.batch_size
    slots = torch.from_numpy(rng.choice(stored, size=b))
    td_errors = torch.from_numpy(rng.standard_normal(b).astype(np.float32))
    leaves, priorities = slots.numpy(), rng.random(b) + 0.1
    rows = [
        ("draw + IS weights", *timed(lambda: sampler.draw(buf, b, args.n_step), args.repeats), 0.5),
        ("sample (with gather)", *timed(lambda: sampler.sample(buf, b, args.n_step), args.repeats), None),
        ("update_priorities", *timed(lambda: sampler.update_priorities(slots, td_errors), args.repeats), 0.2),
        ("SumTree.update", *timed(lambda: tree.update(leaves, priorities), args.repeats), None),
    ]  # fmt: skip

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"prioritized replay: {buf.capacity:,} slots ({buf.num_envs} lanes, {tree.size:,} "
        f"leaves), {stored.size:,} with a priority; batch {b}, n_step {args.n_step}; "
        f"{args.repeats} calls each; setup {setup_s:.1f} s; load average {load:.2f}"
    )
    print(f"| {'operation':<22} | median ms | p90 ms | target ms    |")
    print(f"| {'-' * 22} | --------- | ------ | ------------ |")
    for name, median, p90, target in rows:
        goal = "" if target is None else f"< {target}" + (" ok" if median < target else " MISSED")
        print(f"| {name:<22} | {median:9.4f} | {p90:6.4f} | {goal:<12} |")


if __name__ == "__main__":
    main()
