"""scripts/benchmark.py runs end to end with a tiny budget (not a timed test: no speed is
asserted, only that every measurement ran and the report was written)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_runs_with_a_tiny_budget(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "benchmark.py"),
        "--steps=400",
        "--learning-starts=200",
        "--seeds=0",
        "--envs=1",
        "--curve",
        "--bare-updates=20",
        "--micro-capacity=4000",
        "--micro-calls=5",
        f"--out={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "benchmark.json").read_text())
    results = report["results"]
    run = report["runs"]["rl_1"][0]
    assert run["env_steps"] >= 400 and run["updates"] == 20  # (400 - 200) / 10 updates
    assert run["direct_update_path"]
    # the per-update figures are the measured seconds over the 20 updates; learning is a part
    # of the training loop apart from acting and sampling
    loop_s = run["fit_s"] - run["collect_s"] - run["sample_s"]
    assert run["learner_us_per_update"] == pytest.approx(1e6 * run["learn_s"] / 20)
    assert run["in_loop_us_per_update"] == pytest.approx(1e6 * loop_s / 20)
    assert run["sample_us_per_update"] == pytest.approx(1e6 * run["sample_s"] / 20)
    assert 0.0 < run["learn_s"] <= loop_s
    assert run["env_steps_per_s"] == pytest.approx(run["env_steps"] / run["wall_s"])
    # the final greedy evaluation: 10 CartPole episodes, each return a whole number of steps
    returns = run["eval_returns"]
    assert len(returns) == 10 and all(float(r).is_integer() and 1 <= r <= 500 for r in returns)
    assert run["eval_return_mean"] == pytest.approx(sum(returns) / 10)
    # one seed: the aggregate is that run, with no spread
    agg = results["rl_1"]
    assert agg["seeds"] == [0] and agg["eval_returns_by_seed"] == [run["eval_return_mean"]]
    assert (agg["env_steps_per_s"], agg["env_steps_per_s_sd"]) == (run["env_steps_per_s"], 0.0)
    assert results["bare"]["us_per_update"] == results["bare"]["fused_adam_us_per_update"]
    assert {"sample_128_n3_us", "sample_128_n1_us", "add_16_us"} <= set(results["micro"])
    has_sb3 = importlib.util.find_spec("stable_baselines3") is not None
    assert ("sb3_1" in results) == has_sb3
    if has_sb3:
        assert report["runs"]["sb3_1"][0]["updates"] == 20
    table = (tmp_path / "benchmark.md").read_text()
    assert "env-steps/s" in table and "µs / update" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
