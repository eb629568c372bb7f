"""The recurrent preset against the MLP preset on this machine: env-steps/s and where the time goes.

    python scripts/benchmark_recurrent.py                  # 30,000 env steps each (a few minutes)
    python scripts/benchmark_recurrent.py --steps 3000     # a smoke run

Both run ``experiment=ablation_pomdp`` on ``env=cartpole_pomdp`` (the tuned CartPole settings:
bursts of 256 env steps then 128 updates), seed 0, one after another, each in a fresh process
with one torch thread: ``ablation/pomdp=stack1`` (the MLP on the last observation, batches of 64
transitions) and ``ablation/pomdp=gru`` (``arch=gru``: batches of 8 sequences of 10 burn-in + 20
learnt steps + the n-step tail, 160 learnt transitions per update). The time of ``trainer.fit``
splits into acting and env stepping (``collect``), drawing batches (``sample``: for the GRU,
sequences of burn-in + learnt steps + the n-step tail), the updates (``learn``: forward, loss, backward,
optimiser) and the rest (Lightning's loop, callbacks, logging). Writes
``benchmark_recurrent.json`` and ``.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fresh_process import measure, publish, serve

SETTINGS = {"mlp": "stack1", "gru": "gru"}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from rl_lightning.run import Run
    from rl_lightning.train import CONFIG_DIR, train

    captured: dict[str, Run] = {}

    def keep(run: Run) -> None:
        captured["run"] = run

    overrides = [
        "experiment=ablation_pomdp",
        f"ablation/pomdp={SETTINGS[spec['preset']]}",
        f"total_env_steps={spec['steps']}",
        "eval.every_env_steps=0",
        "eval.final_episodes=2",
        "checkpoint.every_env_steps=0",
        "logger=none",
        "progress_bar=false",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = train(
        cfg,
        run_dir=Path(spec["run_dir"]),
        overrides=overrides,
        on_built=keep,
    )
    run = captured["run"]
    fit = float(run.timings["fit"])
    parts = {
        "collect": float(run.datamodule.collector.collect_time_s),
        "sample": float(run.datamodule.dataset.sample_time_s),
        "learn": float(run.module.learn_time_s),
    }
    parts["other"] = fit - sum(parts.values())
    return {
        "preset": spec["preset"],
        "env_steps": summary["env_steps"],
        "updates": summary["updates"],
        "fit_s": fit,
        "env_steps_per_s": summary["env_steps"] / fit,
        "parts_s": parts,
        "learn_ms_per_update": 1e3 * parts["learn"] / max(summary["updates"], 1),
        "sample_ms_per_update": 1e3 * parts["sample"] / max(summary["updates"], 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| preset | env-steps/s | updates | learn ms/update | sample ms/update | collect | sample | learn | other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = {k: 100 * v / r["fit_s"] for k, v in r["parts_s"].items()}
        lines.append(
            f"| {r['preset']} | {r['env_steps_per_s']:,.0f} | {r['updates']:,} | "
            f"{r['learn_ms_per_update']:.2f} | {r['sample_ms_per_update']:.3f} | "
            f"{share['collect']:.0f}% | {share['sample']:.0f}% | {share['learn']:.0f}% | "
            f"{share['other']:.0f}% |"
        )
    ratio = rows[0]["env_steps_per_s"] / rows[1]["env_steps_per_s"]
    lines.append(f"\nMLP / GRU env-steps/s: {ratio:.1f}x")
    return "\n".join(lines)


def main() -> None:
    if serve({"run": worker}):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=Path("benchmark_recurrent"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = [
        measure(
            __file__,
            {
                "kind": "run",
                "preset": preset,
                "steps": args.steps,
                "run_dir": str(args.out / preset),
            },
        )
        for preset in SETTINGS
    ]
    report = {"rows": rows, "load_before": load_before, "load_after": os.getloadavg()}
    publish(args.out, "benchmark_recurrent", report, markdown(rows))


if __name__ == "__main__":
    main()
