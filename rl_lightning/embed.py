"""rl-embed: a t-SNE map of a trained Q-network's penultimate layer, coloured by V(s).

    rl-embed checkpoint=outputs/2026-11-25/12-00-00          # a run dir or a .ckpt file
    rl-embed checkpoint=PATH episodes=20 perplexity=50 output=tsne.png wandb=true

Plays ``episodes`` greedy episodes with the checkpoint's online network, records every visited
state's penultimate-layer activations phi(s) (``q_network.features``) and its value
V(s) = max_a Q(s, a), embeds phi(s) in 2-D with t-SNE (scikit-learn) and draws one point per
state, coloured by V(s). States that the network treats alike lie close together: a good
representation puts states of similar value, or of similar situations, next to each other.

Arguments are ``key=value`` overrides of ``EmbedConfig`` (as for rl-train); the PNG goes to
``<run_dir>/embedding.png`` by default, with the points in ``embedding.npz`` beside it.
Training can draw the same picture at its end: ``rl-train embedding.enabled=true``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_lightning.embedding import (
    INSTALL_HINT,
    Embedding,
    collect_greedy_activations,
    embed_q_network,
    plot_embedding,
    save_embedding,
    tsne,
)

__all__ = [
    "INSTALL_HINT",
    "EmbedConfig",
    "Embedding",
    "collect_greedy_activations",
    "embed_q_network",
    "main",
    "plot_embedding",
    "save_embedding",
    "tsne",
]


@dataclass
class EmbedConfig:
    checkpoint: str = MISSING  # a run dir (uses checkpoints/last.ckpt) or a .ckpt file
    episodes: int = 10  # greedy episodes whose states are embedded
    max_points: int = 2_000  # states kept for t-SNE (a uniform subsample of all visited)
    perplexity: float = 30.0  # t-SNE perplexity: the effective number of neighbours
    seed: Optional[int] = None  # env and t-SNE seed (null: the run's evaluation seed)
    output: Optional[str] = None  # PNG path (null: <run_dir>/embedding.png)
    wandb: bool = False  # also log the picture to W&B (project and mode of the run's logger)


def parse_args(argv: list[str]) -> EmbedConfig:
    """``key=value`` overrides merged into the ``EmbedConfig`` schema (types are checked)."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ValueError(f"arguments are key=value overrides, got {bad}")
    schema = OmegaConf.structured(EmbedConfig)
    merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(argv))
    if OmegaConf.is_missing(merged, "checkpoint"):
        raise ValueError("checkpoint=PATH is required (a run dir or a .ckpt file)")
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def run(cfg: EmbedConfig) -> Path:
    """Embed the checkpoint of ``cfg``; returns the PNG path."""
    from rl_lightning.builders import load_q_network, resolve_checkpoint
    from rl_lightning.envs import make_env_from_config

    if cfg.episodes < 1 or cfg.max_points < 10 or cfg.perplexity <= 0:
        raise ValueError("episodes must be >= 1, max_points >= 10 and perplexity > 0")
    ckpt = resolve_checkpoint(cfg.checkpoint)
    run_dir = ckpt.parent.parent
    q_network, config = load_q_network(ckpt)
    seed = cfg.seed
    if seed is None:
        seed = int(config["seed"]) + int(config["eval"]["seed_offset"])
    env = make_env_from_config(config["env"], min(cfg.episodes, 16))
    try:
        embedding = embed_q_network(
            q_network,
            env,
            episodes=cfg.episodes,
            seed=seed,
            max_points=cfg.max_points,
            perplexity=cfg.perplexity,
        )
    finally:
        env.close()
    output = Path(cfg.output) if cfg.output else run_dir / "embedding.png"
    title = f"{config['env']['id']}: penultimate layer of {config['arch']['_target_'].rsplit('.', 1)[-1]}"
    save_embedding(embedding, output, title=title)
    if cfg.wandb:
        log_to_wandb(output, config=config, run_dir=run_dir)
    return output


def log_to_wandb(png: Path, *, config: dict[str, Any], run_dir: Path) -> None:
    """One W&B run (job type ``embedding``) in the project, group and mode of the run's logger."""
    import wandb

    from rl_lightning.loggers import run_group
    from rl_lightning.summary import SUMMARY_FILE, read_summary

    logger = config.get("logger", {})
    mode = logger.get("mode", "offline") if logger.get("kind") == "wandb" else "offline"
    overrides: list[str] = []
    if (run_dir / SUMMARY_FILE).is_file():  # the W&B group is the run's overrides minus seed
        overrides = list(read_summary(run_dir).get("overrides", []))
    run = wandb.init(
        project=logger.get("project", "rl-lightning"),
        entity=logger.get("entity"),
        group=logger.get("group") or run_group(overrides),
        job_type="embedding",
        mode=mode,  # type: ignore[arg-type]
        dir=str(run_dir),
    )
    try:
        run.log({"embedding/tsne": wandb.Image(str(png))})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print(OmegaConf.to_yaml(OmegaConf.structured(EmbedConfig)))
        raise SystemExit(0 if argv else 2)
    try:
        cfg = parse_args(argv)
        path = run(cfg)
    except (ValueError, FileNotFoundError, ImportError, OmegaConfBaseException) as exc:
        print(f"rl-embed: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(f"[rl-embed] t-SNE of the penultimate layer, coloured by V(s) -> {path}")
    return path


def cli() -> None:
    """Console-script entry point: ``main`` returns a value for Python callers; a console script
    must not (``sys.exit(value)`` would print it and exit with status 1)."""
    main()


if __name__ == "__main__":
    main()
