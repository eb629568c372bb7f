"""rl-lightning against Stable-Baselines3's DQN, side by side, on this machine.

    python scripts/benchmark.py                     # the full benchmark (about 4 minutes on 2 cores)
    python scripts/benchmark.py --steps 3000 --learning-starts 500 --seeds 0 --curve 1 2 \\
        --micro-capacity 20000 --bare-updates 200   # a smoke run (what CI checks)

Needs the ``bench`` extra (``pip install -e ".[bench]"``: stable-baselines3, matplotlib); without
stable-baselines3 only rl-lightning runs, without matplotlib no PNG is drawn.

Every measurement runs in its own fresh process, one after another (never two at once), with
one torch thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``). Both frameworks get the
reference settings of ``experiment=bench_cartpole`` (CleanRL's DQN defaults, see
docs/perf.md): CartPole-v1, 100k env steps, Adam 2.5e-4, gamma 0.99, buffer 10k, batch 128, one
update every 10 env steps, a target copy every 500 env steps, learning starts at 10k, epsilon
1 -> 0.05 over the first 50% of the steps, MLP 120-84 ReLU, MSE loss, gradient norm clipped at
10. SB3 hard-codes the Huber loss in ``DQN.train``; the benchmark swaps in the MSE loss there
(``--sb3-loss huber`` keeps SB3's own), so that both minimise the same loss.

What it measures:

* 1 env and 16 envs (``experiment=bench_cartpole_16envs``; SB3: ``train_freq=10`` vector steps
  with ``gradient_steps=16``, the same updates per transition), over ``--seeds``: env-steps/s,
  updates/s, wall time (setup and training, without the final evaluation), peak RSS of the
  process, the final greedy return (10 episodes, the same evaluation envs and code for both),
  and the ratio of env-steps/s to SB3's.
* A scaling curve: env-steps/s against ``env.num_envs`` (``--curve``), one seed.
* Time per gradient update: a bare PyTorch loop doing the same update (target forward, MSE,
  backward, clipping, fused Adam, target copy every 50) on one fixed batch, against
  rl-lightning's training loop: ``learner`` = time inside ``QLearningModule.learn`` per update,
  ``in loop`` = (``trainer.fit`` wall time - acting - sampling) / updates, i.e. everything
  Lightning, the callbacks and the logging add.
* Replay micro-benchmarks: a batch of 128 with n_step=3 from a full 1,000,000-transition
  buffer of CartPole data in 16 lanes, and adding one vector step of 16 transitions.

It writes ``benchmark.json`` (every number), ``benchmark.md`` (the tables) and ``benchmark.png``
to ``--out`` and prints the tables. It is not a timed test: the numbers depend on the machine
and on what else runs on it (the JSON records the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_RESULT "
EVAL_EPISODES = 10
EVAL_SEED_OFFSET = 1_000_000
PRESETS = {1: "bench_cartpole", 16: "bench_cartpole_16envs"}


# -- workers: each runs in its own process ------------------------------------------------------


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from rl_lightning.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


#: --ablation: each hot-loop optimisation switched off alone (config overrides or, for the two
#: without a config key, a switch in the worker); a dict gives the switches per num_envs (the
#: 1-env preset interleaves, the 16-env one runs SB3's bursts: each row flips to the other)
ABLATIONS: dict[str, list[str] | dict[int, list[str]]] = {
    "all optimisations (the preset)": [],
    "acting through torch (no NumpyMLP)": ["@numpy_acting"],
    "updates through Lightning's hooks (no direct path)": ["@direct_updates"],
    "default Adam kernel (optim.fused=null)": ["optim.fused=null"],
    "one update per training_step (updates_per_batch=1)": ["updates_per_batch=1"],
    "periodic evaluation every 5k env steps": ["eval.every_env_steps=5000"],
    "the other schedule (1 env: bursts of 1000 updates; 16 envs: interleaved)": {
        1: ["interleaved=false"],
        16: ["interleaved=true", "updates_per_batch=1000"],
    },
}


def rl_overrides(spec: dict[str, Any]) -> list[str]:
    """The rl-lightning command line of one run."""
    num_envs = int(spec["num_envs"])
    preset = PRESETS.get(num_envs, "bench_cartpole_16envs")
    mode = "sync" if num_envs == 1 else "null"  # one env: the plain env is the fastest
    return [
        f"experiment={preset}",
        f"env.num_envs={num_envs}",
        f"env.vectorization_mode={mode}",
        f"seed={spec['seed']}",
        f"total_env_steps={spec['steps']}",
        f"buffer.learning_starts_env_steps={spec['learning_starts']}",
        f"exploration.schedule.duration_env_steps={spec['steps'] // 2}",
        "logger=none",
        "progress_bar=false",
        "eval.every_env_steps=0",
        f"eval.final_episodes={EVAL_EPISODES}",
        f"eval.seed_offset={EVAL_SEED_OFFSET}",
        *spec.get("extra_overrides", []),
    ]


def worker_rl(spec: dict[str, Any]) -> dict[str, Any]:
    """One rl-lightning run through ``rl_lightning.train.train`` (the code ``rl-train`` runs)."""
    _threads()
    from rl_lightning.run import Run
    from rl_lightning.train import train

    captured: dict[str, Any] = {}
    ablate = set(spec.get("ablate", []))

    def on_built(run: Run) -> None:
        captured["run"] = run
        if "numpy_acting" in ablate:  # act through torch
            run.datamodule.collector.policy.act_through_torch()  # type: ignore[attr-defined]
        if "direct_updates" in ablate:  # Lightning's manual_backward / LightningOptimizer
            run.module.allow_direct_updates = False

    overrides = rl_overrides(spec)
    cfg = _compose(overrides)
    summary = train(cfg, run_dir=Path(spec["run_dir"]), overrides=overrides, on_built=on_built)
    run: Run = captured["run"]
    module, data = run.module, run.datamodule
    updates = int(summary["updates"])
    wall = float(summary["train_wall_s"])
    collect_s = float(data.collector.collect_time_s)
    sample_s = float(data.dataset.sample_time_s)
    learn_s = float(module.learn_time_s)
    fit_s = float(run.timings["fit"])
    return {
        "framework": "rl-lightning",
        "overrides": overrides,
        "env_steps": int(summary["env_steps"]),
        "updates": updates,
        "wall_s": wall,
        "env_steps_per_s": summary["env_steps"] / wall,
        "updates_per_s": updates / wall,
        "peak_rss_mb": _peak_rss_mb(),
        "eval_return_mean": summary["eval_return_mean"],
        "eval_returns": summary["eval_returns"],
        "fit_s": fit_s,
        "collect_s": collect_s,
        "sample_s": sample_s,
        "learn_s": learn_s,
        "learner_us_per_update": 1e6 * learn_s / max(updates, 1),
        "in_loop_us_per_update": 1e6 * (fit_s - collect_s - sample_s) / max(updates, 1),
        "sample_us_per_update": 1e6 * sample_s / max(updates, 1),
        "direct_update_path": bool(module._direct),
    }


def worker_sb3(spec: dict[str, Any]) -> dict[str, Any]:
    """One Stable-Baselines3 DQN run with the same settings."""
    _threads()
    import types

    import stable_baselines3
    import stable_baselines3.dqn.dqn as sb3_dqn
    import torch
    from omegaconf import OmegaConf
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    from rl_lightning.envs import make_env_from_config
    from rl_lightning.greedy import evaluate_greedy

    if spec["sb3_loss"] == "mse":  # DQN.train calls F.smooth_l1_loss; give it CleanRL's MSE
        sb3_dqn.F = types.SimpleNamespace(smooth_l1_loss=torch.nn.functional.mse_loss)  # type: ignore[assignment]
    num_envs, steps = int(spec["num_envs"]), int(spec["steps"])
    start = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=int(spec["seed"]))
    model = DQN(
        "MlpPolicy",
        env,
        learning_rate=2.5e-4,
        buffer_size=10_000,
        learning_starts=int(spec["learning_starts"]),
        batch_size=128,
        gamma=0.99,
        train_freq=10,  # vector steps: 10 * num_envs transitions ...
        gradient_steps=num_envs,  # ... then num_envs updates: one per 10 transitions
        target_update_interval=500,  # transitions (SB3 divides by num_envs)
        exploration_fraction=0.5,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.05,
        max_grad_norm=10.0,
        policy_kwargs={"net_arch": [120, 84], "activation_fn": torch.nn.ReLU},
        seed=int(spec["seed"]),
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    env.close()
    # the final greedy evaluation: rl-lightning's code and envs, on SB3's Q-network
    cfg = _compose(rl_overrides(spec))
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    assert isinstance(env_cfg, dict)
    eval_env = make_env_from_config(env_cfg, EVAL_EPISODES)  # type: ignore[arg-type]
    returns = evaluate_greedy(
        model.q_net,
        eval_env,
        episodes=EVAL_EPISODES,
        seed=int(spec["seed"]) + EVAL_SEED_OFFSET,
    )
    eval_env.close()
    env_steps = int(model.num_timesteps)
    updates = int(model._n_updates)
    return {
        "framework": "sb3",
        "version": stable_baselines3.__version__,
        "loss": spec["sb3_loss"],
        "env_steps": env_steps,
        "updates": updates,
        "wall_s": wall,
        "env_steps_per_s": env_steps / wall,
        "updates_per_s": updates / wall,
        "peak_rss_mb": _peak_rss_mb(),
        "eval_return_mean": float(returns.mean()),
        "eval_returns": returns.tolist(),
    }


def worker_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """A bare PyTorch loop doing rl-lightning's update on one fixed CartPole batch."""
    _threads()
    import gymnasium as gym
    import numpy as np
    import torch

    from rl_lightning.data import ReplayBuffer, UniformSampler, VectorCollector

    torch.manual_seed(0)
    env = gym.make_vec("CartPole-v1", 1, vectorization_mode="sync")
    buffer = ReplayBuffer(capacity=10_000, num_envs=1, obs_shape=(4,))
    rng = np.random.default_rng(0)
    VectorCollector(env, lambda obs, t: rng.integers(2, size=len(obs)), buffer, seed=0).collect(
        10_000
    )
    b = UniformSampler(seed=0).sample(buffer, 128, 1).map(torch.from_numpy)
    obs, actions, rewards, dones, next_obs = (
        b.obs,
        b.actions,
        b.rewards[:, 0],
        b.terminated,
        b.next_obs,
    )
    out: dict[str, Any] = {"framework": "bare-pytorch", "updates": int(spec["updates"])}
    for name, fused in (("fused_adam", True), ("default_adam", None)):
        out[f"{name}_us_per_update"] = _bare_loop(
            obs, actions, rewards, dones, next_obs, fused=fused, updates=int(spec["updates"])
        )
    out["us_per_update"] = out["fused_adam_us_per_update"]
    return out


