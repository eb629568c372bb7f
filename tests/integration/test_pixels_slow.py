"""Pixels, slow (`make test-slow`): the Atari presets run a few thousand env steps at their own
settings and write a complete summary (about a minute each on a 2-core CPU; only the warm-up and
the budget are shortened: learning starts after 1,000 random env steps instead of 80,000, and
the replay memory holds 20,000 frames, not the preset's 1,000,000 = 7 GB); and MinAtar Breakout
learns at the paper's settings (1,000,000 env steps, about 30 minutes)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rl_lightning.evaluate import main as rl_eval
from rl_lightning.summary import REQUIRED_KEYS, read_summary
from rl_lightning.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset", ["atari_pong", "atari_breakout"])
def test_an_atari_preset_runs_and_writes_a_complete_summary(
    compose_config, tmp_path: Path, preset: str
) -> None:
    overrides = [
        f"experiment={preset}",
        "total_env_steps=3000",
        "buffer.learning_starts_env_steps=1000",
        "buffer.capacity=20000",
        "eval.every_env_steps=2000",
        "eval.episodes=2",
        "eval.final_episodes=2",
        "env.max_episode_steps=2000",  # a bad early policy cannot stall a game for 27,000 steps
        "logger=csv",
        "progress_bar=false",
    ]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert set(REQUIRED_KEYS) <= set(summary) and read_summary(tmp_path) == summary
    assert summary["env_steps"] == 3000
    assert summary["updates"] == math.ceil((3000 - 1000) / 4)  # one update per 4 env steps
    assert len(summary["eval_history"]) == 1 and len(summary["eval_returns"]) == 2
    assert summary["eval_overestimation"] is None  # clipped, per-life values vs game scores
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_minatar_breakout_learns_ten_times_the_random_policys_return(
    compose_config, tmp_path: Path
) -> None:
    """experiment=minatar_dqn, seed 0, 1M env steps: the final greedy return (30 episodes) is at
    least 10x a uniformly random policy's on the same evaluation episodes (rl-eval --epsilon 1,
    same seeds). docs/results.md: seeds 0-2, curves, and the paper's DQN curve."""
    overrides = ["experiment=minatar_dqn", "seed=0", "logger=none", "progress_bar=false"]
    summary = train(compose_config(overrides), run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    random = rl_eval(
        [
            str(tmp_path),
            "--episodes",
            "30",
            "--epsilon",
            "1.0",
            "--output",
            str(tmp_path / "random.json"),
        ]
    )
    assert random["return_mean"] > 0
    assert summary["eval_return_mean"] >= 10 * random["return_mean"]
