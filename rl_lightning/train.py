"""rl-train: compose the config, build the components, train, evaluate, write the summary.

rl-train                                  # the default DQN on CartPole-v1
rl-train env=acrobot target=polyak seed=3 # change components on the command line
rl-train -m seed=0,1,2,3,4                # a sweep over seeds (Hydra multirun)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.rl_lightning_ensemble import EnsembleLauncher
from rl_lightning.config import register_schemas
from rl_lightning.distributed import end_process_group, process_rank
from rl_lightning.module import TrainingDiverged
from rl_lightning.resume import CheckpointError
from rl_lightning.run import CHECKPOINT_NAME, Run, RunRecord, build_run
from rl_lightning.signals import TrainingInterrupted
from rl_lightning.validation import ConfigError

__all__ = ["CHECKPOINT_NAME", "CONFIG_DIR", "main", "train"]

log = logging.getLogger("rl_lightning")

CONFIG_DIR = str(resources.files("rl_lightning.conf"))

register_schemas()
# hydra/launcher=ensemble: Hydra finds launchers by scanning the hydra_plugins namespace, which
# an editable install's import hook hides from it, so the launcher is registered by hand
Plugins.instance().register(EnsembleLauncher)


def train(
    cfg: DictConfig,
    *,
    run_dir: Path,
    overrides: list[str],
    on_built: Callable[[Run], None] | None = None,
) -> dict[str, Any]:
    """Train one agent; always writes ``run_dir/summary.json``; returns the summary.

    With ``resume`` set (see ``resume.find_resume_point``) the run continues from a checkpoint,
    in that checkpoint's run dir, with the config stored in it. SIGTERM / SIGINT stop it after
    the current training step with a checkpoint (``TrainingInterrupted``); a non-finite loss or
    Q-value stops it without one (``TrainingDiverged``). ``RunRecord`` turns either, and any
    other failure, into the status in summary.json and re-raises it. ``on_built(run)`` sees
    every component before training starts (benchmarks and tests read them from there).
    """
    with RunRecord(cfg, run_dir=run_dir, overrides=overrides) as record:
        cfg, context, point = record.start(cfg, overrides)  # validate, resume, signals
        run = build_run(cfg, context, point)  # env, network, module, data, callbacks, trainer
        record.watch(run)
        if on_built is not None:
            on_built(run)
        run.fit()
        record.finish()  # last.ckpt, final greedy evaluation, status "completed"
    return record.summary


def ddp_rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command Lightning's subprocess launcher starts DDP rank ``local_rank`` with: this
    job's overrides as one single run in this job's output dir. (Lightning's own repeats
    ``sys.argv``, so under ``-m`` every rank would re-run the whole sweep: Lightning #11300,
    Hydra #2070.) Rank k > 0 writes no ``.hydra/`` and logs to ``train_ddp_process_<k>.log``."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "rl_lightning.train", *hydra_cfg.overrides.task]
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, hydra_cfg.runtime.cwd


def _use_ddp_rank_command() -> None:
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = ddp_rank_command  # type: ignore[assignment]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point ``rl-train``; returns the final greedy return (for sweepers)."""
    _use_ddp_rank_command()
    try:
        return _main(cfg)
    finally:
        end_process_group()  # a DDP job: the sweep's next job starts its own ranks


def _main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    try:
        summary = train(
            cfg,
            run_dir=Path(hydra_cfg.runtime.output_dir),
            overrides=list(hydra_cfg.overrides.task),
        )
    except (ConfigError, CheckpointError) as exc:  # a clear message, no traceback, exit status 2
        print(f"[rl-train] {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:  # also ends a sweep: the user or the cluster asked
        print(f"[rl-train] interrupted: {exc} -> resume with resume=<run dir>", file=sys.stderr)
        sys.exit(exc.exit_code)
    except TrainingDiverged as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one diverged job must not end a sweep
            log.error("[rl-train] job %s diverged: %s", hydra_cfg.job.num, exc)
            return None
        print(f"[rl-train] diverged: {exc}; see summary.json", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # one failed job must not end a sweep: its summary.json says "failed" with the error,
        # the other jobs go on, and rl-report lists it
        log.error(
            "[rl-train] job %s failed: %s: %s -> %s/summary.json; the sweep goes on",
            hydra_cfg.job.num,
            type(exc).__name__,
            exc,
            hydra_cfg.runtime.output_dir,
        )
        return None
    if process_rank() != 0:  # rank 0 reports (and wrote summary.json)
        return None
    print(
        f"[rl-train] {summary['status']}: eval_return_mean={summary['eval_return_mean']:.1f} "
        f"± {summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes, "
        f"{summary['env_steps']} env steps in {summary['wall_s']:.1f} s -> "
        f"{summary.get('run_dir', hydra_cfg.runtime.output_dir)}/summary.json"
    )
    return summary["eval_return_mean"]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
