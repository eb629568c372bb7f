"""Exact resume: a run killed (SIGKILL), stopped (SIGTERM) or crashed after a checkpoint and
resumed ends bit-identical to the uninterrupted run; bad checkpoints fall back or fail clearly."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rl_lightning.callbacks import InjectedFault
from rl_lightning.checkpointing import CheckpointError
from rl_lightning.summary import read_summary
from rl_lightning.train import CONFIG_DIR, train
from rl_lightning.validation import ConfigError

#: CartPole with small budgets: 4000 env steps, a checkpoint every 1000, evaluations and CSV
#: rows all along (a few seconds per run)
BASE = [
    "total_env_steps=4000",
    "checkpoint.every_env_steps=1000",
    "checkpoint.keep_last=2",
    "logger=csv",
    "progress_bar=false",
    "updates_per_batch=32",
    "log_every_updates=50",
    "log_every_env_steps=500",
    "eval.every_env_steps=1000",
    "eval.episodes=2",
    "eval.final_episodes=2",
]
#: summary figures a resumed run must reproduce exactly (wall times differ)
FIGURES = (
    "env_steps",
    "updates",
    "episodes",
    "eval_returns",
    "eval_return_mean",
    "eval_return_std",
    "eval_history",
)


def compose_run(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    return train(compose_run(overrides), run_dir=run_dir, overrides=overrides)


def resume(run_dir: Path, tmp: Path, *extra: str) -> dict[str, Any]:
    """Resume like ``rl-train resume=<run_dir>`` would, from a fresh Hydra output dir."""
    overrides = [f"resume={run_dir}", *extra]
    return train(compose_run(overrides), run_dir=tmp / "hydra_output", overrides=overrides)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock columns (perf/*), which no two runs share."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Parameters, optimizer state, summary figures and metric log all bit-identical."""
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert {k for k in a["state_dict"] if k.startswith("target_network.")}  # target included
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    for key, state in a["optimizer_states"][0]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, b["optimizer_states"][0]["state"][key][name]), (key, name)
    ref, res = read_summary(reference), read_summary(resumed)
    assert res["status"] == "completed"
    assert {k: res[k] for k in FIGURES} == {k: ref[k] for k in FIGURES}
    assert len(ref["eval_history"]) >= 2  # periodic evaluations before and after the stop
    rows = metric_rows(reference)
    assert len(rows) > 10
    assert metric_rows(resumed) == rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run with BASE."""
    run_dir = tmp_path_factory.mktemp("reference")
    summary = run(BASE, run_dir)
    assert summary["status"] == "completed"
    return run_dir


def start_cli(run_dir: Path, tmp: Path) -> subprocess.Popen:
    script = Path(sys.executable).parent / "rl-train"
    if not script.exists():
        script = Path(shutil.which("rl-train") or "rl-train")
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="1")
    return subprocess.Popen(
        [str(script), *BASE, f"hydra.run.dir={run_dir}"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not list((run_dir / "checkpoints").glob("step-*.ckpt")):
        if proc.poll() is not None:
            pytest.fail(
                f"rl-train ended (rc {proc.returncode}) before a checkpoint: "
                f"{proc.communicate()[0][-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared")
        time.sleep(0.005)


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(
    reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli(run_dir, tmp_path)
    wait_for_checkpoint(proc, run_dir)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()  # it really died mid-run
    summary = resume(run_dir, tmp_path)
    assert summary["resumed_from"].startswith(str(run_dir / "checkpoints" / "step-"))
    assert_same_run(reference, run_dir)


def test_sigterm_writes_a_checkpoint_and_interrupted_summary_then_resumes(
    reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli(run_dir, tmp_path)
    wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "[rl-train] interrupted: stopped by SIGTERM" in output
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    assert summary["signal"] == "SIGTERM"
    checkpoint = run_dir / summary["checkpoint"]
    assert checkpoint.is_file()
    assert checkpoint.name == f"step-{summary['env_steps']:012d}.ckpt"
    assert 1000 <= summary["env_steps"] < 4000
    # the summary states where the checkpoint it names stopped
    state = torch.load(checkpoint, weights_only=True)["rl_lightning_resume"]
    assert (state["env_steps"], state["updates"]) == (summary["env_steps"], summary["updates"])
    resumed = resume(run_dir, tmp_path)
    assert resumed["resumed_from"] == str(checkpoint)
    assert_same_run(reference, run_dir)


@pytest.mark.parametrize(
    "variant",
    [
        ["interleaved=true"],
        ["buffer=online", "env.num_envs=8", "env_steps_per_update=8", "estimator=sarsa"],
        ["exploration=noisy"],  # the global torch generator drives the noise
    ],
    ids=["interleaved", "online", "noisy"],
)
def test_crash_after_a_checkpoint_then_resume_is_bit_identical(
    variant: list[str], tmp_path: Path
) -> None:
    overrides = [*BASE, "total_env_steps=2500", *variant]
    run(overrides, tmp_path / "reference")
    crashing = [*overrides, "fault_injection.fail_at_env_steps=1500"]
    with pytest.raises(InjectedFault):
        run(crashing, tmp_path / "run")
    assert read_summary(tmp_path / "run")["status"] == "failed"
    resume(tmp_path / "run", tmp_path, "fault_injection.fail_at_env_steps=null")
    assert_same_run(tmp_path / "reference", tmp_path / "run")


def test_resume_without_the_buffer_refills_it_and_finishes(tmp_path: Path) -> None:
    overrides = [*BASE, "total_env_steps=2500", "checkpoint.save_buffer=false"]
    with pytest.raises(InjectedFault):
        run([*overrides, "fault_injection.fail_at_env_steps=1500"], tmp_path / "run")
    ckpt = torch.load(next((tmp_path / "run" / "checkpoints").glob("step-*.ckpt")))
    assert "arrays" not in ckpt["ReplayDataModule"]["buffer"]
    summary = resume(tmp_path / "run", tmp_path, "fault_injection.fail_at_env_steps=null")
    assert summary["status"] == "completed"
    assert summary["env_steps"] >= 2500


def crashed_run(tmp_path: Path) -> tuple[Path, list[Path]]:
    """debug=fast with a checkpoint every 100 env steps, crashed at 450: several checkpoints."""
    run_dir = tmp_path / "run"
    overrides = [
        "debug=fast",
        "total_env_steps=600",
        "logger=csv",
        "checkpoint.every_env_steps=100",
        "checkpoint.keep_last=3",
        "fault_injection.fail_at_env_steps=450",
    ]
    with pytest.raises(InjectedFault):
        run(overrides, run_dir)
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    assert len(checkpoints) == 3  # keep_last
    return run_dir, checkpoints


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, checkpoints = crashed_run(tmp_path)
    newest = checkpoints[-1]
    data = newest.read_bytes()
    newest.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage]
    )
    # named directly, a damaged file is an error naming it
    with pytest.raises(CheckpointError, match=f"checkpoint {newest} is unreadable"):
        resume(newest, tmp_path)
    # the run dir: the newest readable one, saying which was skipped
    with caplog.at_level(logging.WARNING, logger="rl_lightning"):
        summary = resume(run_dir, tmp_path, "fault_injection.fail_at_env_steps=null")
    assert summary["status"] == "completed"
    assert summary["resumed_from"] == str(checkpoints[-2])
    assert f"checkpoint {newest} is unreadable" in caplog.text
    assert "falling back to the next newest checkpoint" in caplog.text


def test_missing_checkpoint_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"resume={tmp_path}/nowhere: no such"):
        resume(tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in .*empty_run/checkpoints"):
        resume(tmp_path / "empty_run", tmp_path)
    summary = read_summary(tmp_path / "hydra_output")  # the failed start still says why
    assert summary["status"] == "failed"
    assert "no checkpoint in" in summary["error"]


def test_rl_train_exits_2_naming_a_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoints" / "step-000000000100.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    script = Path(sys.executable).parent / "rl-train"
    if not script.exists():
        script = Path(shutil.which("rl-train") or "rl-train")
    proc = subprocess.run(
        [str(script), f"resume={bad}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"[rl-train] checkpoint {bad} is unreadable (truncated or corrupt)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_refuses_overrides_that_change_the_run(tmp_path: Path) -> None:
    run_dir, _ = crashed_run(tmp_path)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.0023 in the run, 0.5 given"):
        resume(run_dir, tmp_path, "optim.lr=0.5")
    # the original overrides (a requeued job script re-runs them) are accepted
    summary = resume(
        run_dir,
        tmp_path,
        "debug=fast",
        "total_env_steps=600",
        "fault_injection.fail_at_env_steps=null",
    )
    assert summary["status"] == "completed"
    assert summary["env_steps"] >= 600


@pytest.mark.parametrize(
    ("overrides", "diverged_at", "checkpoint"),
    [
        # the absurd learning rate: non-finite from the second update on
        (["optim.lr=1e6", "loss=mse"], (2, 80), None),
        # a linear model under plain SGD with too large a step: finite for a while, so a
        # checkpoint is written before the divergence and kept
        (
            ["arch=linear", "optim=sgd", "optim.lr=0.5", "loss=mse", "max_grad_norm=null"],
            (37, 145),
            "checkpoints/step-000000000113.ckpt",
        ),
    ],
    ids=["lr=1e6", "linear-sgd"],
)
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(
    overrides: list[str], diverged_at: tuple[int, int], checkpoint: str | None, tmp_path: Path
) -> None:
    from rl_lightning.module import TrainingDiverged

    overrides = [
        "debug=fast",
        "total_env_steps=2000",
        "logger=csv",
        "checkpoint.every_env_steps=100",
        *overrides,
    ]
    with pytest.raises(
        TrainingDiverged, match=f"non-finite loss or Q-value at update {diverged_at[0]}"
    ):
        run(overrides, tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "diverged"
    assert (summary["diverged_at_update"], summary["diverged_at_env_steps"]) == diverged_at
    # detected within log_every_updates=10 updates (debug=fast), at the next training step
    assert diverged_at[0] <= summary["updates"] < diverged_at[0] + 10 + 8
    assert summary["checkpoint"] == checkpoint
    saved = list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert saved == ([tmp_path / checkpoint] if checkpoint else [])
    for path in saved:  # never a checkpoint of diverged weights
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values())
    rows = metric_rows(tmp_path)
    assert rows[-1]["train/loss"] in ("nan", "inf")  # the curve shows where it went


def test_checkpoints_are_loadable_with_weights_only(tmp_path: Path) -> None:
    run_dir, checkpoints = crashed_run(tmp_path)
    ckpt = torch.load(checkpoints[-1], weights_only=True)
    state = ckpt["rl_lightning_resume"]
    assert state["env_steps"] == int(checkpoints[-1].stem.split("-")[1])
    # the metric rows written by then: those up to its env step (the crash flushed later ones)
    rows = metric_rows(run_dir)
    assert state["csv_rows"] == sum(int(row["step"]) <= state["env_steps"] for row in rows)
    assert 0 < state["csv_rows"] < len(rows)
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert ckpt["ReplayDataModule"]["collector"]["env"] is not None  # CartPole pickles


def test_slurm_requeue_signal_then_the_requeued_job_resumes_by_itself(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGUSR1 under SLURM: checkpoint, summary, `scontrol requeue <job>`; the requeued job
    (the same command, the same run dir, resume unset) continues from the checkpoint."""
    import threading

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    run_dir = tmp_path / "run"

    def signal_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while not list((run_dir / "checkpoints").glob("step-*.ckpt")):
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGUSR1)  # handled in the main thread, by the run

    sender = threading.Thread(target=signal_after_first_checkpoint, daemon=True)
    sender.start()
    from rl_lightning.signals import TrainingInterrupted

    with pytest.raises(TrainingInterrupted) as stopped:
        run(BASE, run_dir)
    sender.join()
    assert stopped.value.exit_code == 128 + signal.SIGUSR1
    summary = read_summary(run_dir)
    assert (summary["status"], summary["signal"], summary["requeue"]) == (
        "interrupted",
        "SIGUSR1",
        True,
    )
    assert calls.read_text().split() == ["requeue", "4242"]
    resumed = run(BASE, run_dir)  # the requeued job: same command line and run dir
    assert resumed["resumed_from"] == str(run_dir / summary["checkpoint"])
    assert_same_run(reference, run_dir)


def test_checkpoints_change_nothing_in_the_run(reference: Path, tmp_path: Path) -> None:
    """Saving draws no random number and folds no statistic early: the same run without
    periodic checkpoints has the same weights, summary and metric log."""
    run([*BASE, "checkpoint.every_env_steps=0"], tmp_path)
    assert not list((tmp_path / "checkpoints").glob("step-*.ckpt"))
    assert_same_run(reference, tmp_path)
