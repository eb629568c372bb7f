"""Prioritized replay: the sum tree by hand, ``PrioritizedSampler``'s distribution, importance
weights, admission of new rows, the ring's wrap-around, its state, and a short training run.

Hand-made lanes encode (lane, row) in the observation, 100 * lane + row, so every sampled
transition names its own start row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rl_lightning.data import PrioritizedSampler, ReplayBuffer
from rl_lightning.data.sum_tree import SumTree
from rl_lightning.train import train

# -- the sum tree ----------------------------------------------------------------------------


def test_sum_tree_totals_and_prefix_sum_find_by_hand() -> None:
    tree = SumTree(capacity=5, fanout=2)  # 5 -> 3 -> 2 -> 1 nodes: 3 levels below the root
    assert (tree.size, tree.depth) == (6, 3)  # the 5 leaves padded to 3 pairs
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # level 2: 1+2, 3+4, 5+0, 0+0; level 1: 3+7, 5+0; root: 10+5
    assert [level.tolist() for level in tree.sums[:3]] == [[15], [10, 5], [3, 7, 5, 0]]
    assert (tree.total, tree.min) == (15.0, 1.0)
    # prefix sums 1, 3, 6, 10, 15: leaf j owns [p_0 + .. + p_{j-1}, p_0 + .. + p_j)
    values = np.array([0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999, 10.0, 14.999])
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    np.testing.assert_array_equal(tree.find(values), expected)
    # at or past the total: the last positive leaf, never the zero padding
    np.testing.assert_array_equal(tree.find(np.array([15.0, 15.5])), [4, 4])
    # four children per node: 5 -> 2 -> 1 nodes; level 1 holds 1+2+3+4, 5 and padding
    wide = SumTree(capacity=5, fanout=4)
    wide.update(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (wide.depth, wide.sums[1].tolist(), wide.total) == (2, [10, 5, 0, 0], 15.0)
    np.testing.assert_array_equal(wide.find(values), expected)
    # the default (16 children) against a prefix-sum search, half of the leaves 0
    rng = np.random.default_rng(0)
    big = SumTree(capacity=5000)
    priorities = rng.random(5000) * (rng.random(5000) < 0.5)
    big.update(np.arange(5000), priorities)
    assert (big.depth, big.total) == (4, pytest.approx(priorities.sum()))
    queries = rng.uniform(0.0, big.total, 10_000)
    reference = np.searchsorted(np.cumsum(priorities), queries, side="right")
    # (the tree adds in another order than one running sum, so a query within round-off of a
    # boundary could go either way; none is, with this seed)
    np.testing.assert_array_equal(big.find(queries), reference)


def test_find_never_returns_a_zero_priority_leaf() -> None:
    tree = SumTree(capacity=4, fanout=2)
    tree.update(np.arange(4), np.array([0.1, 0.2, 0.0, 0.0]))
    assert tree.total == 0.1 + 0.2 == 0.30000000000000004  # round-off in the root
    # a plain descent takes v = total right at the root, into the zero leaves 2, 3
    np.testing.assert_array_equal(tree.find(np.array([0.3, tree.total])), [1, 1])
    tree.update(np.arange(4), np.array([0.0, 1.0, 0.0, 1.0]))
    # 0 sits on the boundary of the empty leaf 0; 1 and 2 end where leaf 1, 3 end
    np.testing.assert_array_equal(tree.find(np.array([-1.0, 0.0, 1.0, 2.0])), [1, 1, 3, 3])
    # random priorities, half of them 0, values over [0, total] including the total itself
    rng = np.random.default_rng(0)
    for fanout in (2, 3, 16):
        big = SumTree(capacity=1000, fanout=fanout)
        big.update(np.arange(1000), rng.random(1000) * (rng.random(1000) < 0.5))
        values = np.concatenate([rng.uniform(0.0, big.total, 100_000), [big.total, 0.0]])
        assert (big.leaves[big.find(values)] > 0).all()
    with pytest.raises(ValueError, match="total is 0"):
        SumTree(capacity=3).find(np.array([0.0]))


def test_batched_update_last_write_wins_and_the_tree_depends_on_its_leaves_only() -> None:
    tree = SumTree(capacity=8)
    tree.update(np.array([2, 5, 2]), np.array([1.0, 3.0, 7.0]))  # leaf 2: written 1, then 7
    np.testing.assert_array_equal(tree.get(np.array([2, 5])), [7.0, 3.0])
    assert (tree.total, tree.min) == (10.0, 3.0)
    tree.update(np.array([5, 2]), 0.0)  # a scalar sets all
    assert (tree.total, tree.min) == (0.0, np.inf)
    # small batches (level by level), one big one (a full rebuild) and set_all agree exactly
    rng = np.random.default_rng(1)
    leaves = rng.random(1000) * (rng.random(1000) < 0.7)
    trees = [SumTree(capacity=1000, fanout=4) for _ in range(3)]
    for chunk in np.array_split(rng.permutation(1000), 100):
        trees[0].update(chunk, leaves[chunk])
    trees[1].update(np.arange(1000), leaves)
    trees[2].set_all(leaves)
    for other in trees[1:]:
        for level in range(trees[0].depth + 1):
            np.testing.assert_array_equal(trees[0].sums[level], other.sums[level])
            np.testing.assert_array_equal(trees[0].mins[level], other.mins[level])
    assert trees[0].min == leaves[leaves > 0].min()
    with pytest.raises(ValueError, match="finite"):
        tree.update(np.array([0]), np.array([np.nan]))


# -- the sampler on hand-made buffers ----------------------------------------------------------


def make_buffer(rows: int, num_envs: int = 1) -> ReplayBuffer:
    return ReplayBuffer(capacity=rows * num_envs, num_envs=num_envs, obs_shape=(1,))


def add_rows(buf: ReplayBuffer, count: int, resets: frozenset[tuple[int, int]] = frozenset()):
    """Append ``count`` rows; (lane, row) in ``resets`` is an auto-reset row."""
    lanes = range(buf.num_envs)
    for _ in range(count):
        row = buf.rows_written
        buf.add(
            np.array([[100.0 * lane + row] for lane in lanes], dtype=np.float32),
            np.zeros(buf.num_envs, dtype=np.int64),
            np.ones(buf.num_envs, dtype=np.float32),
            np.zeros(buf.num_envs, dtype=bool),
            np.zeros(buf.num_envs, dtype=bool),
            np.array([(lane, row) in resets for lane in lanes]),
        )


def test_sampling_frequencies_are_proportional_to_priority_alpha() -> None:
    buf = make_buffer(16)
    add_rows(buf, 9)  # 1-step windows start at rows 0..7
    sampler = PrioritizedSampler(seed=0, alpha=0.5, eps=1e-12)
    sampler.sample(buf, 8, 1)
    # |delta| = 1, 4, 9, .., 64 -> p = |delta|^0.5 = 1, 2, .., 8 -> P(j) = (j + 1) / 36
    sampler.update_priorities(np.arange(8), torch.arange(1.0, 9.0) ** 2)
    draws, batch = 200_000, 32
    counts = np.zeros(8)
    for _ in range(draws // batch):
        counts += np.bincount(sampler.sample(buf, batch, 1).indices, minlength=8)
    prob = np.arange(1, 9) / 36
    expected = draws * prob
    # stratified draws vary less than independent ones: 4 binomial standard deviations is loose
    np.testing.assert_array_less(np.abs(counts - expected), 4 * np.sqrt(expected * (1 - prob)))
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 24.32  # the 0.999 quantile of chi-square with 7 degrees of freedom


def test_minibatches_of_one_draw_each_span_the_buffer() -> None:
    buf = make_buffer(257)
    add_rows(buf, 257)  # slots 0..255 complete, equal priorities; 256 is open
    batch = PrioritizedSampler(seed=6).sample(buf, 8 * 32, 1)
    # the stream reshapes a draw of K * B to (K, B); strata in order would give minibatch k
    # the slots 32k .. 32k + 31 only (one eighth of the ring)
    per_minibatch = batch.indices.reshape(8, 32)
    assert (per_minibatch.min(axis=1) < 64).all() and (per_minibatch.max(axis=1) > 192).all()
    # stratified: exactly one draw per stratum of 1 slot
    np.testing.assert_array_equal(np.sort(batch.indices), np.arange(256))


def test_importance_weights_by_hand() -> None:
    buf = make_buffer(16)
    add_rows(buf, 5)  # windows at rows 0..3; 5 env steps
    sampler = PrioritizedSampler(seed=1, alpha=0.5, beta=0.4, beta_steps=100, eps=1e-12)
    sampler.sample(buf, 4, 1)
    sampler.update_priorities(torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, -4.0, 9.0, 16.0]))
    batch = sampler.sample(buf, 4_000, 1)
    assert batch.indices.dtype == np.int64 and batch.weights.dtype == np.float32
    # p = 1, 2, 3, 4; P = p / 10; N = 4; beta = 0.4 + (1 - 0.4) * 5 / 100 = 0.43
    # w_j = (N P_j)^-beta / max_i (N P_i)^-beta, the max at the smallest p (slot 0)
    expected = (4 * np.array([0.1, 0.2, 0.3, 0.4])) ** -0.43 / (4 * 0.1) ** -0.43
    np.testing.assert_allclose(expected, [1.0, 2**-0.43, 3**-0.43, 4**-0.43])
    np.testing.assert_allclose(batch.weights, expected[batch.indices], rtol=1e-6)
    assert set(batch.indices.tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(batch.obs[:, 0], batch.indices)  # the slot is the row here
    # beta's schedule, and its clock counting every lane
    assert [sampler.beta_at(s) for s in (0, 50, 100, 1_000)] == pytest.approx([0.4, 0.7, 1, 1])
    assert PrioritizedSampler(beta=0.4, beta_steps=0).beta_at(0) == 1.0
    two_lanes = make_buffer(16, num_envs=2)
    add_rows(two_lanes, 5)  # 10 env steps: beta = 0.4 + 0.6 * 10 / 100 = 0.46
    other = PrioritizedSampler(seed=1, alpha=0.5, beta=0.4, beta_steps=100, eps=1e-12)
    other.sample(two_lanes, 2, 1)
    other.update_priorities(np.array([0, 1]), np.array([1.0, 4.0]))  # p = 1, 2 (the rest: 1)
    batch = other.sample(two_lanes, 1_000, 1)
    np.testing.assert_allclose(batch.weights[batch.indices == 1], 2**-0.46, rtol=1e-6)


def test_batch_or_buffer_normalisation_of_the_weights_by_hand() -> None:
    # p = 1, 2, 3, 4 at slots 0..3, beta 1 (beta_steps 0): w_j = p_min / p_j, p_min the smallest
    # priority of the batch (batch) or of the buffer (buffer, here 1)
    for normalize in ("batch", "buffer"):
        buf = make_buffer(16)
        add_rows(buf, 5)
        sampler = PrioritizedSampler(
            seed=3, alpha=1.0, beta_steps=0, eps=1e-12, normalize=normalize
        )
        sampler.sample(buf, 4, 1)
        sampler.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
        for _ in range(20):
            batch = sampler.sample(buf, 2, 1)
            p = batch.indices + 1.0
            smallest = p.min() if normalize == "batch" else 1.0
            np.testing.assert_allclose(batch.weights, smallest / p, rtol=1e-6)
    with pytest.raises(ValueError, match="normalize"):
        PrioritizedSampler(normalize="max")


def test_new_rows_get_the_max_priority_and_resets_and_open_windows_are_never_drawn() -> None:
    buf = make_buffer(32, num_envs=2)
    resets = frozenset({(1, 3), (0, 5)})
    add_rows(buf, 6, resets)
    sampler = PrioritizedSampler(seed=2, alpha=1.0, eps=1e-6)
    first = sampler.sample(buf, 5_000, 2)
    # 2-step windows complete for rows 0..3 (3 + 2 = 5 is the newest row): slots 0..7, all at
    # the initial max priority 1 except (lane 1, row 3) = slot 7; rows 4, 5 are open
    leaves = sampler.tree.leaves
    np.testing.assert_array_equal(leaves[:12], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert set(first.indices.tolist()) == {0, 1, 2, 3, 4, 5, 6}
    np.testing.assert_array_equal(first.obs[:, 0], 100 * (first.indices % 2) + first.indices // 2)
    sampler.update_priorities(np.array([0, 2]), torch.tensor([3.0, -0.5]))  # p = |delta| + eps
    assert sampler.max_priority == 3.000001
    add_rows(buf, 2, resets)  # rows 6, 7: rows 4, 5 complete; (lane 0, row 5) is a reset
    batch = sampler.sample(buf, 5_000, 2)
    expected = [3.000001, 1, 0.500001, 1, 1, 1, 1, 0, 3.000001, 3.000001, 0, 3.000001, 0, 0, 0, 0]
    np.testing.assert_allclose(leaves[:16], expected, rtol=1e-12)
    row, lane = batch.indices // 2, batch.indices % 2
    assert row.max() == 5 and not buf.reset_step[row, lane].any()


def test_the_ring_wraps_and_a_long_gap_resets_every_slot() -> None:
    buf = make_buffer(8)  # one lane, 8 rows: slot = row % 8
    add_rows(buf, 6)
    sampler = PrioritizedSampler(seed=3, alpha=1.0, eps=1e-6)
    sampler.sample(buf, 4, 1)  # rows 0..4 complete
    sampler.update_priorities(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    add_rows(buf, 5)  # rows 6..10; rows 8, 9, 10 overwrite slots 0, 1, 2 (oldest row: 3)
    sampler.sample(buf, 4, 1)
    # zeroed: rows 6..10 = slots 6, 7, 0, 1, 2; then rows 5..9 complete = slots 5, 6, 7, 0, 1
    # get the max 5 + eps; rows 3, 4 keep theirs; row 10 (slot 2) is open
    m = 5.000001
    np.testing.assert_allclose(sampler.tree.leaves, [m, m, 0, 4.000001, m, m, m, m], rtol=1e-12)
    batch = sampler.sample(buf, 2_000, 1)
    assert set(batch.obs[:, 0].astype(int).tolist()) == {3, 4, 5, 6, 7, 8, 9}
    add_rows(buf, 20, frozenset({(0, 27)}))  # rows 11..30: more than the ring holds
    sampler.sample(buf, 4, 1)
    # stored rows 23..30 in slots 7, 0, 1, .., 6; complete 23..29 at the max, except the reset
    # row 27 (slot 3); row 30 (slot 6) is open
    np.testing.assert_allclose(sampler.tree.leaves, [m, m, m, 0, m, m, 0, m], rtol=1e-12)


def test_update_priorities_takes_tensors_and_guards_non_finite_errors() -> None:
    buf = make_buffer(8)
    add_rows(buf, 4)
    sampler = PrioritizedSampler(seed=4, alpha=1.0, eps=1e-6)
    with pytest.raises(RuntimeError, match="before the first sample"):
        sampler.update_priorities(np.array([0]), np.array([1.0]))
    sampler.sample(buf, 2, 1)
    sampler.update_priorities(torch.tensor([1, 1]), torch.tensor([2.0, 0.25]))  # last one wins
    sampler.update_priorities(torch.tensor([0]), torch.tensor([float("nan")]))
    sampler.update_priorities(torch.tensor([2]), torch.tensor([0.5], dtype=torch.bfloat16))
    assert sampler.tree.get(np.array([2]))[0] == 0.500001  # autocast's bfloat16 (0.5 exactly)
    np.testing.assert_allclose(sampler.tree.get(np.array([0, 1])), [2.000001, 0.250001])
    assert sampler.max_priority == 2.000001
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedSampler(alpha=-1.0)


def test_the_state_round_trip_gives_the_same_next_batch() -> None:
    buf = make_buffer(64, num_envs=2)
    add_rows(buf, 20, frozenset({(0, 7)}))
    a = PrioritizedSampler(seed=5, alpha=0.6)
    for _ in range(3):
        batch = a.sample(buf, 16, 3)
        a.update_priorities(batch.indices, torch.from_numpy(np.arange(16.0)))
    # what a checkpoint holds: numpy arrays as tensors, and back
    state = a.state_dict()
    state["leaves"] = torch.from_numpy(state["leaves"]).numpy()
    b, c = PrioritizedSampler(seed=99, alpha=0.6), PrioritizedSampler(seed=98, alpha=0.6)
    b.load_state_dict(state)  # before its first sample: the tree comes at the next one
    c.sample(buf, 4, 3)
    c.load_state_dict(state)  # into an existing tree
    add_rows(buf, 5)
    nexts = [s.sample(buf, 32, 3) for s in (a, b, c)]
    for other in nexts[1:]:
        np.testing.assert_array_equal(nexts[0].indices, other.indices)
        np.testing.assert_array_equal(nexts[0].weights, other.weights)
    for level_a, level_b, level_c in zip(a.tree.sums, b.tree.sums, c.tree.sums, strict=True):
        np.testing.assert_array_equal(level_a, level_b)
        np.testing.assert_array_equal(level_a, level_c)
    # without the buffer: the priorities restart, the max and the generator are kept
    light = a.state_dict(include_arrays=False)
    assert "leaves" not in light
    d = PrioritizedSampler(seed=0, alpha=0.6)
    d.load_state_dict(light, buffer_restored=False)
    assert d.max_priority == a.max_priority > 1
    fresh = make_buffer(64, num_envs=2)
    add_rows(fresh, 4)  # rows 0..3: 3-step windows complete at row 0 only
    d.sample(fresh, 4, 3)
    np.testing.assert_array_equal(d.tree.leaves[:4] > 0, [True, True, False, False])
    assert d.tree.total == 2 * a.max_priority


# -- end to end ------------------------------------------------------------------------------


def test_training_learns_from_priorities(compose_config, tmp_path: Path) -> None:
    overrides = ["debug=fast", "logger=none", "buffer=prioritized"]
    seen: list[tuple[Any, Any]] = []
    runs: list[Any] = []

    def spy(run: Any) -> None:
        runs.append(run)
        hook = run.module.on_td_errors
        assert hook is not None  # needs_td_errors: the module hands the TD errors back

        def recording(minibatch: Any, td_errors: torch.Tensor) -> None:
            seen.append((minibatch.indices, minibatch.weights))
            hook(minibatch, td_errors)

        run.module.on_td_errors = recording

    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides, on_built=spy)
    assert summary["status"] == "completed", summary.get("error")
    assert len(seen) == summary["updates"] == 120  # every update, 16 transitions each
    indices, weights = seen[-1]
    assert indices.dtype == torch.int64 and indices.shape == (16,)
    assert weights.dtype == torch.float32 and weights.shape == (16,)
    assert float(weights.min()) > 0 and float(weights.max()) <= 1
    sampler = runs[0].datamodule.sampler
    assert sampler.beta_steps == 300  # ${total_env_steps}
    stored = sampler.tree.leaves[sampler.tree.leaves > 0]
    # the TD errors replaced the initial priorities of most transitions
    assert (stored != sampler.max_priority).mean() > 0.5 and sampler.max_priority != 1.0


def test_a_crash_and_resume_is_bit_identical(crash_and_resume) -> None:
    base = [
        "buffer=prioritized",
        "total_env_steps=1200",
        "updates_per_batch=16",
        "checkpoint.every_env_steps=400",
        "buffer.learning_starts_env_steps=200",
        "logger=none",
        "progress_bar=false",
        "eval.every_env_steps=0",
        "eval.final_episodes=2",
    ]
    _, _, a, b = crash_and_resume(base, fail_at=700)
    # the priorities (and the sampler's generator and counters) are part of the state
    sampler_a, sampler_b = a["ReplayDataModule"]["sampler"], b["ReplayDataModule"]["sampler"]
    assert torch.equal(sampler_a["leaves"], sampler_b["leaves"])
    assert sampler_a["rng"] == sampler_b["rng"]
    assert sampler_a["max_priority"] == sampler_b["max_priority"] > 1
