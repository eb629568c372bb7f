"""train_ensemble: members are the single runs of their seeds, in one process."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ddp import rl_train
from test_sweeps import console_script, subprocess_env, wandb_records

from rl_lightning.builders import load_q_network
from rl_lightning.ensemble.run import train_ensemble
from rl_lightning.loggers import run_group
from rl_lightning.summary import read_summary
from rl_lightning.train import train
from rl_lightning.train_stats import TrainingDiverged, ValueWatchdog

#: the default run, short: 4 CartPole lanes per member, 1,536 updates, two evaluations
BASE = [
    "total_env_steps=4000",
    "eval.every_env_steps=2000",
    "checkpoint.every_env_steps=2000",
    "logger=csv",
    "progress_bar=false",
]


@pytest.mark.parametrize("extra", [[], ["interleaved=true"]], ids=["bursts", "interleaved"])
def test_members_end_as_the_single_runs_of_their_seeds(
    compose_config, tmp_path: Path, extra: list[str]
) -> None:
    seeds = [0, 1]
    overrides = [[*BASE, *extra, f"seed={s}"] for s in seeds]
    members = train_ensemble(
        [compose_config(o) for o in overrides],
        run_dirs=[tmp_path / f"member{s}" for s in seeds],
        overrides=overrides,
    )
    for seed, member, member_overrides in zip(seeds, members, overrides, strict=True):
        single = train(
            compose_config(member_overrides),
            run_dir=tmp_path / f"single{seed}",
            overrides=member_overrides,
        )
        assert member["status"] == "completed" and member["seed"] == seed
        for key in ("env_steps", "episodes", "updates", "eval_episodes"):
            assert member[key] == single[key], key
        history = [h["eval/return_mean"] for h in member["eval_history"]]
        assert history == [h["eval/return_mean"] for h in single["eval_history"]]
        assert member["eval_returns"] == single["eval_returns"]
        # the member's run dir holds what a single run's does; rl-eval reads its checkpoint
        run_dir = tmp_path / f"member{seed}"
        assert read_summary(run_dir) == member
        assert (run_dir / "csv" / "metrics.csv").is_file()
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run_dir / "checkpoints").glob("step-*.ckpt"))) == 1  # at ~2,000
        q_member, config = load_q_network(run_dir)
        q_single, _ = load_q_network(tmp_path / f"single{seed}")
        assert config["seed"] == seed
        # float32 rounding (vmapped sums in another order) compounds over 1,536 Adam steps:
        # about 1e-4 here (test_ensemble_learner: 2e-7 after 200 updates); the data streams
        # and evaluations above are the same
        for a, b in zip(q_member.parameters(), q_single.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


def test_a_failing_member_fails_alone(compose_config, tmp_path: Path) -> None:
    """Acceptance 4: the fault injection ends member 1 at env step 2,500 (status failed, its
    error in its summary); members 0 and 2 complete."""
    overrides = [
        [*BASE, "seed=0"],
        [*BASE, "seed=1", "fault_injection.fail_at_env_steps=2500"],
        [*BASE, "seed=2"],
    ]
    members = train_ensemble(
        [compose_config(o) for o in overrides],
        run_dirs=[tmp_path / str(k) for k in range(3)],
        overrides=overrides,
    )
    assert [m["status"] for m in members] == ["completed", "failed", "completed"]
    assert "InjectedFault" in members[1]["error"]
    assert 2500 <= members[1]["env_steps"] < 3000 and members[0]["env_steps"] >= 4000
    assert read_summary(tmp_path / "1")["status"] == "failed"


def test_a_member_whose_values_blow_up_diverges_alone(
    compose_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value watchdog (``watchdog.on_value_blowup=stop``) of one member ends that member
    with ``status: diverged`` at a train-metrics log; the other completes."""
    watchdogs: list[ValueWatchdog] = []
    built = ValueWatchdog.__init__

    def init(self: ValueWatchdog, **kwargs: Any) -> None:
        built(self, **kwargs)
        watchdogs.append(self)

    def check(self: ValueWatchdog, q_abs_max: float, updates: int, env_steps: int) -> None:
        if self is watchdogs[1] and env_steps >= 2000:  # member 1's values "blow up"
            raise TrainingDiverged(
                updates, env_steps, updates, reason="value-blowup", message="test blow-up"
            )

    monkeypatch.setattr(ValueWatchdog, "__init__", init)
    monkeypatch.setattr(ValueWatchdog, "check", check)
    overrides = [[*BASE, f"seed={s}", "watchdog.on_value_blowup=stop"] for s in (0, 1)]
    members = train_ensemble(
        [compose_config(o) for o in overrides],
        run_dirs=[tmp_path / str(s) for s in (0, 1)],
        overrides=overrides,
    )
    assert members[0]["status"] == "completed" and members[0]["env_steps"] >= 4000
    assert members[1]["status"] == "diverged" and members[1]["env_steps"] < 4000
    assert read_summary(tmp_path / "1")["status"] == "diverged"


