"""Scaling the actors on this machine: CartPole env-steps/s and final return against the number
of env lanes, the vector-env backend and the number of DDP ranks.

    python scripts/benchmark_scale.py                        # the default run's 50,000 env steps
    python scripts/benchmark_scale.py --steps 5000 --lanes 1,4  # a smoke run

Each row is one ``rl-train`` run of the default configuration (seed 0) in a fresh process with
one torch thread per process, one after another: ``env.num_envs`` = 1 / 4 / 16 / 64 lanes
through CartPole's own numpy vector env (``env.vectorization_mode=null``, the default), gymnasium's
``sync`` vector env (one Python env per lane, stepped in turn) and ``async`` (one worker
process per lane); then ``trainer=ddp_cpu`` with 2 ranks (gloo; each rank the default 4 lanes,
half the budget) next to 1 rank. (The default run is the native row with 4 lanes.) The budget and the replay ratio stay the default's (50,000 env steps,
one update per 2 env steps), so every row makes the same number of updates and the rows differ
only in how the env steps are collected. env-steps/s is over ``trainer.fit`` (start-up and the
final evaluation left out); ``collect`` / ``learn`` are the shares of fit spent acting and
stepping envs vs updating (``summary.json``'s ``fit_split_s``, rank 0's). Writes
``benchmark_scale.json`` / ``.md`` and, with matplotlib, ``benchmark_scale.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fresh_process import REPO, publish, rl_train_command, worker_env

MODES = {"native": "null", "sync": "sync", "async": "async"}


def rl_train(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One ``rl-train`` run in a fresh process; its summary.json."""
    command = [rl_train_command(), *overrides]
    command += ["logger=none", "progress_bar=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        command, env=worker_env(), cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{overrides} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def row(label: str, summary: dict[str, Any], **keys: Any) -> dict[str, Any]:
    fit = float(summary["timings_s"]["fit"])
    split = summary["fit_split_s"]
    return {
        "setting": label,
        **keys,
        "env_steps": summary["env_steps"],
        "updates": summary["updates"],
        "fit_s": fit,
        "env_steps_per_s": summary["env_steps"] / fit,
        "updates_per_s": summary["updates"] / fit,
        "collect_share": split["collect"] / fit,
        "learn_share": split["learn"] / fit,
        "eval_return_mean": summary["eval_return_mean"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | env-steps/s | updates/s | acting share | update share | final return |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['env_steps_per_s']:,.0f} | {r['updates_per_s']:,.0f} | "
            f"{r['collect_share']:.0%} | {r['learn_share']:.0%} | {r['eval_return_mean']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for mode in MODES:
        points = [(r["lanes"], r["env_steps_per_s"]) for r in rows if r.get("mode") == mode]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{mode} vector env, 1 process")
    ddp = [(r["ranks"], r["env_steps_per_s"]) for r in rows if "ranks" in r]
    for ranks, rate in ddp:  # at the lanes of all ranks together (4 per rank)
        ax.scatter([4 * ranks], [rate], marker="s", color="black", zorder=3)
        label = f" DDP, {ranks} rank{'s' if ranks > 1 else ''} x 4 lanes"
        ax.annotate(label, (4 * ranks, rate), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("env lanes, all processes together")
    ax.set_ylabel("env-steps/s over trainer.fit")
    ax.set_title("CartPole-v1, default DQN run (50k env steps, 1 update / 2 env steps)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    parser.add_argument("--lanes", default="1,4,16,64", help="env.num_envs values")
    parser.add_argument("--modes", default=",".join(MODES), help="vector env backends")
    parser.add_argument("--ranks", default="1,2", help="DDP ranks (trainer=ddp_cpu)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where results go")
    args = parser.parse_args()
    base = [
        f"total_env_steps={args.steps}",
        "eval.every_env_steps=0",
        "checkpoint.every_env_steps=0",
    ]
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="benchmark_scale_"))
    try:
        for mode in filter(None, args.modes.split(",")):
            for lanes in map(int, filter(None, args.lanes.split(","))):
                overrides = [
                    *base,
                    f"env.num_envs={lanes}",
                    f"env.vectorization_mode={MODES[mode]}",
                ]
                summary = rl_train(overrides, scratch / f"{mode}_{lanes}")
                rows.append(row(f"{mode}, {lanes} lanes", summary, mode=mode, lanes=lanes))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        for ranks in map(int, filter(None, args.ranks.split(","))):
            overrides = [*base, "trainer=ddp_cpu", f"trainer.devices={ranks}"]
            summary = rl_train(overrides, scratch / f"ddp_{ranks}")
            label = f"DDP (gloo), {ranks} rank{'s' if ranks > 1 else ''} x 4 lanes"
            rows.append(row(label, summary, ranks=ranks))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"steps": args.steps, "cpu_count": os.cpu_count(), "rows": rows}
    publish(args.out, "benchmark_scale", report, markdown(rows))
    plot(rows, args.out / "benchmark_scale.png")


if __name__ == "__main__":
    main()
