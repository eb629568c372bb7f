"""Recurrent Q-networks through ``rl_lightning.train.train``: short ``arch=gru`` / ``arch=lstm``
runs on CartPole without velocities, the refusals, and an exact resume (the acting hidden
states are in the checkpoint with the collector's policy state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rl_lightning.data import SequenceSampler
from rl_lightning.evaluate import main as evaluate_main
from rl_lightning.recurrent_loss import RecurrentTDLoss
from rl_lightning.run import Run
from rl_lightning.train import train
from rl_lightning.validation import ConfigError, validate_config


@pytest.mark.parametrize(
    "extra",
    [["arch=gru"], ["arch=lstm", "arch/head=dueling", "estimator=expected_sarsa"]],
    ids=["gru", "lstm_dueling"],
)
def test_a_recurrent_pomdp_run_trains(compose_config, tmp_path: Path, extra: list[str]) -> None:
    overrides = ["debug=fast", "logger=none", "env=cartpole_pomdp", *extra]
    seen: dict[str, Any] = {}

    def inspect(run: Run) -> None:
        seen["sampler"] = run.datamodule.sampler
        seen["loss"] = run.module.loss

    summary = train(
        compose_config(overrides), run_dir=tmp_path, overrides=overrides, on_built=inspect
    )
    assert summary["status"] == "completed", summary.get("error")
    assert summary["env_steps"] >= 300 and summary["updates"] > 0
    assert isinstance(seen["sampler"], SequenceSampler)
    assert (seen["sampler"].burn_in, seen["sampler"].train_length) == (10, 20)
    assert isinstance(seen["loss"], RecurrentTDLoss)
    # rl-eval rebuilds the recurrent network from the checkpoint and plays with its state, as
    # the final evaluation did (same seeds, same episodes)
    result = evaluate_main([str(tmp_path), "--episodes", str(len(summary["eval_returns"]))])
    assert result["returns"] == summary["eval_returns"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["buffer=prioritized"], "uniformly sampled sequences"),
        (["arch/head=distributional"], "no distributional loss"),
        (["buffer.capacity=100"], "must hold one sequence"),
        (["arch.train_length=0"], "arch.train_length=0"),
    ],
)
def test_recurrent_refusals(compose_config, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(["env=cartpole_pomdp", "arch=gru", *extra]))


def test_a_recurrent_encoder_needs_the_recurrent_network(compose_config) -> None:
    with pytest.raises(ConfigError, match="use arch=gru"):
        validate_config(compose_config(["arch=mlp", "arch/encoder=gru"]))


def test_a_recurrent_run_resumes_bit_identically(crash_and_resume) -> None:
    base = [
        "env=cartpole_pomdp",
        "arch=gru",
        "arch.burn_in=4",
        "arch.train_length=8",
        "batch_size=8",
        "total_env_steps=1200",
        "buffer.learning_starts_env_steps=200",
        "updates_per_batch=16",
        "env_steps_per_update=4",
        "checkpoint.every_env_steps=400",
        "logger=none",
        "progress_bar=false",
        "eval.every_env_steps=400",
        "eval.episodes=2",
        "eval.final_episodes=2",
        "estimator.n_step=2",
    ]
    _, _, a, b = crash_and_resume(base, fail_at=700)
    hidden_a = a["ReplayDataModule"]["collector"]["policy"]["hidden"]
    hidden_b = b["ReplayDataModule"]["collector"]["policy"]["hidden"]
    assert hidden_a.shape == (4, 128)  # env.num_envs lanes x the GRU's state
    assert torch.equal(hidden_a, hidden_b)
