"""Metric loggers from the ``logger/`` config group; every curve's x-axis is the env step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

KINDS = ("wandb", "csv", "tensorboard", "none")


def run_group(overrides: list[str]) -> str:
    """The W&B group of a run: its command-line overrides without the seed, sorted.

    Seeds of one setting fall into one group; the default setting is called ``default``.
    """
    kept = sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed")
    return ",".join(kept) or "default"


def build_loggers(cfg: Any, *, run_dir: Path, config: dict, overrides: list[str]) -> list[Logger]:
    """Loggers for ``cfg`` (the ``logger`` node), writing under ``run_dir``."""
    kind = cfg.kind
    if kind == "none":
        return []
    if kind == "csv":
        return [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if kind == "tensorboard":
        return [
            TensorBoardLogger(
                save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False
            )
        ]
    if kind == "wandb":
        if cfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={cfg.mode!r} is not one of offline, online, disabled")
        return [
            WandbLogger(
                save_dir=str(run_dir),
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group or run_group(overrides),
                job_type=cfg.job_type,
                tags=list(cfg.tags),
                config=config,
                offline=cfg.mode == "offline",
                mode=None if cfg.mode == "offline" else cfg.mode,
                log_model=False,
            )
        ]
    raise ValueError(f"logger.kind={kind!r} is not one of {KINDS}")


def finish_wandb() -> None:
    """Close the current W&B run (Lightning does not; multirun jobs would share one run)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()
