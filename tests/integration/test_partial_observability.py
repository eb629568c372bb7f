"""Frame stacks and POMDP envs through ``rl_lightning.train.train``: short runs, and an exact
resume of a stacked, flickering run (the wrapper's stacks and the flicker generator are part of
the env state the checkpoint pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rl_lightning.run import Run
from rl_lightning.train import train

POMDP = ["env=cartpole_pomdp", "env.frame_stack=4"]


@pytest.mark.parametrize(
    ("extra", "width"),
    [
        ([], 4 * 4),
        (["env.stack_actions=true", "env.flicker_p=0.1"], 4 * (4 + 2)),
        # online: the small buffer keeps the N - 1 rows before each rollout
        (["buffer=online", "estimator=sarsa", "env_steps_per_update=2"], 4 * 4),
    ],
    ids=["stack4", "stack4_actions_flicker", "stack4_online"],
)
def test_a_stacked_pomdp_run_trains(
    compose_config, tmp_path: Path, extra: list[str], width: int
) -> None:
    overrides = ["debug=fast", "logger=none", *POMDP, *extra]
    seen: dict[str, Any] = {}

    def inspect(run: Run) -> None:
        seen["buffer_obs"] = run.datamodule.buffer.obs.shape
        seen["first_layer"] = next(p for p in run.q_network.parameters() if p.dim() == 2).shape

    summary = train(
        compose_config(overrides), run_dir=tmp_path, overrides=overrides, on_built=inspect
    )
    assert summary["status"] == "completed", summary.get("error")
    assert summary["env_steps"] >= 300
    assert seen["buffer_obs"][1:] == (2, 4)  # single observations per lane (debug=fast: 2 lanes)
    assert seen["first_layer"][1] == width  # the network sees the stacks


def test_a_stacked_flickering_run_resumes_bit_identically(crash_and_resume) -> None:
    base = [
        *POMDP,
        "env.stack_actions=true",
        "env.flicker_p=0.2",
        "total_env_steps=1500",
        "buffer.learning_starts_env_steps=200",
        "updates_per_batch=16",
        "checkpoint.every_env_steps=500",
        "logger=none",
        "progress_bar=false",
        "eval.every_env_steps=500",
        "eval.episodes=2",
        "eval.final_episodes=2",
        "estimator.n_step=3",
    ]
    _, _, a, b = crash_and_resume(base, fail_at=900)
    assert "ReplayDataModule" in a
    for name in ("obs", "actions", "reset_step"):
        assert torch.equal(
            a["ReplayDataModule"]["buffer"]["arrays"][name],
            b["ReplayDataModule"]["buffer"]["arrays"][name],
        ), name


@pytest.mark.parametrize("setting", ["stack1", "stack4", "stack4_actions", "gru"])
def test_each_ablation_pomdp_setting_trains(compose_config, tmp_path: Path, setting: str) -> None:
    overrides = [
        "experiment=ablation_pomdp",
        f"ablation/pomdp={setting}",
        "debug=fast",
        "logger=none",
    ]
    cfg = compose_config(overrides)
    assert list(cfg.env.mask_indices) == [1, 3]  # the velocities hidden
    stack = 1 if setting in ("stack1", "gru") else 4
    assert cfg.env.frame_stack == stack
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
