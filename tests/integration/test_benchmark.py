"""scripts/benchmark.py runs end to end with a tiny budget (not a timed test: no speed is
asserted, only that every measurement ran and the report was written)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert run["learner_us_per_update"] > 0 and run["in_loop_us_per_update"] > 0
    assert results["rl_1"]["eval_return_mean"] > 0
    assert results["bare"]["us_per_update"] > 0
    assert {"sample_128_n3_us", "sample_128_n1_us", "add_16_us"} <= set(results["micro"])
    has_sb3 = importlib.util.find_spec("stable_baselines3") is not None
    assert ("sb3_1" in results) == has_sb3
    if has_sb3:
        assert report["runs"]["sb3_1"][0]["updates"] == 20
    table = (tmp_path / "benchmark.md").read_text()
    assert "env-steps/s" in table and "µs / update" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "benchmark.png").stat().st_size > 0
