"""One W&B run per ensemble member, all active in one process.

Lightning's ``WandbLogger`` drives W&B's one global run; several active runs in one process
need ``wandb.init(reinit="create_new")`` (W&B >= 0.19.10), whose runs are used through their own
objects -- which W&B's Lightning integration does not support ("multiple runs per process" in
W&B's docs). ``MemberWandbLogger`` is the small Lightning ``Logger`` the callbacks and the module
log through, over such a run: the same project, group (the overrides without the seed, as
``loggers.run_group``), job type, tags, config and run dir as a single run's, offline by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pytorch_lightning.loggers.logger import Logger

from rl_lightning.loggers import wandb_run_names, wandb_unavailable_reason


class MemberWandbLogger(Logger):
    """A W&B run of its own (``reinit="create_new"``) under ``run_dir/wandb``."""

    def __init__(self, cfg: Any, *, run_dir: Path, config: dict, overrides: list[str]) -> None:
        super().__init__()
        import wandb

        mode = str(cfg.mode)
        if mode == "online":
            settings = wandb.setup().settings
            if wandb_unavailable_reason(str(settings.base_url), settings_api_key=settings.api_key):
                mode = "offline"  # W&B must never hold training up (loggers.online_wandb_logger)
        self.run = wandb.init(
            reinit="create_new",
            dir=str(run_dir),
            **wandb_run_names(cfg, overrides),
            config=config,
            mode=cast(Any, mode),  # offline | online | disabled (logger.mode, checked)
        )

    @property
    def name(self) -> str:
        return str(self.run.project)

    @property
    def version(self) -> str:
        return str(self.run.id)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def finalize(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "success" else 1)