def test_a_seed_sweep_runs_as_one_ensemble_and_reports_as_single_runs(tmp_path: Path) -> None:
    """Acceptance 3: ``rl-train -m seed=0,1,2,3,4 hydra/launcher=ensemble``: five run dirs with
    a single run's files, from one ensemble, which ``rl-report`` reads unchanged."""
    sweep = tmp_path / "sweep"
    proc = rl_train(
        tmp_path,
        "-m",
        "seed=0,1,2,3,4",
        "total_env_steps=1500",
        "eval.every_env_steps=500",
        "logger=wandb",  # offline: one W&B run per member, all in one process
        "progress_bar=false",
        "hydra/launcher=ensemble",
        f"hydra.sweep.dir={sweep}",
    )
    assert "Launching 5 jobs as 1 ensemble(s)" in proc.stdout + proc.stderr
    run_ids = set()
    for job in range(5):
        run_dir = sweep / str(job)
        summary = read_summary(run_dir)
        assert summary["status"] == "completed" and summary["seed"] == job
        assert summary["env_steps"] >= 1500 and len(summary["eval_history"]) == 2
        assert (run_dir / ".hydra" / "config.yaml").is_file()
        offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(offline) == 1  # the member's own W&B run, finished, in the seed group
        records = list(wandb_records(offline[0]))
        assert "exit" in [r.WhichOneof("record_type") for r in records]
        run = next(r.run for r in records if r.HasField("run"))
        assert (
            run.run_group == run_group(summary["overrides"]) and f"seed={job}" not in run.run_group
        )
        run_ids.add(run.run_id)
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        log = (run_dir / "train.log").read_text()  # the member's messages, and only its
        assert f"[seed {job}] checkpoints: every" in log
        assert all(f"[seed {other}]" not in log for other in range(5) if other != job)
    assert len(run_ids) == 5
    report = subprocess.run(
        [console_script("rl-report"), str(sweep)],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "1 groups, 0 failed runs" in report.stdout
    assert "| 5 (0,1,2,3,4) | 0 |" in (sweep / "report" / "report.md").read_text()


def test_ensembles_train_in_parallel_worker_processes(tmp_path: Path) -> None:
    """``hydra.launcher.n_jobs=2``: three seeds as two ensembles (2 + 1 members), trained at
    once in two spawned worker processes, each job with a single run's files."""
    sweep = tmp_path / "sweep"
    proc = rl_train(
        tmp_path,
        "-m",
        "seed=0,1,2",
        "total_env_steps=1500",
        "eval.every_env_steps=500",
        "logger=csv",
        "progress_bar=false",
        "hydra/launcher=ensemble",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert "Launching 3 jobs as 2 ensemble(s), 2 at a time" in proc.stdout + proc.stderr
    for job in range(3):
        summary = read_summary(sweep / str(job))
        assert summary["status"] == "completed" and summary["seed"] == job
        assert summary["env_steps"] >= 1500 and len(summary["eval_history"]) == 2
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()


def test_jobs_that_cannot_be_members_run_as_single_runs(tmp_path: Path) -> None:
    """A sweep over a setting an ensemble refuses (noisy networks: randomness in the update)
    trains the other setting's seeds as an ensemble and these jobs as single runs."""
    sweep = tmp_path / "sweep"
    proc = rl_train(
        tmp_path,
        "-m",
        "exploration=epsilon_greedy,noisy",
        "seed=0,1",
        "total_env_steps=1200",
        "eval.every_env_steps=600",
        "logger=csv",
        "progress_bar=false",
        "hydra/launcher=ensemble",
        f"hydra.sweep.dir={sweep}",
    )
    out = proc.stdout + proc.stderr
    assert "Launching 4 jobs as 2 ensemble(s)" in out
    assert "jobs #2, #3 cannot train as an ensemble" in out and "random stream" in out
    for job in range(4):
        summary = read_summary(sweep / str(job))
        assert summary["status"] == "completed" and summary["env_steps"] >= 1200
    assert "exploration=noisy" in read_summary(sweep / "3")["overrides"]


def test_a_crashed_ensemble_resumes_to_the_uninterrupted_weights(
    compose_config, tmp_path: Path
) -> None:
    """Checkpoints and exact resume cover all members: an ensemble that crashes after its
    2,000-env-step checkpoints and resumes ends bit-identical to one never stopped."""
    base = [*BASE, "checkpoint.every_env_steps=1000", "eval.every_env_steps=1000"]
    seeds = [0, 1]

    def run(name: str, extra: list[str]) -> list[dict]:
        overrides = [[*base, f"seed={s}", *extra] for s in seeds]
        return train_ensemble(
            [compose_config(o) for o in overrides],
            run_dirs=[tmp_path / name / str(s) for s in seeds],
            overrides=overrides,
        )

    reference = run("reference", [])
    crashed = run("run", ["fault_injection.fail_at_env_steps=2200"])
    assert [m["status"] for m in crashed] == ["failed", "failed"]
    again = [
        [f"resume={tmp_path / 'run' / str(s)}", "fault_injection.fail_at_env_steps=null"]
        for s in seeds
    ]
    resumed = train_ensemble(
        [compose_config(o) for o in again],
        run_dirs=[tmp_path / "output" / str(s) for s in seeds],
        overrides=again,
    )
    for ref, res, seed in zip(reference, resumed, seeds, strict=True):
        assert res["status"] == "completed" and res["resumed_from"].endswith(".ckpt")
        for key in ("env_steps", "episodes", "updates", "eval_returns", "eval_history"):
            assert res[key] == ref[key], (seed, key)
        a = torch.load(
            tmp_path / "reference" / str(seed) / "checkpoints/last.ckpt", weights_only=True
        )
        b = torch.load(tmp_path / "run" / str(seed) / "checkpoints/last.ckpt", weights_only=True)
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), (seed, key)
