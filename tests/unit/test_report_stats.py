"""rl-report's statistics against numbers checked by hand, and rliable's own functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from rl_lightning.report_stats import (
    Run,
    curve_intervals,
    curve_matrix,
    group_labels,
    improvement_interval,
    improvement_probability,
    iqm,
    iqm_interval,
    mean_curve_intervals,
    performance_profile,
    run_curve,
    value_curve,
)


def test_iqm_by_hand() -> None:
    # 5 runs: a 25% trim drops int(1.25) = 1 run at each end -> mean(100, 200, 300)
    assert iqm(np.array([0.0, 100.0, 200.0, 300.0, 1000.0])) == pytest.approx(200.0)
    # 4 runs: drops one at each end -> mean(2, 3)
    assert iqm(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)
    # 3 runs: int(0.75) = 0 dropped -> the plain mean
    assert iqm(np.array([20.0, 60.0, 100.0])) == pytest.approx(60.0)


def test_iqm_interval_by_hand() -> None:
    # runs {0, 10}: a resample is {0,0}, {0,10}, {10,0} or {10,10}, each with probability 1/4;
    # its IQM (2 runs: the mean) is 0, 5, 5 or 10, so the 2.5% and 97.5% percentiles are 0, 10
    assert iqm_interval(np.array([0.0, 10.0]), reps=2000) == pytest.approx((5.0, 0.0, 10.0))
    # one run: every resample is that run
    assert iqm_interval(np.array([7.0]), reps=100) == pytest.approx((7.0, 7.0, 7.0))
    # identical runs: no spread
    assert iqm_interval(np.full(5, 500.0), reps=100) == pytest.approx((500.0, 500.0, 500.0))


def test_iqm_interval_is_repeatable_and_covers_the_point() -> None:
    scores = np.array([12.0, 150.0, 480.0, 500.0, 310.0])
    first = iqm_interval(scores, reps=500, seed=3)
    assert first == iqm_interval(scores, reps=500, seed=3)
    point, low, high = first
    assert low <= point <= high
    assert point == pytest.approx((150.0 + 310.0 + 480.0) / 3)
    assert scores.min() <= low < high <= scores.max()


def test_probability_of_improvement_by_hand() -> None:
    p = improvement_probability
    assert p(np.array([[3.0], [4.0]]), np.array([[1.0], [2.0]])) == 1.0
    assert p(np.array([[1.0], [2.0]]), np.array([[3.0], [4.0]])) == 0.0
    # pairs (2,2) tie = 1/2, (2,1) = 1, (3,2) = 1, (3,1) = 1 -> 3.5 / 4
    assert p(np.array([[2.0], [3.0]]), np.array([[2.0], [1.0]])) == 0.875
    # (500, 480, 500) vs (300, 500): 1 + 1/2 + 1 + 0 + 1 + 1/2 = 4 of 6
    assert p(np.array([[500.0], [480.0], [500.0]]), np.array([[300.0], [500.0]])) == (
        pytest.approx(2 / 3)
    )


def test_vectorised_probability_of_improvement_equals_rliable() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 6, size=(rng.integers(1, 7), 2)).astype(float)  # many ties
        y = rng.integers(0, 6, size=(rng.integers(1, 7), 2)).astype(float)
        expected = metrics.probability_of_improvement(x, y)
        assert improvement_probability(x, y) == pytest.approx(expected)


def test_improvement_interval() -> None:
    p, low, high = improvement_interval(
        np.array([500.0, 480.0, 500.0]), np.array([300.0, 500.0]), reps=500
    )
    assert p == pytest.approx(2 / 3)
    assert 0.0 <= low <= p <= high <= 1.0
    # every run of X beats every run of Y in every resample
    assert improvement_interval(np.array([5.0, 6.0]), np.array([1.0, 2.0]), reps=200) == (
        pytest.approx((1.0, 1.0, 1.0))
    )


def test_curve_intervals_are_the_pointwise_iqm() -> None:
    returns = np.array(
        [[1.0, 10.0, 100.0], [2.0, 20.0, 100.0], [3.0, 30.0, 100.0], [4.0, 40.0, 100.0]]
    )
    mid, low, high = curve_intervals(returns, reps=300)
    np.testing.assert_allclose(mid, [2.5, 25.0, 100.0])  # middle two of four at each point
    assert (low <= mid).all() and (mid <= high).all()
    assert (low[2], high[2]) == (100.0, 100.0)  # no spread at the last point


def test_performance_profile_by_hand() -> None:
    taus = np.array([0.0, 2.5, 4.0])
    profiles, cis = performance_profile({"a": np.array([1.0, 2.0, 3.0, 4.0])}, taus, reps=200)
    np.testing.assert_allclose(profiles["a"], [1.0, 0.5, 0.0])  # fraction of runs > tau
    assert cis["a"].shape == (2, 3)
    assert cis["a"][0, 0] == cis["a"][1, 0] == 1.0  # every run is above 0 in every resample


def test_run_curve_appends_the_final_evaluation(tmp_path: Path) -> None:
    summary = {
        "env_steps": 3000,
        "eval_return_mean": 90.0,
        "eval_history": [
            {"env_steps": 2000, "eval/return_mean": 50.0, "eval/return_std": 1.0},
            {"env_steps": 1000, "eval/return_mean": 10.0, "eval/return_std": 1.0},
        ],
    }
    np.testing.assert_array_equal(
        run_curve(tmp_path, summary), [[1000, 10.0], [2000, 50.0], [3000, 90.0]]
    )
    # no history in the summary: the CSV logger's file; a failed run: no final point
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "eval/return_mean,step,train/loss\n,500,0.1\n20.0,1000,\n40.0,2000,\n"
    )
    failed = {"env_steps": 2500, "eval_return_mean": None}
    np.testing.assert_array_equal(run_curve(tmp_path, failed), [[1000, 20.0], [2000, 40.0]])


def test_curve_matrix_interpolates_onto_shared_points() -> None:
    def run(curve):
        return Run(Path("."), {}, "g", "", np.asarray(curve, dtype=float))

    grid, returns = curve_matrix(
        [run([[0, 0.0], [100, 10.0], [200, 20.0]]), run([[50, 5.0], [150, 15.0], [250, 0.0]])]
    )
    np.testing.assert_array_equal(grid, [50, 100, 150, 200])  # the range both runs cover
    np.testing.assert_allclose(returns, [[5.0, 10.0, 15.0, 20.0], [5.0, 10.0, 15.0, 7.5]])


def test_value_curve_reads_the_history_and_skips_missing_values(tmp_path: Path) -> None:
    summary = {
        "env_steps": 3000,
        "eval_return_mean": 90.0,
        "eval_history": [
            {"env_steps": 2000, "eval/return_mean": 50.0, "eval/overestimation": -1.5},
            {"env_steps": 1000, "eval/return_mean": 10.0, "eval/overestimation": 4.0},
            {"env_steps": 2500, "eval/return_mean": 9.0, "eval/overestimation": float("inf")},
            {"env_steps": 2800, "eval/return_mean": 9.0},
        ],
    }
    # sorted by env steps, the non-finite and the missing value left out, no final point
    np.testing.assert_array_equal(
        value_curve(tmp_path, summary, "eval/overestimation"), [[1000, 4.0], [2000, -1.5]]
    )
    # the final evaluation's value (summary.json's eval_overestimation) at the last env step
    final = summary | {"eval_overestimation": 0.5}
    np.testing.assert_array_equal(
        value_curve(tmp_path, final, "eval/overestimation"),
        [[1000, 4.0], [2000, -1.5], [3000, 0.5]],
    )
    # a run from before the diagnostics: no values, no CSV column
    assert value_curve(tmp_path, summary, "eval/v_initial").shape == (0, 2)
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "eval/return_mean,eval/v_initial,step\n20.0,7.5,1000\n,,1500\n40.0,9.0,2000\n"
    )
    np.testing.assert_array_equal(
        value_curve(tmp_path, {"eval_history": None}, "eval/v_initial"),
        [[1000, 7.5], [2000, 9.0]],
    )


def test_mean_curve_intervals_by_hand() -> None:
    values = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [8.0, 20.0, 5.0]])
    mid, low, high = mean_curve_intervals(values, reps=300)
    np.testing.assert_allclose(mid, [4.0, 20.0, 5.0])  # the plain mean over runs
    assert (low <= mid).all() and (mid <= high).all()
    assert (low[2], high[2]) == (5.0, 5.0)  # no spread at the last point
    # one run: every resample is that run
    mid, low, high = mean_curve_intervals(np.array([[2.0, -4.0]]), reps=50)
    np.testing.assert_allclose([mid, low, high], [[2.0, -4.0]] * 3)


def test_curve_matrix_of_a_value_key_leaves_out_runs_without_it() -> None:
    with_values = Run(
        Path("."),
        {},
        "g",
        "",
        np.asarray([[0, 1.0], [100, 1.0]]),
        {"eval/overestimation": np.asarray([[0, 2.0], [100, 6.0]])},
    )
    without = Run(Path("."), {}, "g", "", np.asarray([[0, 1.0], [100, 1.0]]))
    grid, values = curve_matrix([with_values, without], "eval/overestimation")
    np.testing.assert_array_equal(grid, [0, 100])
    np.testing.assert_array_equal(values, [[2.0, 6.0]])
    assert curve_matrix([without], "eval/overestimation")[0].shape == (0,)


def test_group_labels_drop_shared_overrides() -> None:
    groups = {
        "experiment=x,target=none": [],
        "experiment=x,target=hard": [],
    }
    assert group_labels(groups) == {
        "experiment=x,target=none": "target=none",
        "experiment=x,target=hard": "target=hard",
    }
    assert group_labels({"default": []}) == {"default": "default"}


def test_fixture_summaries_follow_the_contract() -> None:
    from rl_lightning.summary import REQUIRED_KEYS

    root = Path(__file__).parents[1] / "fixtures" / "report_multirun"
    files = sorted(root.rglob("summary.json"))
    assert len(files) == 9
    for path in files:
        assert set(REQUIRED_KEYS) <= set(json.loads(path.read_text()))


def test_env_id_is_resolved_from_the_saved_config(tmp_path) -> None:
    """env=minatar saves ``MinAtar/${minatar_id:${env.game}}-v1``: the report names the game
    (and a ``$`` left in a title would be read by matplotlib as maths)."""
    from rl_lightning.report_plots import _env_title
    from rl_lightning.report_stats import _env_id

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "env:\n  game: space_invaders\n  id: MinAtar/${minatar_id:${env.game}}-v1\n"
    )
    assert _env_id(tmp_path) == "MinAtar/SpaceInvaders-v1"
    assert _env_title("a $b$ c") == r"a \$b\$ c"
