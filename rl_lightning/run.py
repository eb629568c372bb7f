"""One training run: its components (``Run``), and its record (``RunRecord``: status, failures,
``summary.json``).

``rl_lightning.train.train`` reads as the table of contents of a run; this module holds the two
things it needs besides the builders: ``build_run`` (every component, in the order that fixes
the random streams) and ``RunRecord``, the one place where failures become a status and every
run, finished or not, writes ``<run_dir>/summary.json`` (the run-summary contract).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import gymnasium as gym
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rl_lightning.builders import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_q_network,
    build_trainer,
    check_accelerator,
    episode_horizon,
    make_env,
    process_rank,
)
from rl_lightning.callbacks import GreedyEvaluationCallback
from rl_lightning.checkpointing import (
    CHECKPOINT_DIR,
    LAST_NAME,
    RunCheckpointCallback,
    buffer_checkpoint_choice,
)
from rl_lightning.context import RunContext
from rl_lightning.data import ReplayDataModule
from rl_lightning.loggers import build_loggers, finish_wandb
from rl_lightning.module import QLearningModule, TrainingDiverged
from rl_lightning.resume import (
    ResumePoint,
    checkpoints_newest_first,
    continue_csv_log,
    find_resume_point,
    resumed_config,
)
from rl_lightning.signals import StopSignals, TrainingInterrupted, slurm_requeue
from rl_lightning.summary import write_summary
from rl_lightning.train_stats import ValueWatchdog
from rl_lightning.validation import check_output_dir, on_policy_replay_warning, validate_config

log = logging.getLogger("rl_lightning")

#: ``last.ckpt``, relative to the run dir (as summary.json names it)
CHECKPOINT_NAME = f"{CHECKPOINT_DIR}/{LAST_NAME}"


def quiet_lightning() -> None:
    """Keep Lightning's warnings, drop its start-up chatter (accelerator and logger tips)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    # training_step(dataloader_iter) is deliberate (see QLearningModule.training_step)
    warnings.filterwarnings("ignore", message=r"Found `dataloader_iter` argument")
    warnings.filterwarnings("ignore", message=r"You are using the `dataloader_iter` step flavor")


@dataclass
class Run:
    """Everything one run is made of, built and ready for ``trainer.fit``."""

    cfg: DictConfig
    context: RunContext
    env: gym.vector.VectorEnv
    q_network: torch.nn.Module
    module: QLearningModule
    datamodule: ReplayDataModule
    trainer: pl.Trainer
    point: ResumePoint | None = None
    #: wall time of each phase of this session, in seconds (``summary.json``: ``timings_s``)
    timings: dict[str, float] = field(default_factory=dict)

    def callback(self, kind: type) -> Any:
        """The run's callback of this type (``None`` if it has none)."""
        return next((c for c in self.trainer.callbacks if isinstance(c, kind)), None)  # type: ignore[attr-defined]

    def fit(self) -> None:
        """``trainer.fit``: from the resume point's checkpoint, if any."""
        ckpt = str(self.point.checkpoint) if self.point is not None else None
        with self.timed("fit"):
            self.trainer.fit(self.module, datamodule=self.datamodule, ckpt_path=ckpt)

    def timed(self, phase: str) -> contextlib.AbstractContextManager[None]:
        """Add the wall time of the block to ``timings[phase]``."""
        return timed(self.timings, phase)


@contextlib.contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[phase]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


def plan_checkpoints(cfg: DictConfig, context: RunContext, datamodule: ReplayDataModule) -> None:
    """Whether the run's checkpoints carry its replay buffer (``checkpoint.save_buffer``), and
    the checkpoint plan said once in the run's log."""
    datamodule.save_buffer = buffer_checkpoint_choice(
        cfg.checkpoint.save_buffer,
        online=datamodule.dataset.online,
        nbytes=datamodule.buffer.nbytes,
    )
    log.info(
        "checkpoints: every %s env steps, newest %d kept, in %s; replay buffer (%.1f MB) %s",
        cfg.checkpoint.every_env_steps or "(never: at the end and on signals only)",
        cfg.checkpoint.keep_last,
        context.run_dir / CHECKPOINT_DIR,
        datamodule.buffer.nbytes / 1e6,
        "included" if datamodule.save_buffer else "not included: a resume refills it",
    )


def build_run(cfg: DictConfig, context: RunContext, point: ResumePoint | None = None) -> Run:
    """Seed, then build the components in a fixed order (the random streams depend on it)."""
    check_accelerator(cfg)  # before anything is built: exit status 2 without a GPU
    torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
    timings: dict[str, float] = {}
    with timed(timings, "env"):
        env = make_env(cfg)
    try:
        return _build_around(cfg, context, point, env, timings)
    except BaseException:
        env.close()
        raise