def _bare_loop(
    obs, actions, rewards, dones, next_obs, *, fused: bool | None, updates: int
) -> float:
    """µs per update of the plain loop: target forward, MSE, backward, clip, Adam, target copy."""
    import copy

    import torch
    from torch import nn

    net = nn.Sequential(nn.Linear(4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
    net.append(nn.Linear(84, 2))
    target = copy.deepcopy(net).requires_grad_(False)
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=2.5e-4, fused=fused)

    def update(i: int) -> None:
        with torch.no_grad():
            y = rewards + 0.99 * (1.0 - dones) * target(next_obs).max(dim=1).values
        q = net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = nn.functional.mse_loss(q, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        if i % 50 == 0:
            target.load_state_dict(net.state_dict())

    for i in range(200):  # warm-up
        update(i)
    start = time.perf_counter()
    for i in range(updates):
        update(i)
    return 1e6 * (time.perf_counter() - start) / updates


def worker_micro(spec: dict[str, Any]) -> dict[str, Any]:
    """Replay sampling and adding on a full buffer of real CartPole data in 16 lanes."""
    import gymnasium as gym
    import numpy as np

    from rl_lightning.data import ReplayBuffer, UniformSampler, VectorCollector

    lanes, capacity = 16, int(spec["capacity"])
    env = gym.make_vec("CartPole-v1", lanes)
    buffer = ReplayBuffer(capacity=capacity, num_envs=lanes, obs_shape=(4,))
    sampler = UniformSampler(seed=0)
    rng = np.random.default_rng(0)
    collector = VectorCollector(env, lambda obs, t: rng.integers(2, size=len(obs)), buffer, seed=0)
    collector.collect(buffer.rows + 10)  # full, wrapped
    row: dict[str, Any] = {
        "obs": rng.standard_normal((lanes, 4)).astype(np.float32),
        "actions": rng.integers(2, size=lanes),
        "rewards": np.ones(lanes, dtype=np.float32),
        "terminated": np.zeros(lanes, dtype=bool),
        "truncated": np.zeros(lanes, dtype=bool),
        "reset_step": np.zeros(lanes, dtype=bool),
    }

    def per_call_us(fn: Any, calls: int, blocks: int = 5) -> float:
        fn()
        times = []
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append(1e6 * (time.perf_counter() - start) / calls)
        return statistics.median(times)

    calls = int(spec["calls"])
    return {
        "framework": "rl-lightning",
        "capacity": buffer.capacity,
        "lanes": lanes,
        "sample_128_n3_us": per_call_us(lambda: sampler.sample(buffer, 128, 3), calls),
        "sample_128_n1_us": per_call_us(lambda: sampler.sample(buffer, 128, 1), calls),
        "add_16_us": per_call_us(lambda: buffer.add(**row), 10 * calls),
    }


def worker_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The bare loop, then the replay micro-benchmarks (one process: one start-up less)."""
    return {"bare": worker_bare(spec["bare"]), "micro": worker_micro(spec["micro"])}


WORKERS = {
    "rl": worker_rl,
    "sb3": worker_sb3,
    "bare": worker_bare,
    "micro": worker_micro,
    "reference": worker_reference,
}


# -- the driver ---------------------------------------------------------------------------------


def run_worker(spec: dict[str, Any], log: Any) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONWARNINGS="ignore",
        TQDM_DISABLE="1",
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark worker {spec} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result["spec"] = spec
    label = {k: spec[k] for k in ("kind", "num_envs", "seed") if k in spec}
    print(f"  {label}: done in {time.perf_counter() - start:.1f} s", file=log, flush=True)
    return result


def mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("env_steps_per_s", "updates_per_s", "wall_s", "peak_rss_mb", "eval_return_mean")
    agg: dict[str, Any] = {"seeds": [r["spec"]["seed"] for r in runs]}
    for key in keys:
        agg[key], agg[key + "_sd"] = mean_sd([float(r[key]) for r in runs])
    agg["eval_returns_by_seed"] = [r["eval_return_mean"] for r in runs]
    for key in ("learner_us_per_update", "in_loop_us_per_update", "sample_us_per_update"):
        if all(key in r for r in runs):
            agg[key], agg[key + "_sd"] = mean_sd([float(r[key]) for r in runs])
    return agg


def comparison_table(title: str, rl: dict[str, Any], sb3: dict[str, Any] | None) -> str:
    lines = [
        f"**{title}** (mean ± sd over seeds {', '.join(map(str, rl['seeds']))})",
        "",
        "| framework | env-steps/s | updates/s | wall s | peak RSS MB | final greedy return "
        "(per seed) | env-steps/s vs SB3 |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, agg in (("rl-lightning", rl), ("SB3 DQN", sb3)):
        if agg is None:
            continue
        ratio = (
            f"{agg['env_steps_per_s'] / sb3['env_steps_per_s']:.2f}x" if sb3 is not None else "n/a"
        )
        per_seed = ", ".join(f"{x:.0f}" for x in agg["eval_returns_by_seed"])
        lines.append(
            f"| {name} | {agg['env_steps_per_s']:,.0f} ± {agg['env_steps_per_s_sd']:,.0f} "
            f"| {agg['updates_per_s']:,.0f} | {agg['wall_s']:.1f} | {agg['peak_rss_mb']:.0f} "
            f"| {agg['eval_return_mean']:.1f} ({per_seed}) | {ratio} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    out = [
        f"Benchmark of {report['started']} on {report['machine']} "
        f"(load average before / after: {report['load_before']} / {report['load_after']}); "
        f"{report['settings']['steps']:,} env steps, learning starts at "
        f"{report['settings']['learning_starts']:,}; SB3 {report.get('sb3_version', 'n/a')} "
        f"with the {report['settings']['sb3_loss']} loss.",
        "",
    ]
    for n in report["settings"]["envs"]:
        rl = report["results"].get(f"rl_{n}")
        if rl is not None:
            out += [
                comparison_table(
                    f"{n} env{'s' if n > 1 else ''}", rl, report["results"].get(f"sb3_{n}")
                ),
                "",
            ]
    curve = report["results"].get("curve")
    if curve:
        out += [
            "**Scaling: env-steps/s against env.num_envs** (seed 0; one update per 10 env steps)",
            "",
            "| num_envs | rl-lightning | SB3 DQN | ratio |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for point in curve:
            sb3 = point.get("sb3")
            ratio = f"{point['rl'] / sb3:.2f}x" if sb3 else "n/a"
            sb3_txt = f"{sb3:,.0f}" if sb3 else "n/a"
            out.append(f"| {point['num_envs']} | {point['rl']:,.0f} | {sb3_txt} | {ratio} |")
        out.append("")
    ablation = report["results"].get("ablation")
    if ablation:
        envs = report["settings"]["envs"]
        head = " | ".join(
            f"{n} env{'s' if n > 1 else ''}: env-steps/s (vs all) | return" for n in envs
        )
        out += [
            "**Ablation: each optimisation switched off alone** (first seed, mean speed of "
            f"{report['settings'].get('ablation_repeats', 1)} run(s) each; the return is that "
            "seed's final greedy return, a noisy figure)",
            "",
            f"| change | {head} |",
            "| --- |" + " ---: | ---: |" * len(envs),
        ]
        base = ablation[0]
        for row in ablation:
            cells = []
            for n in envs:
                v = row[f"env_steps_per_s_{n}"]
                cells.append(f"{v:,.0f} ({v / base[f'env_steps_per_s_{n}']:.2f}x)")
                cells.append(f"{row[f'eval_return_{n}']:.0f}")
            out.append(f"| {row['change']} | " + " | ".join(cells) + " |")
        out.append("")
    bare = report["results"].get("bare")
    if bare is not None:
        out += [
            "**Time per gradient update** (µs; 4-120-84-2 MLP, batch 128, one thread)",
            "",
            "| measurement | µs / update | vs bare loop |",
            "| --- | ---: | ---: |",
            f"| bare PyTorch loop, fused Adam (same update, same batch) | "
            f"{bare['us_per_update']:.0f} | 1.00x |",
            f"| bare PyTorch loop, default Adam | {bare['default_adam_us_per_update']:.0f} | "
            f"{bare['default_adam_us_per_update'] / bare['us_per_update']:.2f}x |",
        ]
        for n in report["settings"]["envs"]:
            rl = report["results"].get(f"rl_{n}")
            if rl is None or "learner_us_per_update" not in rl:
                continue
            for key, what in (
                ("learner_us_per_update", "inside `QLearningModule.learn`"),
                ("in_loop_us_per_update", "whole training loop minus acting and sampling"),
            ):
                out.append(
                    f"| rl-lightning, {n} env{'s' if n > 1 else ''}: {what} | {rl[key]:.0f} | "
                    f"{rl[key] / bare['us_per_update']:.2f}x |"
                )
            out.append(
                f"| rl-lightning, {n} env{'s' if n > 1 else ''}: sampling one minibatch "
                f"(+ tensors) | {rl['sample_us_per_update']:.0f} | |"
            )
        out.append("")
    micro = report["results"].get("micro")
    if micro is not None:
        out += [
            f"**Replay buffer** ({micro['capacity']:,} CartPole transitions in {micro['lanes']} "
            "lanes, full)",
            "",
            "| operation | µs |",
            "| --- | ---: |",
            f"| sample 128 transitions, n_step=3 | {micro['sample_128_n3_us']:.1f} |",
            f"| sample 128 transitions, n_step=1 | {micro['sample_128_n1_us']:.1f} |",
            f"| add one vector step (16 transitions) | {micro['add_16_us']:.2f} |",
            "",
        ]
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    res = report["results"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    labels, rl_vals, sb3_vals = [], [], []
    for n in report["settings"]["envs"]:
        if f"rl_{n}" in res:
            labels.append(f"{n} env{'s' if n > 1 else ''}")
            rl_vals.append(res[f"rl_{n}"]["env_steps_per_s"])
            sb3_vals.append(res[f"sb3_{n}"]["env_steps_per_s"] if f"sb3_{n}" in res else 0.0)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], rl_vals, width=0.4, label="rl-lightning")
    ax.bar([x + 0.2 for x in xs], sb3_vals, width=0.4, label="SB3 DQN")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("env steps / s")
    ax.set_title("reference settings (CleanRL DQN defaults)")
    ax.legend()
    ax = axes[1]
    curve = res.get("curve") or []
    if curve:
        ns = [p["num_envs"] for p in curve]
        ax.plot(ns, [p["rl"] for p in curve], "o-", label="rl-lightning")
        if all(p.get("sb3") for p in curve):
            ax.plot(ns, [p["sb3"] for p in curve], "s-", label="SB3 DQN")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.legend()
    ax.set_xlabel("env.num_envs")
    ax.set_ylabel("env steps / s")
    ax.set_title("scaling (one update per 10 env steps)")
    ax = axes[2]
    bare = res.get("bare")
    if bare is not None:
        names, vals = (
            ["bare\nfused", "bare\ndefault"],
            [
                bare["us_per_update"],
                bare["default_adam_us_per_update"],
            ],
        )
        for n in report["settings"]["envs"]:
            rl = res.get(f"rl_{n}")
            if rl is not None and "in_loop_us_per_update" in rl:
                names += [f"learner\n{n} env", f"in loop\n{n} env"]
                vals += [rl["learner_us_per_update"], rl["in_loop_us_per_update"]]
        ax.bar(range(len(vals)), vals, color="tab:gray")
        ax.set_xticks(range(len(vals)), names, fontsize=8)
        ax.set_ylabel("µs per gradient update")
        ax.set_title("per-update cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--seeds-16", type=int, nargs="+", default=None, help="seeds of the 16-env runs (--seeds)"
    )
    parser.add_argument(
        "--envs", type=int, nargs="*", default=[1, 16], help="num_envs of the side-by-side tables"
    )
    parser.add_argument("--curve", type=int, nargs="*", default=[1, 4, 16, 64])
    parser.add_argument("--bare-updates", type=int, default=3_000)
    parser.add_argument("--micro-capacity", type=int, default=1_000_000)
    parser.add_argument("--micro-calls", type=int, default=2_000)
    parser.add_argument("--sb3-loss", choices=["mse", "huber"], default="mse")
    parser.add_argument("--no-sb3", action="store_true", help="rl-lightning only")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also run each hot-loop optimisation switched off (1 and 16 envs, first seed)",
    )
    parser.add_argument(
        "--ablation-repeats",
        type=int,
        default=1,
        help="runs per ablation row (the same work each time; the table shows the mean speed)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default outputs/benchmark/<time>")
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        result = WORKERS[spec["kind"]](spec)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    try:
        import stable_baselines3  # noqa: F401

        sb3_version: str | None = stable_baselines3.__version__
    except ImportError:
        sb3_version = None
    with_sb3 = sb3_version is not None and not args.no_sb3
    if sb3_version is None and not args.no_sb3:
        print("stable-baselines3 is not installed (pip install -e '.[bench]'): rl-lightning only")
    started = datetime.now()
    out = args.out or REPO / "outputs" / "benchmark" / started.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    common = {
        "steps": args.steps,
        "learning_starts": args.learning_starts,
        "sb3_loss": args.sb3_loss,
    }
    log = sys.stdout
    results: dict[str, Any] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]

    def pair(num_envs: int, seed: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        run_dir = out / "runs" / f"rl_{num_envs}env_seed{seed}"
        rl = run_worker(
            {**common, "kind": "rl", "num_envs": num_envs, "seed": seed, "run_dir": str(run_dir)},
            log,
        )
        sb3 = (
            run_worker({**common, "kind": "sb3", "num_envs": num_envs, "seed": seed}, log)
            if with_sb3
            else None
        )
        return rl, sb3

    raw: dict[str, list[dict[str, Any]]] = {}
    seeds_of = {n: (args.seeds_16 or args.seeds) if n == 16 else args.seeds for n in args.envs}
    for num_envs, seeds in seeds_of.items():
        print(f"{num_envs} env(s), seeds {seeds}:", file=log, flush=True)
        rl_runs, sb3_runs = [], []
        for seed in seeds:  # alternate the frameworks: slow drifts of the machine hit both
            rl, sb3 = pair(num_envs, seed)
            rl_runs.append(rl)
            if sb3 is not None:
                sb3_runs.append(sb3)
        raw[f"rl_{num_envs}"], raw[f"sb3_{num_envs}"] = rl_runs, sb3_runs
        results[f"rl_{num_envs}"] = aggregate(rl_runs)
        if sb3_runs:
            results[f"sb3_{num_envs}"] = aggregate(sb3_runs)

    if args.curve:
        print(f"scaling curve over num_envs {args.curve} (seed 0):", file=log, flush=True)
        curve = []
        for num_envs in args.curve:
            if num_envs in seeds_of and seeds_of[num_envs][0] == 0:  # reuse the tables' run
                rl = raw[f"rl_{num_envs}"][0]
                sb3 = raw[f"sb3_{num_envs}"][0] if raw.get(f"sb3_{num_envs}") else None
            else:
                rl, sb3 = pair(num_envs, 0)
                raw.setdefault("curve_runs", []).extend(x for x in (rl, sb3) if x is not None)
            curve.append(
                {
                    "num_envs": num_envs,
                    "rl": rl["env_steps_per_s"],
                    "sb3": sb3["env_steps_per_s"] if sb3 else None,
                }
            )
        results["curve"] = curve

    if args.ablation:
        print("ablation (first seed):", file=log, flush=True)
        ablation: list[dict[str, Any]] = []
        for name, per_envs in ABLATIONS.items():
            row: dict[str, Any] = {"change": name}
            for num_envs in args.envs:
                switches = (
                    per_envs.get(num_envs, per_envs[max(per_envs)])
                    if isinstance(per_envs, dict)
                    else per_envs
                )
                spec = {
                    **common,
                    "kind": "rl",
                    "num_envs": num_envs,
                    "seed": args.seeds[0],
                    "run_dir": str(out / "runs" / f"ablation_{len(ablation)}_{num_envs}env"),
                    "ablate": [x[1:] for x in switches if x.startswith("@")],
                    "extra_overrides": [x for x in switches if not x.startswith("@")],
                }
                runs = [run_worker(spec, log) for _ in range(max(1, args.ablation_repeats))]
                speeds = [run["env_steps_per_s"] for run in runs]
                row[f"env_steps_per_s_{num_envs}"] = statistics.fmean(speeds)
                row[f"env_steps_per_s_{num_envs}_runs"] = speeds
                row[f"eval_return_{num_envs}"] = runs[0]["eval_return_mean"]
                row[f"learner_us_{num_envs}"] = statistics.fmean(
                    run["learner_us_per_update"] for run in runs
                )
            ablation.append(row)
        results["ablation"] = ablation

    print("bare PyTorch update loop, replay micro-benchmarks:", file=log, flush=True)
    reference = run_worker(
        {
            "kind": "reference",
            "bare": {"updates": args.bare_updates},
            "micro": {"capacity": args.micro_capacity, "calls": args.micro_calls},
        },
        log,
    )
    results["bare"], results["micro"] = reference["bare"], reference["micro"]

    report = {
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}",
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "sb3_version": sb3_version,
        "settings": {
            **common,
            "seeds": args.seeds,
            "envs": args.envs,
            "curve": args.curve,
            "ablation": args.ablation,
            "ablation_repeats": args.ablation_repeats,
        },
        "results": results,
        "runs": raw,
    }
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "benchmark.md").write_text(table + "\n")
    drawn = plot(report, out / "benchmark.png")
    print()
    print(table)
    print(f"-> {out}/benchmark.json, benchmark.md" + (", benchmark.png" if drawn else " (no PNG)"))


if __name__ == "__main__":
    main()
