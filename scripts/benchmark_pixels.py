"""Pixels on this machine: replay memory, sampling, collection and the Pong training loop
against Stable-Baselines3's DQN.

    python scripts/benchmark_pixels.py                  # the full benchmark (about 6 minutes)
    python scripts/benchmark_pixels.py --fill 2000 --collect-steps 200 --train-steps 600 \\
        --learning-starts 400                           # a smoke run

Every measurement runs in its own fresh process, one after another, with one torch thread.

* ``memory``: ``--fill`` transitions of real Pong frames (``env=atari``, nature protocol, 8
  lanes, random actions) in a replay buffer of that capacity with ``env.frame_stack=4``: bytes
  per stored transition (what the buffer's arrays hold: one 84x84 frame, the action, reward and
  flags) and the projection to 1,000,000 transitions; then the median time to sample a batch of
  32 stacked transitions (uniform, rebuilt stacks ``(32, 4, 84, 84)`` for ``obs`` and
  ``next_obs``) against one forward pass of the Nature CNN on that batch.
* ``bare``: a bare PyTorch DQN update of the Nature CNN on one fixed batch (target forward,
  online forward and backward, Adam) in the contiguous and the ``channels_last`` memory format:
  the floor under the training loop.
* ``collect``: ``--collect-steps`` vector steps of 8 Pong games with random actions through
  ale-py's ``AtariVectorEnv`` and gymnasium's sync and async vector envs (the same protocol).
* ``train``: the full Pong training loop at ``experiment=atari_pong``'s settings (one env, one
  update of batch 32 per 4 env steps, target copy every 1,000 env steps, Adam 1e-4, MSE) for
  ``--train-steps`` env steps after ``--learning-starts`` of random play, replay capacity
  ``--capacity`` (SB3's memory-optimised buffer needs 2 frames-stacks' worth per transition, so
  the preset's 1,000,000 does not fit here); env-steps/s counted from the first update to the
  end of training, for rl-lightning and for SB3's DQN on the same settings
  (``make_atari_env`` + ``VecFrameStack(4)``: the same Nature wrappers).

Writes ``benchmark_pixels.json`` and ``benchmark_pixels.md`` to ``--out`` and prints the tables.
Not a timed test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fresh_process import measure, publish, serve


def _median_ms(fn: Any, calls: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def pong(lanes: int, **options: Any) -> Any:
    """``lanes`` Pong games under the nature protocol (``make_vector_env`` options)."""
    from rl_lightning.envs import make_vector_env

    return make_vector_env(
        id="ALE/Pong-v5", suite="atari", game="Pong", protocol="nature", num_envs=lanes, **options
    )


def nature_cnn(**options: Any) -> Any:
    """``arch=nature_cnn``'s encoder (conf/arch/encoder/nature_cnn.yaml) and a 6-action linear
    head, for frame stacks ``(4, 84, 84)``; ``options`` override the preset's keys."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rl_lightning.train import CONFIG_DIR

    preset = OmegaConf.load(Path(CONFIG_DIR) / "arch" / "encoder" / "nature_cnn.yaml")
    encoder = instantiate(preset, obs_shape=(4, 84, 84), **options)
    return torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 6))