def _build_around(
    cfg: DictConfig,
    context: RunContext,
    point: ResumePoint | None,
    env: gym.vector.VectorEnv,
    timings: dict[str, float],
) -> Run:
    with timed(timings, "components"):
        exploration = instantiate(cfg.exploration)
        q_network = build_q_network(cfg, env, exploration)
        module = build_module(cfg, q_network, exploration)
        n_step = module.estimator.n_step
        datamodule = build_datamodule(cfg, env, q_network, exploration, n_step=n_step)
        # a sampler that learns from the TD errors (prioritized replay) gets them after each update
        module.on_td_errors = datamodule.sampler.td_errors_hook()
        module.watchdog = build_watchdog(cfg, env, datamodule)
    plan_checkpoints(cfg, context, datamodule)
    with timed(timings, "callbacks"):
        callbacks = build_callbacks(cfg, context)
    with timed(timings, "loggers"):
        loggers = build_loggers(
            cfg.logger,
            run_dir=context.run_dir,
            config=cast(dict, OmegaConf.to_container(cfg, resolve=True)),
            overrides=list(context.overrides),
            wandb_id=point.state["wandb_id"] if point is not None else None,
            purge_step=point.state["env_steps"] if point is not None else None,
        )
        if point is not None:
            continue_csv_log(loggers, rows=point.state["csv_rows"])
    log.info("loggers ready in %.2f s", timings["loggers"])
    with timed(timings, "trainer"):
        trainer = build_trainer(cfg, callbacks=callbacks, loggers=loggers, run_dir=context.run_dir)
    return Run(cfg, context, env, q_network, module, datamodule, trainer, point, timings)


def build_watchdog(
    cfg: DictConfig, env: gym.vector.VectorEnv, datamodule: ReplayDataModule
) -> ValueWatchdog | None:
    """The value-bound watchdog: the run's gamma, ``watchdog.*``, the collector's max |r| and
    (for gamma = 1) the env's time limit; None for a resumed run from before the watchdog."""
    if cfg.get("watchdog") is None:
        return None
    horizon = episode_horizon(cfg, env)
    collector = datamodule.collector
    return ValueWatchdog(
        gamma=float(cfg.gamma),
        margin=float(cfg.watchdog.margin),
        on_value_blowup=str(cfg.watchdog.on_value_blowup),
        max_abs_reward=lambda: collector.max_abs_reward,
        horizon=int(horizon) if horizon is not None else None,
    )


