"""rl-eval: load a checkpoint, play N greedy episodes, print and write mean/std return as JSON.

rl-eval outputs/2026-11-25/12-00-00                 # a run dir (uses checkpoints/last.ckpt)
rl-eval path/to/last.ckpt --episodes 20 --seed 7 --output eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rl_lightning.builders import load_q_network, resolve_checkpoint
from rl_lightning.envs import make_env_from_config
from rl_lightning.greedy import evaluate_greedy

__all__ = ["load_q_network", "main", "resolve_checkpoint"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="rl-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="checkpoint file or run directory")
    parser.add_argument("--episodes", type=int, default=10, help="greedy episodes to play")
    parser.add_argument(
        "--seed", type=int, default=None, help="env seed (default: the run's evaluation seed)"
    )
    parser.add_argument(
        "--epsilon", type=float, default=0.0, help="epsilon of an epsilon-greedy evaluation"
    )
    parser.add_argument(
        "--num-envs",
        type=int,
        default=None,
        help="parallel eval envs (default: episodes, at most 32)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write (default: eval.json beside the checkpoint's run dir)",
    )
    args = parser.parse_args(argv)

    ckpt = resolve_checkpoint(args.checkpoint)
    q_network, config = load_q_network(ckpt)
    seed = (
        args.seed
        if args.seed is not None
        else int(config["seed"]) + int(config["eval"]["seed_offset"])
    )
    num_envs = args.num_envs or min(args.episodes, 32)
    env = make_env_from_config(config["env"], num_envs)
    returns = evaluate_greedy(
        q_network, env, episodes=args.episodes, seed=seed, epsilon=args.epsilon
    )
    env.close()
    result = {
        "checkpoint": str(ckpt),
        "env_id": config["env"]["id"],
        "episodes": int(returns.size),
        "seed": seed,
        "epsilon": args.epsilon,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "returns": returns.tolist(),
    }
    out = Path(args.output) if args.output else ckpt.parent.parent / "eval.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "returns"}))
    return result


def cli() -> None:
    """Console-script entry point: ``main`` returns a value for Python callers; a console script
    must not (``sys.exit(value)`` would print it and exit with status 1)."""
    main()


if __name__ == "__main__":
    main()