def worker_memory(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from rl_lightning.data import ReplayBuffer, UniformSampler, VectorCollector
    from rl_lightning.envs import find_stack

    lanes, fill = 8, int(spec["fill"])
    env = pong(lanes, frame_stack=4)
    stack = find_stack(env)
    assert stack is not None
    buffer = ReplayBuffer(
        capacity=fill, num_envs=lanes, obs_shape=(84, 84), obs_dtype=np.uint8, stack=stack.layout
    )
    rng = np.random.default_rng(0)
    collector = VectorCollector(env, lambda obs, t: rng.integers(6, size=lanes), buffer, seed=0)
    start = time.perf_counter()
    collector.collect(fill // lanes)
    fill_s = time.perf_counter() - start
    env.close()
    sampler = UniformSampler(seed=1)
    batch = sampler.sample(buffer, 32, 1)
    sample_ms = _median_ms(lambda: sampler.sample(buffer, 32, 1), 200)
    net = nature_cnn()
    obs = torch.from_numpy(batch.obs)

    def forward() -> None:
        with torch.no_grad():
            net(obs.float())

    forward_ms = _median_ms(forward, 50)
    per = buffer.bytes_per_transition
    stacked = 2 * 4 * 84 * 84 + 8 + 4 + 3  # obs and next_obs stacks stored per transition
    return {
        "transitions": len(buffer),
        "fill_s": fill_s,
        "buffer_bytes": buffer.nbytes,
        "bytes_per_transition": per,
        "gb_per_million": per * 1e6 / 1e9,
        "stored_stacks_gb_per_million": stacked * 1e6 / 1e9,
        "batch_obs_shape": list(batch.obs.shape),
        "sample_ms": sample_ms,
        "nature_cnn_forward_ms": forward_ms,
    }


def worker_collect(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    lanes, steps = 8, int(spec["steps"])
    env = pong(lanes, vectorization_mode=spec["mode"])
    rng = np.random.default_rng(0)
    actions = rng.integers(6, size=(steps, lanes))
    env.reset(seed=0)
    start = time.perf_counter()
    for t in range(steps):
        env.step(actions[t])
    wall = time.perf_counter() - start
    env.close()
    return {
        "mode": spec["mode"],
        "env_steps": steps * lanes,
        "env_steps_per_s": steps * lanes / wall,
    }


def worker_rl(spec: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from rl_lightning.run import Run
    from rl_lightning.train import CONFIG_DIR, train

    clock: dict[str, float] = {}

    class Clock(pl.Callback):
        """From the end of the first training step (warm-up and first 1,000 env steps done) to
        the end of training, in the collector's env steps."""

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if "start" not in clock:
                clock["start"] = time.perf_counter()
                clock["start_steps"] = trainer.datamodule.collector.env_steps

        def on_train_end(self, trainer: Any, module: Any) -> None:
            clock["end"] = time.perf_counter()
            clock["end_steps"] = trainer.datamodule.collector.env_steps

    def on_built(run: Run) -> None:
        run.trainer.callbacks.append(Clock())  # type: ignore[attr-defined]

    starts, steps = int(spec["learning_starts"]), int(spec["steps"])
    overrides = [
        "experiment=atari_pong",
        f"total_env_steps={starts + steps}",
        f"buffer.learning_starts_env_steps={starts}",
        f"buffer.capacity={spec['capacity']}",
        "eval.every_env_steps=0",
        "eval.final_episodes=1",
        "checkpoint.every_env_steps=0",
        "checkpoint.save_buffer=false",
        "logger=none",
        "progress_bar=false",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = train(cfg, run_dir=Path(spec["run_dir"]), overrides=overrides, on_built=on_built)
    steps_done = clock["end_steps"] - clock["start_steps"]
    wall = clock["end"] - clock["start"]
    return {
        "framework": "rl-lightning",
        "env_steps_after_start": steps_done,
        "updates": summary["updates"],
        "env_steps_per_s": steps_done / wall,
    }


def worker_sb3(spec: dict[str, Any]) -> dict[str, Any]:
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    starts, steps = int(spec["learning_starts"]), int(spec["steps"])
    clock: dict[str, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if "start" not in clock and self.num_timesteps > starts:
                clock["start"], clock["start_steps"] = time.perf_counter(), self.num_timesteps
            return True

    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    model = DQN(
        "CnnPolicy",
        env,
        learning_rate=1e-4,
        buffer_size=int(spec["capacity"]),
        learning_starts=starts,
        batch_size=32,
        gamma=0.99,
        train_freq=4,
        gradient_steps=1,
        target_update_interval=1000,
        exploration_fraction=0.1,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.01,
        max_grad_norm=1e9,  # CleanRL's dqn_atari.py does not clip
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
        seed=0,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=starts + steps, callback=Clock())
    wall = time.perf_counter() - clock["start"]
    env.close()
    steps_done = model.num_timesteps - clock["start_steps"]
    return {
        "framework": "sb3",
        "version": stable_baselines3.__version__,
        "torch": torch.__version__,
        "env_steps_after_start": steps_done,
        "updates": int(model._n_updates),
        "env_steps_per_s": steps_done / wall,
    }


def worker_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """A bare PyTorch DQN update of the Nature CNN on one fixed batch of 32 stacks (target
    forward, online forward and backward, Adam), per memory format: the floor of the loop."""
    import torch

    frames = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
    result: dict[str, float] = {}
    for memory_format in ("contiguous", "channels_last"):
        nets = []
        for _ in range(2):
            torch.manual_seed(0)
            nets.append(nature_cnn(memory_format=memory_format))
        online, target = nets
        optimizer = torch.optim.Adam(online.parameters(), lr=1e-4)

        def update(online=online, target=target, optimizer=optimizer) -> None:
            obs = frames.float()
            with torch.no_grad():
                bootstrap = target(obs).max(dim=1).values
            loss = torch.nn.functional.mse_loss(online(obs)[:, 0], bootstrap)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        result[f"{memory_format}_ms"] = _median_ms(update, int(spec["updates"]))
    return result


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bare": worker_bare,
    "memory": worker_memory,
    "collect": worker_collect,
    "rl": worker_rl,
    "sb3": worker_sb3,
}


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    mem = report.get("memory")
    if mem is not None:
        lines += [
            "| replay memory (Pong, frame stack 4) | value |",
            "|---|---:|",
            f"| transitions stored | {mem['transitions']:,} |",
            f"| bytes per transition | {mem['bytes_per_transition']:,.0f} |",
            f"| projected GB per 1M transitions | {mem['gb_per_million']:.2f} |",
            f"| (stored stacks, obs + next_obs) | {mem['stored_stacks_gb_per_million']:.1f} |",
            f"| sample 32 stacked transitions (ms, median) | {mem['sample_ms']:.3f} |",
            f"| Nature CNN forward on that batch (ms, median) | {mem['nature_cnn_forward_ms']:.2f} |",
            "",
        ]
    bare = report.get("bare")
    if bare is not None:
        lines += [
            "| bare Nature-CNN DQN update, batch 32 (median) | ms |",
            "|---|---:|",
            f"| contiguous (NCHW) | {bare['contiguous_ms']:.1f} |",
            f"| channels_last (NHWC) | {bare['channels_last_ms']:.1f} |",
            "",
        ]
    lines += ["| collection, 8 Pong games, random actions | env-steps/s |", "|---|---:|"]
    lines += [f"| {c['mode']} | {c['env_steps_per_s']:,.0f} |" for c in report["collect"]]
    lines += [
        "",
        "| Pong training loop after learning starts | env-steps/s (median) | |",
        "|---|---:|---:|",
    ]
    speeds: dict[str, list[float]] = {}
    for row in report["train"]:
        speeds.setdefault(row["framework"], []).append(row["env_steps_per_s"])
    for framework, values in speeds.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        lines.append(f"| {framework} (runs: {runs}) | {statistics.median(values):,.0f} | |")
    if len(speeds) == 2:
        ratio = statistics.median(speeds["rl-lightning"]) / statistics.median(speeds["sb3"])
        lines.append(f"| ratio of the medians, rl-lightning / SB3 | {ratio:.2f}x | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fill", type=int, default=100_000)
    parser.add_argument("--collect-steps", type=int, default=2_000)
    parser.add_argument("--train-steps", type=int, default=8_000)
    parser.add_argument("--learning-starts", type=int, default=5_000)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--no-sb3", action="store_true", help="skip Stable-Baselines3")
    parser.add_argument(
        "--repeats", type=int, default=3, help="training-loop runs of each framework, alternating"
    )
    parser.add_argument(
        "--parts",
        default="memory,bare,collect,train",
        help="comma-separated: memory,bare,collect,train",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark_pixels"))
    if serve(WORKERS):
        return
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {"load_before": os.getloadavg(), "collect": [], "train": []}
    if "memory" in parts:
        report["memory"] = measure(__file__, {"kind": "memory", "fill": args.fill})
    if "bare" in parts:
        report["bare"] = measure(__file__, {"kind": "bare", "updates": 60})
    if "collect" in parts:
        report["collect"] = [
            measure(__file__, {"kind": "collect", "mode": mode, "steps": args.collect_steps})
            for mode in ("ale", "sync", "async")
        ]
    train = {
        "steps": args.train_steps,
        "learning_starts": args.learning_starts,
        "capacity": args.capacity,
    }
    if "train" in parts:  # alternating, so that a slow minute of the machine hits both
        for _ in range(args.repeats):
            report["train"].append(
                measure(__file__, {"kind": "rl", "run_dir": str(args.out / "rl_run"), **train})
            )
            if not args.no_sb3:
                report["train"].append(measure(__file__, {"kind": "sb3", **train}))
    report["load_after"] = os.getloadavg()
    publish(args.out, "benchmark_pixels", report, markdown(report))


if __name__ == "__main__":
    main()
