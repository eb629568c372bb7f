"""DDP on CPU (``trainer=ddp_cpu``, gloo): two ranks are one learner with two sets of actors.

Each test starts ``rl-train`` in a subprocess: Lightning launches rank 1 as a second process
with the job's overrides (``train.ddp_rank_command``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_sweeps import compose_hydra, console_script, subprocess_env

from rl_lightning.summary import read_summary

#: a small DDP run: 2 ranks x 1 CartPole lane, one update per training step (so the consistency
#: check runs after every update), 500 updates after a 500-env-step warm-up
SMALL = [
    "trainer=ddp_cpu",
    "trainer.devices=2",
    "total_env_steps=1500",
    "buffer.learning_starts_env_steps=500",
    "updates_per_batch=1",
    "eval.every_env_steps=0",
    "eval.final_episodes=2",
    "progress_bar=false",
]


def rl_train(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [console_script("rl-train"), *args],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_ranks_hold_the_same_weights_and_count_env_steps_together(tmp_path: Path) -> None:
    """Acceptance 1: online and target weights bit-identical on both ranks after every update;
    the ranks' replay buffers (their env streams) differ; the global env-step count is the sum
    of the ranks'; one summary.json, one W&B run, one checkpoint directory."""
    run_dir = tmp_path / "run"
    rl_train(
        tmp_path,
        *SMALL,
        "logger=wandb",
        "callbacks.ddp_check.enabled=true",
        "callbacks.ddp_check.record=true",
        f"hydra.run.dir={run_dir}",
    )
    checks = [json.loads(line) for line in (run_dir / "ddp_check.jsonl").read_text().splitlines()]
    summary = read_summary(run_dir)
    assert summary["status"] == "completed"
    assert 450 <= summary["updates"] <= 500
    # after every update (Lightning ends the epoch with one more batch-end call, no update)
    assert sorted({c["updates"] for c in checks}) == list(range(1, summary["updates"] + 1))
    for check in checks:
        assert len(check["online"]) == 2 and check["online"][0] == check["online"][1], check
        assert check["target"][0] == check["target"][1], check
        assert check["buffer_obs"][0] != check["buffer_obs"][1], check  # own envs, own data
        assert check["env_steps"] == sum(check["env_steps_by_rank"]), check
        assert min(check["env_steps_by_rank"]) >= check["env_steps"] // 2 - 1
    assert summary["env_steps"] == sum(summary["env_steps_by_rank"]) >= 1500
    assert len(summary["env_steps_by_rank"]) == 2
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("summary.json")] == [
        Path("run/summary.json")
    ]
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1
    assert [p.name for p in tmp_path.rglob("checkpoints")] == ["checkpoints"]
    assert (run_dir / "checkpoints" / "last.ckpt.rank1").is_file()  # rank 1's data side
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "launcher",
    [
        [],  # the basic launcher: both jobs in one process, one after the other
        pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow),
    ],
    ids=["basic", "joblib"],
)
def test_a_sweep_of_ddp_jobs_runs_each_job_once(tmp_path: Path, launcher: list[str]) -> None:
    """Acceptance 4: ``-m seed=0,1 trainer=ddp_cpu trainer.devices=2``: two jobs, each DDP, each
    its own run dir and W&B run; rank 1 runs its job, not the sweep."""
    sweep_dir = tmp_path / "sweep"
    proc = rl_train(
        tmp_path,
        "-m",
        "seed=0,1",
        *SMALL,
        "total_env_steps=1000",
        "updates_per_batch=100",
        "logger=wandb",
        *launcher,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.stdout.count("[rl-train] completed") == 2, proc.stdout[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, seed in (("0", 0), ("1", 1)):
        summary = read_summary(sweep_dir / job)
        assert summary["status"] == "completed" and summary["seed"] == seed
        assert len(summary["env_steps_by_rank"]) == 2
        assert len(list((sweep_dir / job / "wandb").glob("offline-run-*"))) == 1
        for log in ("train.log", "train_ddp_process_1.log"):  # each rank trained once
            assert (sweep_dir / job / log).read_text().count("loggers ready") == 1, log
    assert len(list(tmp_path.rglob("summary.json"))) == 2
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Acceptance 3: a 2-rank run that crashes after its 1,000-env-step checkpoint and resumes
    ends with the weights of a run never stopped, and rank 1 with the same replay data."""
    base = [
        *SMALL,
        "total_env_steps=3000",
        "updates_per_batch=16",
        "eval.every_env_steps=1000",
        "checkpoint.every_env_steps=1000",
        "logger=csv",
    ]
    rl_train(tmp_path, *base, f"hydra.run.dir={tmp_path / 'reference'}")
    crashed = rl_train(
        tmp_path,
        *base,
        "fault_injection.fail_at_env_steps=2200",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert crashed.returncode != 0
    assert read_summary(tmp_path / "run")["status"] == "failed"
    rl_train(
        tmp_path,
        f"resume={tmp_path / 'run'}",
        "fault_injection.fail_at_env_steps=null",
        f"hydra.run.dir={tmp_path / 'resume_output'}",
    )
    reference, resumed = read_summary(tmp_path / "reference"), read_summary(tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["resumed_from"].endswith(".ckpt")
    for key in ("env_steps", "env_steps_by_rank", "updates", "eval_returns", "eval_history"):
        assert resumed[key] == reference[key], key
    a = torch.load(tmp_path / "reference/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    ranks = [
        torch.load(run / "checkpoints/last.ckpt.rank1", weights_only=True)["datamodule"]
        for run in (tmp_path / "reference", tmp_path / "run")
    ]
    for name in ("obs", "actions", "rewards"):
        a_rank, b_rank = (r["buffer"]["arrays"][name] for r in ranks)
        assert torch.equal(a_rank, b_rank), name


def test_slurm_ddp_launcher_asks_for_one_task_per_rank() -> None:
    """Multi-node recipe: SLURM starts the ranks (Lightning's SLURMEnvironment needs as many
    tasks as ranks), so ``hydra/launcher=slurm_ddp`` takes its task counts from the trainer."""
    cfg = compose_hydra(
        ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra/launcher=slurm_ddp"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (cfg.trainer.strategy, cfg.trainer.accelerator) == ("ddp", "gpu")
    assert "export OMP_NUM_THREADS=1" in launcher.setup


@pytest.mark.slow
def test_a_ddp_job_runs_through_submitit(tmp_path: Path) -> None:
    """The same job under submitit (its local executor, SLURM's stand-in): the job runs in a
    submitit process and launches its second rank there."""
    sweep_dir = tmp_path / "sweep"
    rl_train(
        tmp_path,
        "-m",
        "seed=0",
        *SMALL,
        "total_env_steps=1000",
        "updates_per_batch=100",
        "logger=csv",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep_dir}",
    )
    summary = read_summary(sweep_dir / "0")
    assert summary["status"] == "completed" and len(summary["env_steps_by_rank"]) == 2
    assert (sweep_dir / ".submitit").is_dir() and (
        sweep_dir / "0/train_ddp_process_1.log"
    ).is_file()