class RunRecord:
    """The run's ``summary.json``, written whatever happens (``with RunRecord(...) as record:``).

    On leaving the block, the exception (if any) becomes the status -- ``interrupted`` (a
    signal), ``diverged`` (a non-finite loss or Q-value, ``reason: non-finite``, or the value
    watchdog's stop, ``reason: value-blowup``), ``failed`` (anything else, with the
    error and traceback) -- and is re-raised; the counters are read from the run; the summary
    is written (rank 0 only), W&B finished, the env closed, and a SLURM requeue asked for.
    """

    def __init__(self, cfg: DictConfig, *, run_dir: Path, overrides: list[str]) -> None:
        self.run_dir = Path(run_dir)
        check_output_dir(self.run_dir)  # creates it; ConfigError (exit status 2) if unwritable
        self.started_at = time.perf_counter()
        self.stop = StopSignals()
        self.run: Run | None = None
        self.start_s = 0.0
        self.summary: dict[str, Any] = {
            "status": "failed",
            "env_steps": 0,
            "updates": 0,
            "wall_s": 0.0,
            "env_steps_per_s": 0.0,
            "eval_return_mean": None,
            "eval_return_std": None,
            "eval_episodes": 0,
            "seed": int(cfg.seed),
            "overrides": list(overrides),
        }

    def start(
        self, cfg: DictConfig, overrides: list[str]
    ) -> tuple[DictConfig, RunContext, ResumePoint | None]:
        """Validate, find the resume point (a resumed run continues in its own run dir with its
        stored config), install the signal handlers; returns the config to run and the run's
        context."""
        start = time.perf_counter()
        validate_config(cfg)
        point = find_resume_point(cfg.resume, self.run_dir)
        wall_s_before = 0.0
        if point is not None:
            cfg = resumed_config(cfg, overrides, point)
            validate_config(cfg)
            self.run_dir, overrides = point.run_dir, list(point.state["overrides"])
            wall_s_before = float(point.state["wall_s"])
            self.summary.update(
                overrides=overrides, resumed_from=str(point.checkpoint), run_dir=str(self.run_dir)
            )
            log.warning(
                "resuming from %s at env step %d in %s",
                point.checkpoint,
                point.state["env_steps"],
                self.run_dir,
            )
        self.stop.install()
        quiet_lightning()
        context = RunContext(
            run_dir=self.run_dir,
            seed=int(cfg.seed),
            eval_seed=int(cfg.seed) + int(cfg.eval.seed_offset),
            env_id=str(cfg.env.id),
            make_env=lambda num_envs: make_env(cfg, num_envs),
            overrides=overrides,
            started_at=self.started_at,
            wall_s_before=wall_s_before,
            stop=self.stop,
        )
        self.start_s = time.perf_counter() - start  # validation and resume look-up
        return cfg, context, point

    def watch(self, run: Run) -> None:
        """Read the counters from ``run`` when the record is written."""
        self.run = run
        warning = on_policy_replay_warning(run.cfg, run.module.estimator)
        if warning is not None:
            log.warning(warning)
            self.summary["warnings"] = [warning]

    def finish(self) -> None:
        """After ``fit``: check the last updates, write ``last.ckpt``, stop if a signal came
        after the last training step, else evaluate greedily and mark the run completed."""
        run = self.run
        assert run is not None
        run.module.check_finite()  # the last updates since the last check
        checkpointer: RunCheckpointCallback = run.callback(RunCheckpointCallback)
        with run.timed("checkpoint"):
            checkpointer.save(run.trainer, self.run_dir / CHECKPOINT_NAME)
        if self.stop.signum is not None:  # arrived after the last training step
            raise TrainingInterrupted(
                self.stop.signum, self.run_dir / CHECKPOINT_NAME, self.stop.requeue
            )
        train_wall_s = time.perf_counter() - self.started_at
        evaluator: GreedyEvaluationCallback = run.callback(GreedyEvaluationCallback)
        with run.timed("final_eval"):
            returns = evaluator.evaluate_final(run.trainer, run.module)
        if returns.size == 0:  # a DDP rank other than 0: rank 0 evaluates and writes the summary
            self.summary["status"] = "completed"
            return
        self.summary.update(
            status="completed",
            eval_return_mean=float(returns.mean()),
            eval_return_std=float(returns.std()),
            eval_episodes=int(returns.size),
            eval_returns=returns.tolist(),
            eval_history=evaluator.history,
            eval_v_initial=evaluator.final_metrics.get("eval/v_initial"),
            eval_overestimation=evaluator.final_metrics.get("eval/overestimation"),
            checkpoint=CHECKPOINT_NAME,
            train_wall_s=train_wall_s,
        )

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        summary = self.summary
        if isinstance(exc, TrainingInterrupted):
            summary.update(
                status="interrupted",
                signal=signal.Signals(exc.signum).name,
                checkpoint=self._relative(exc.checkpoint),
                requeue=exc.requeue,
            )
        elif isinstance(exc, TrainingDiverged):
            newest = checkpoints_newest_first(self.run_dir)
            summary.update(
                status="diverged",
                reason=exc.reason,
                error=str(exc),
                diverged_at_update=exc.update,
                diverged_at_env_steps=exc.env_steps,
                checkpoint=self._relative(newest[0]) if newest else None,
            )
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)) and self.stop.signum is not None:
            # a second Ctrl-C: stopped at once, no checkpoint
            summary.update(status="interrupted", signal=signal.Signals(self.stop.signum).name)
            summary["error"] = f"{type(exc).__name__}: stopped before the training step ended"
        elif isinstance(exc, Exception):
            summary["error"] = f"{type(exc).__name__}: {exc}"
            summary["traceback"] = "".join(traceback.format_exception(exc))
        self._write()  # and the exception, if any, propagates

    def _write(self) -> None:
        self.stop.restore()
        summary, run = self.summary, self.run
        checkpointer = run.callback(RunCheckpointCallback) if run is not None else None
        if run is not None:
            summary["env_steps"] = int(run.datamodule.dataset.env_steps)  # all ranks'
            if run.datamodule.dataset.env_steps_by_rank:  # DDP: each rank's share
                summary["env_steps_by_rank"] = list(run.datamodule.dataset.env_steps_by_rank)
            summary["episodes"] = int(run.datamodule.collector.episodes)
            summary["updates"] = int(run.module.updates)
            watchdog = run.module.watchdog
            if watchdog is not None and watchdog.warning is not None:
                summary.setdefault("warnings", []).append(watchdog.warning)
        summary["wall_s"] = (
            checkpointer.wall_s
            if checkpointer is not None
            else time.perf_counter() - self.started_at
        )
        summary["env_steps_per_s"] = summary["env_steps"] / max(summary["wall_s"], 1e-9)
        if run is not None:
            timings = {"start": self.start_s, **run.timings}
            summary["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
            data = run.datamodule
            summary["fit_split_s"] = {  # where fit's time went (this rank's, all sessions)
                "collect": round(data.collector.collect_time_s, 4),
                "sample": round(data.dataset.sample_time_s, 4),
                "learn": round(run.module.learn_time_s, 4),
            }
        if process_rank() == 0:
            write_summary(self.run_dir, summary)
        finish_wandb()
        if run is not None:
            run.env.close()
        if summary.get("requeue") and process_rank() == 0:
            slurm_requeue()  # after summary.json: SLURM ends this job right away

    def _relative(self, path: Path | None) -> str | None:
        """``path`` relative to the run dir (as summary.json names files), if it is inside it."""
        if path is None:
            return None
        try:
            return str(Path(path).relative_to(self.run_dir))
        except ValueError:
            return str(path)
