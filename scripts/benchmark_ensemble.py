"""One TD update of N members on this machine: the ensemble's update against a Python loop
over N single modules, with vmap or with hand-batched layers.

    python scripts/benchmark_ensemble.py                  # N = 1, 2, 5, 10, 20
    python scripts/benchmark_ensemble.py --members 1,10 --updates 50

The default run's learner (CartPole, 4-128-128-2 MLP, Double Q, Huber, Adam, gradient clipping
at 10, batch 64) on random minibatches, in one fresh process per N with one torch thread:

* ``loop``: N ``QLearningModule`` losses, ``backward``, ``clip_grad_norm_`` and Adam steps, one
  member after another (what N single runs cost in one process);
* ``vmap``: ``EnsembleLearner(design="vmap").update`` (``torch.func.vmap`` over
  ``functional_call`` of the template member's TDLoss, per-member clipping, one Adam over the
  stacked parameters);
* ``batched``: ``EnsembleLearner(design="batched").update``, the same with hand-batched layers
  (``ensemble/batched.py``: ``baddbmm`` over the stacked weights), the default where supported.

Reports the median time of one update of all N members and per member.

``--part sweep`` (acceptance 2 of the ensembles issue): whole seed sweeps of the default run
(50,000 env steps each, ``logger=none``), wall time from launch to the last summary, one after
another: ``rl-train -m 'seed=range(10)' hydra/launcher=joblib hydra.launcher.n_jobs=2`` (10 single
runs, 2 worker processes) against ``rl-train -m 'seed=range(N)' hydra/launcher=ensemble`` for each
N (one process; ``torch_threads`` as given) and, for the ``--parallel`` sizes, the same with
``hydra.launcher.n_jobs=2`` (two ensembles of N/2 in two worker processes), with the peak
resident memory of the largest process and the final greedy returns of every seed. Writes ``benchmark_ensemble[_sweep].json`` / ``.md``
to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from fresh_process import REPO, measure, publish, rl_train_command, serve, worker_env

B = 64


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rl_lightning import builders
    from rl_lightning.data.buffer import TransitionBatch
    from rl_lightning.ensemble import EnsembleLearner
    from rl_lightning.train import CONFIG_DIR

    n = int(spec["members"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config")
    members = []
    for seed in range(n):
        pl.seed_everything(seed, verbose=False)
        env = builders.make_env(cfg)
        exploration = instantiate(cfg.exploration)
        q_network = builders.build_q_network(cfg, env, exploration)
        members.append(builders.build_module(cfg, q_network, exploration))
    generator = torch.Generator().manual_seed(0)

    def batch() -> TransitionBatch:
        obs = torch.randn(B, 4, generator=generator)
        return TransitionBatch(
            obs,
            torch.randint(0, 2, (B,), generator=generator),
            torch.ones(B, 1),
            torch.ones(B, dtype=torch.int64),
            torch.zeros(B),
            obs + 0.05 * torch.randn(B, 4, generator=generator),
            torch.randint(0, 2, (B,), generator=generator),
            1000,
        )

    batches = [batch() for _ in range(n)]
    singles = [copy.deepcopy(m) for m in members]
    optimizers = [instantiate(cfg.optim)(m.q_network.parameters()) for m in singles]

    def loop() -> None:
        for module, optimizer, b in zip(singles, optimizers, batches, strict=True):
            loss, _, _ = module.loss(b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.q_network.parameters(), 10.0)
            optimizer.step()

    vmap_learner = EnsembleLearner(copy.deepcopy(members), design="vmap")
    batched_learner = EnsembleLearner(members, design="batched")

    def vmapped() -> None:
        vmap_learner.update(batches)

    def batched() -> None:
        batched_learner.update(batches)

    result: dict[str, Any] = {"members": n}
    for name, fn in (("loop", loop), ("vmap", vmapped), ("batched", batched)):
        for _ in range(20):
            fn()
        times = []
        for _ in range(int(spec["updates"])):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times) * 1e6
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| members N | loop: µs per update of all (per member) | vmap | batched | batched vs loop |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        n = r["members"]
        cells = [f"{r[k]:,.0f} ({r[k] / n:,.0f})" for k in ("loop", "vmap", "batched")]
        lines.append(f"| {n} | {' | '.join(cells)} | {r['loop'] / r['batched']:.2f}x |")
    return "\n".join(lines)


def sweep(launcher: list[str], seeds: int, steps: int, threads: int, out: Path) -> dict[str, Any]:
    """One seed sweep through ``rl-train -m``: wall time, peak memory, every seed's return."""
    env = worker_env(threads)
    command = [
        rl_train_command(),
        "-m",
        f"seed=range({seeds})",
        f"total_env_steps={steps}",
        f"torch_threads={threads}",
        "logger=none",
        "progress_bar=false",
        *launcher,
        f"hydra.sweep.dir={out}",
    ]
    start = time.perf_counter()
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        # this child's usage (and its waited-for children's): ru_maxrss is the largest resident
        # set among them, in KiB on Linux
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed:\n{log.read_text()[-3000:]}")
    summaries = [json.loads((out / str(k) / "summary.json").read_text()) for k in range(seeds)]
    env_steps = sum(s["env_steps"] for s in summaries)
    return {
        "wall_s": wall,
        "env_steps": env_steps,
        "env_steps_per_s": env_steps / wall,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "returns": [s["eval_return_mean"] for s in summaries],
    }


def sweep_markdown(rows: list[dict[str, Any]]) -> str:
    base = next(r for r in rows if r["setting"].startswith("10 single"))["env_steps_per_s"]
    lines = [
        "| setting | wall s | env-steps/s | vs 10 single runs (joblib, 2 workers) | peak RSS of the largest process, MB | final returns |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        returns = ", ".join(f"{x:.0f}" for x in r["returns"])
        lines.append(
            f"| {r['setting']} | {r['wall_s']:.0f} | {r['env_steps_per_s']:,.0f} | "
            f"{r['env_steps_per_s'] / base:.2f}x | {r['max_rss_mb']:,.0f} | {returns} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("update", "sweep"), default="update")
    parser.add_argument("--members", default="1,2,5,10,20", help="ensemble sizes N")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per design")
    parser.add_argument("--steps", type=int, default=50_000, help="sweep: env steps per run")
    parser.add_argument("--threads", type=int, default=1, help="sweep: torch threads")
    parser.add_argument(
        "--parallel",
        default="10,20",
        help="sweep: ensemble sizes also run as 2 ensembles at once (hydra.launcher.n_jobs=2)",
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="where results go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in args.members.split(",")]
    if args.part == "update":
        rows = [
            measure(__file__, {"kind": "update", "members": n, "updates": args.updates})
            for n in sizes
        ]
        publish(args.out, "benchmark_ensemble", {"rows": rows}, markdown(rows))
        return
    scratch = Path(tempfile.mkdtemp(prefix="benchmark_ensemble_"))
    try:
        joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        rows = [
            {
                "setting": "10 single runs, joblib 2 workers",
                **sweep(joblib, 10, args.steps, 1, scratch / "joblib"),
            }
        ]
        print(rows[-1], flush=True)
        for n in sizes:
            result = sweep(
                ["hydra/launcher=ensemble"], n, args.steps, args.threads, scratch / str(n)
            )
            rows.append({"setting": f"ensemble of {n}, {args.threads} thread(s)", **result})
            print(rows[-1], flush=True)
        for n in [int(n) for n in args.parallel.split(",") if n]:
            launcher = ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=2"]
            result = sweep(launcher, n, args.steps, args.threads, scratch / f"{n}-parallel")
            rows.append(
                {
                    "setting": f"{n} seeds as 2 ensembles at once (n_jobs=2), "
                    f"{args.threads} thread(s) each",
                    **result,
                }
            )
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"steps": args.steps, "threads": args.threads, "rows": rows}
    publish(args.out, "benchmark_ensemble_sweep", report, sweep_markdown(rows))


if __name__ == "__main__":
    if not serve({"update": worker}):
        main()
